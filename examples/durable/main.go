// Command durable shows task records that outlive the process: it keeps
// them in a SQLite file (pure Go, no cgo, no server) through sqlstore, in a
// folder of its own. Run it twice:
//
//	go run . && go run .
//	go run . -dir /tmp/my-tasks    # another folder
//	go run . -reset                # start again from an empty file
//
// The folder is chosen by -dir; by default it is apcore-durable in the
// user's cache folder (os.UserCacheDir, such as ~/.cache/apcore-durable),
// or in the temporary folder when there is none. The records are in
// tasks.db there.
//
// Each run lists every task that earlier runs left in the file (id,
// module, state, time of submission, result or error), then submits three
// tasks of its own, waits for them and lists those: two reports built, one
// refused by a (pretend) mail server. The next run lists them among the
// earlier ones.
//
// A run killed before its tasks ended leaves them pending or running in
// the file. Nothing here has to clean them up (no FailStale): sqlstore is
// an apcore.SharedStore, so the manager holds its tasks under a lease, and
// the next run's manager fails them TASK_ABANDONED once that lease has
// ended (30 s after the kill, the default WithLeaseTTL), or cancels them
// when it shuts down; until then they are listed as they were left.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	_ "modernc.org/sqlite"
)

func main() {
	dir := flag.String("dir", defaultDir(), "the folder of this example's SQLite file (created when missing)")
	reset := flag.Bool("reset", false, "delete the SQLite file first")
	flag.Parse()
	if *reset {
		// Only the files this program makes: -dir may name any folder.
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(dbPath(*dir) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintln(os.Stderr, "durable:", err)
				os.Exit(1)
			}
		}
	}
	if err := run(context.Background(), os.Stdout, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "durable:", err)
		os.Exit(1)
	}
}

// defaultDir is apcore-durable in the user's cache folder, or in the
// temporary folder when the user has none.
func defaultDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "apcore-durable")
}

// dbPath is the SQLite file in the folder dir.
func dbPath(dir string) string { return filepath.Join(dir, "tasks.db") }

// run is one run of the program, with its SQLite file in the folder dir.
// reportIn and reportOut are report.build's input and result: Typed fills
// the one from the inputs map and the store keeps the other as JSON, the
// same on every store.
type reportIn struct {
	Name string `json:"name"`
}

type reportOut struct {
	Report string `json:"report"`
	Pages  int    `json:"pages"`
}

func run(ctx context.Context, out io.Writer, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := dbPath(dir)
	fmt.Fprintf(out, "task records are kept in %s\n", path)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
	if err != nil {
		return err
	}

	earlier, err := store.List(ctx, "")
	if err != nil {
		return err
	}
	if len(earlier) == 0 {
		fmt.Fprintln(out, "\nthe file holds no tasks yet: this is the first run.")
	} else {
		fmt.Fprintf(out, "\n%d tasks from earlier runs, read back from the file:\n", len(earlier))
		printTasks(out, earlier)
	}

	reg := apcore.NewRegistry()
	if err := reg.Register("report.build", apcore.Typed(func(ctx context.Context, in reportIn) (reportOut, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return reportOut{Report: in.Name, Pages: len(in.Name)}, nil
		case <-ctx.Done():
			return reportOut{}, ctx.Err()
		}
	})); err != nil {
		return err
	}
	if err := reg.Register("report.send", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		return nil, apcore.Permanent(errors.New("mail server refused the address"))
	})); err != nil {
		return err
	}
	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
	if err != nil {
		return err
	}
	defer mgr.Shutdown(ctx)

	stamp := time.Now().Format("15:04:05")
	var ids []string
	for _, job := range []struct{ module, name string }{
		{"report.build", "sales-" + stamp}, {"report.build", "stock-" + stamp}, {"report.send", "sales-" + stamp},
	} {
		id, err := mgr.Submit(ctx, job.module, map[string]any{"name": job.name})
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	var mine []apcore.TaskInfo
	for _, id := range ids {
		info, err := mgr.Wait(ctx, id)
		if err != nil {
			return err
		}
		mine = append(mine, info)
	}
	fmt.Fprintln(out, "\nthis run's tasks, now kept in the file too:")
	printTasks(out, mine)
	return nil
}

func printTasks(out io.Writer, tasks []apcore.TaskInfo) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  TASK\tMODULE\tSTATUS\tSUBMITTED\tRESULT / ERROR")
	for _, t := range tasks {
		outcome := fmt.Sprint(t.Result)
		if t.Error != "" {
			outcome = t.Error
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", t.TaskID[:8], t.ModuleID, t.Status, t.SubmittedAt.Local().Format("15:04:05.000"), outcome)
	}
	w.Flush()
}
