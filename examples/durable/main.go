// Command durable shows task records that outlive the process: it keeps
// them in a SQLite file (pure Go, no cgo, no server) through sqlstore. Each
// run first lists the tasks earlier runs left in the file, then submits a
// few tasks of its own and waits for them. Run it twice:
//
//	go run . && go run .
//	go run . -db /tmp/tasks.db -reset   # start from an empty file
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
	path := flag.String("db", filepath.Join(os.TempDir(), "apcore-durable.db"), "the SQLite file that keeps the tasks")
	reset := flag.Bool("reset", false, "delete the file first")
	flag.Parse()
	if *reset {
		_ = os.Remove(*path)
	}
	if err := run(context.Background(), os.Stdout, *path); err != nil {
		fmt.Fprintln(os.Stderr, "durable:", err)
		os.Exit(1)
	}
}

// run is one run of the program against the database at path.
func run(ctx context.Context, out io.Writer, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
	if err != nil {
		return err
	}

	// Tasks a crashed earlier run left pending or running would stay so for
	// good: this program is the file's only user, so it fails them all.
	if err := failAbandoned(ctx, out, store); err != nil {
		return err
	}
	earlier, err := store.List(ctx, "")
	if err != nil {
		return err
	}
	if len(earlier) == 0 {
		fmt.Fprintf(out, "%s holds no tasks yet: this is the first run.\n", path)
	} else {
		fmt.Fprintf(out, "%d tasks from earlier runs in %s:\n", len(earlier), path)
		printTasks(out, earlier)
	}

	reg := apcore.NewRegistry()
	if err := reg.Register("report.build", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return map[string]any{"report": in["name"], "pages": len(in["name"].(string))}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
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
	fmt.Fprintf(out, "\nthis run's tasks, now kept in %s too:\n", path)
	printTasks(out, mine)
	return nil
}

// failAbandoned marks failed the tasks an earlier run left active.
func failAbandoned(ctx context.Context, out io.Writer, store apcore.TaskStore) error {
	mgr, err := apcore.NewTaskManager(apcore.NewRegistry(), apcore.WithStore(store))
	if err != nil {
		return err
	}
	defer mgr.Shutdown(ctx)
	n, err := mgr.FailStale(ctx, 0)
	if n > 0 {
		fmt.Fprintf(out, "%d tasks of a run that stopped early were left active; they are now failed.\n", n)
	}
	return err
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
