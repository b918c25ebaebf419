package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/spf13/cobra"
)

// maxCursor is the longest --after accepted: what the manager's ListPage
// accepts (no store makes a longer cursor).
const maxCursor = 256

// newMigrate is "apcore migrate".
func newMigrate(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the store's schema",
		Long: `migrate brings the store's schema up to date: on SQLite and PostgreSQL it
creates the table (--table), its indexes, triggers and the tables beside it,
or upgrades those an older version made, under a migration lock, so it is
safe while replicas run. It creates a missing SQLite file. A Redis store has
no schema (its keys are made as records are written), so there is nothing to
migrate: it checks the layout version that redisstore records (refusing a
store of a newer one), and records it in a store that has none.`,
		Args: noArgs,
		RunE: action(g, true, func(ctx context.Context, cmd *cobra.Command, o *opened, _ []string) error {
			out := cmd.OutOrStdout()
			if o.ref.kind == kindRedis {
				// redisstore.New (in open) has checked the layout version
				// and recorded it when the store had none. Moving a store
				// to layout 2 is redisstore.Migrate's, which a program
				// runs once every manager is on a release that knows it.
				layout := o.store.(*redisstore.Store).Layout()
				if g.json {
					return writeJSON(out, map[string]any{"store": o.ref.shown, "prefix": prefixName(o.ref), "migrated": false,
						"layout_version": layout})
				}
				_, err := fmt.Fprintf(out, "%s: nothing to migrate (layout version %d)\n", o.describe(), layout)
				return err
			}
			if err := migrateSQL(ctx, o.db, o.dialect, o.sqlOptions()...); err != nil {
				return err
			}
			if g.json {
				return writeJSON(out, map[string]any{"store": o.ref.shown, "table": tableName(o.ref), "migrated": true})
			}
			_, err := fmt.Fprintf(out, "%s: schema up to date\n", o.describe())
			return err
		}),
	}
}

// migrateSQL brings a SQL store's schema up to date.
func migrateSQL(ctx context.Context, db *sql.DB, d sqlstore.Dialect, opts ...sqlstore.Option) error {
	return sqlstore.Migrate(ctx, db, d, opts...)
}

// tableName is the SQL table a ref names.
func tableName(ref storeRef) string {
	if ref.table == "" {
		return defaultTable
	}
	return ref.table
}

// prefixName is the Redis key prefix a ref names.
func prefixName(ref storeRef) string {
	if ref.prefix == "" {
		return defaultPrefix
	}
	return ref.prefix
}

// newTasks is "apcore tasks" and its subcommands.
func newTasks(g *globals) *cobra.Command {
	tasks := &cobra.Command{
		Use:   "tasks",
		Short: "List, show and cancel tasks",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("name a subcommand: tasks list, tasks show ID, tasks cancel ID")
		},
	}
	tasks.AddCommand(newList(g), newShow(g), newCancel(g))
	return tasks
}

// newList is "apcore tasks list".
func newList(g *globals) *cobra.Command {
	var (
		status, module, after string
		limit, scan           int
		newest                bool
		st                    apcore.TaskStatus
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks, a page at a time",
		Long: fmt.Sprintf(`list prints one page of tasks, in the order they were submitted (--newest:
newest first), optionally in one state (--status), and the cursor of the next
page: pass it to --after to carry on. Each page is one call to the store's
ListPage, which costs the page, not the records the store keeps, so listing
stays fast at millions of records.

--module keeps the tasks of one module. Stores cannot filter by module, so
list reads pages of up to %d records and keeps the matching ones until it has
--limit of them or has read --scan records (default %d): a rare module may
give a short page, even an empty one, with a cursor to carry on from.`, apcore.MaxPageLimit, defaultScan),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := noArgs(cmd, args); err != nil {
				return err
			}
			var err error
			if st, err = statusFlag(status); err != nil {
				return err
			}
			if err := intRange(cmd.Flags(), "limit", 1, apcore.MaxPageLimit); err != nil {
				return err
			}
			if err := intRange(cmd.Flags(), "scan", 1, maxScan); err != nil {
				return err
			}
			if len(after) > maxCursor {
				return usagef("--after is %d bytes; no store makes a cursor that long", len(after))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only tasks in this state: pending, running, completed, failed, cancelled")
	f.StringVar(&module, "module", "", "only tasks of this module (read from at most --scan records)")
	f.IntVar(&limit, "limit", apcore.DefaultPageLimit, fmt.Sprintf("tasks per page, 1-%d", apcore.MaxPageLimit))
	f.StringVar(&after, "after", "", "carry on after this cursor (the previous page's next)")
	f.BoolVar(&newest, "newest", false, "newest first")
	f.IntVar(&scan, "scan", defaultScan, "with --module: read at most this many records")
	cmd.RunE = action(g, false, func(ctx context.Context, cmd *cobra.Command, o *opened, _ []string) error {
		opts := apcore.ListOptions{Status: st, After: after, Limit: limit, Newest: newest}
		var (
			l   listing
			err error
		)
		if module == "" {
			var page apcore.TaskPage
			page, err = o.ListPage(ctx, opts)
			l = listing{tasks: page.Tasks, next: page.Next, scanned: -1}
		} else {
			l, err = scanModule(ctx, o, opts, module, scan)
		}
		if err != nil {
			return err
		}
		if g.json {
			return writeList(cmd.OutOrStdout(), l)
		}
		return printList(cmd.OutOrStdout(), l, module)
	})
	return cmd
}

// listing is one page that tasks list prints.
type listing struct {
	tasks   []apcore.TaskInfo
	next    string
	scanned int // records read, with --module; else -1
	budget  bool
}

// scanModule reads pages of opts (up to MaxPageLimit records each) from
// opts.After, keeping the records of module, until it has opts.Limit of
// them, or has read scan records, or the store has no more. The cursor it
// returns is the store's own: after the last record kept when the page
// filled mid-way (found with one more ListPage, of the records up to it),
// otherwise after the last page read.
func scanModule(ctx context.Context, s apcore.Pager, opts apcore.ListOptions, module string, scan int) (listing, error) {
	l := listing{tasks: []apcore.TaskInfo{}}
	want, after := opts.Limit, opts.After
	for {
		opts.After, opts.Limit = after, min(apcore.MaxPageLimit, scan-l.scanned)
		page, err := s.ListPage(ctx, opts)
		if err != nil {
			return l, err
		}
		for i := range page.Tasks {
			l.scanned++
			t := page.Tasks[i]
			if t.ModuleID != module {
				continue
			}
			l.tasks = append(l.tasks, t)
			if len(l.tasks) == want {
				if i == len(page.Tasks)-1 {
					l.next = page.Next
					return l, nil
				}
				l.next, err = cursorAfter(ctx, s, opts, i+1, t.TaskID)
				return l, err
			}
		}
		if page.Next == "" || len(page.Tasks) == 0 {
			return l, nil
		}
		after = page.Next
		if l.scanned >= scan {
			l.next, l.budget = after, true
			return l, nil
		}
	}
}

// cursorAfter returns the store's cursor after the record id, which was
// the n-th record of the page opts (from opts.After) names: the Next of
// that page cut to n records. When records before it were removed or
// changed state meanwhile, it cuts the page again where id now is; when id
// itself is gone from the page, the page of n records' Next is as close as
// the store can say.
func cursorAfter(ctx context.Context, s apcore.Pager, opts apcore.ListOptions, n int, id string) (string, error) {
	for try := 0; ; try++ {
		opts.Limit = n
		page, err := s.ListPage(ctx, opts)
		if err != nil {
			return "", err
		}
		if len(page.Tasks) > 0 && page.Tasks[len(page.Tasks)-1].TaskID == id || try == 1 {
			return page.Next, nil
		}
		found := false
		for j := range page.Tasks {
			if page.Tasks[j].TaskID == id {
				n, found = j+1, true
				break
			}
		}
		if !found {
			return page.Next, nil
		}
	}
}

// newShow is "apcore tasks show ID".
func newShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Print one task's record",
		Args:  oneID,
		RunE: action(g, false, func(ctx context.Context, cmd *cobra.Command, o *opened, args []string) error {
			info, err := get(ctx, o, args[0])
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), info)
			}
			return printRecord(cmd.OutOrStdout(), info)
		}),
	}
}

// get reads one record, with a plain message for an unknown id.
func get(ctx context.Context, o *opened, id string) (apcore.TaskInfo, error) {
	info, err := o.Get(ctx, id)
	if errors.Is(err, apcore.ErrTaskNotFound) {
		return info, fmt.Errorf("no task %s in %s", quoteID(id), o.describe())
	}
	return info, err
}

// newCancel is "apcore tasks cancel ID".
func newCancel(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a pending or running task",
		Long: `cancel ends a pending or running task cancelled, wherever it runs: the
record is written cancelled in the store, only while it is still pending or
running (as a TaskManager's Cancel does for a task another manager holds), and
the manager that runs the task sees it within about a second and cancels its
module's context. No other task is touched. A task that has already ended is
left as it is, and said so (exit code 0).`,
		Args: oneID,
		RunE: action(g, false, func(ctx context.Context, cmd *cobra.Command, o *opened, args []string) error {
			info, cancelled, err := cancelTask(ctx, o, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return writeJSON(out, struct {
					Cancelled bool            `json:"cancelled"`
					Task      apcore.TaskInfo `json:"task"`
				}{cancelled, info})
			}
			if !cancelled {
				_, err = fmt.Fprintf(out, "task %s is already %s: nothing to cancel\n", info.TaskID, info.Status)
				return err
			}
			_, err = fmt.Fprintf(out, "task %s cancelled; the manager running it stops its module within about a second\n", info.TaskID)
			return err
		}),
	}
}

// cancelTask writes id's record cancelled if it is pending or running, and
// reports the record as it stands and whether this call cancelled it. This
// is what TaskManager.Cancel does for a task that another manager holds: a
// conditional write of the record (from pending or running), which the
// holder's watcher finds (SharedStore.Lost reports a record that is no
// longer active) and answers by cancelling the module's context. It writes
// nothing else.
func cancelTask(ctx context.Context, o *opened, id string) (apcore.TaskInfo, bool, error) {
	info, err := get(ctx, o, id)
	if err != nil {
		return info, false, err
	}
	if !info.Status.IsActive() {
		return info, false, nil
	}
	c := info
	c.Status, c.CompletedAt = apcore.StatusCancelled, time.UnixMicro(time.Now().UnixMicro()).UTC()
	c.Result, c.Error, c.ErrorCode = nil, "", ""
	ok, err := o.SaveIf(ctx, c, apcore.StatusPending, apcore.StatusRunning)
	if err != nil {
		return info, false, err
	}
	if ok {
		return c, true, nil
	}
	// It ended (or went) between the read and the write.
	now, err := get(ctx, o, id)
	if err != nil {
		return info, false, err
	}
	if now.Status.IsActive() {
		return now, false, fmt.Errorf("the store did not take the cancel of task %s, which is still %s", quoteID(id), now.Status)
	}
	return now, false, nil
}
