// Command transactional shows a task submitted in the application's own
// database transaction (apcore.WithTx): an order row and the task that
// confirms it are written in one SQLite transaction, so either both exist
// or neither does. Run it:
//
//	go run .
//	go run . -db /tmp/shop.db    # keep the file (by default a new one in a temporary folder)
//
// It places two orders. The first commits: the task exists from the commit
// on, the manager runs it, and it marks the order confirmed. The second is
// rolled back after its task was submitted (say the payment was declined):
// neither the order row nor the task is left, and the count of active
// tasks is as it was.
//
// The task is resumable (its inputs are kept as JSON) and held by no
// manager: any manager over the same table claims it after the commit, at
// its next poll (every 200 ms) on SQLite, at once on PostgreSQL, where the
// commit's NOTIFY wakes them. The transaction must be begun on the *sql.DB
// given to sqlstore.New.
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
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	_ "modernc.org/sqlite"
)

func main() {
	path := flag.String("db", "", "the SQLite file (default: a new one in a temporary folder, removed at the end)")
	flag.Parse()
	if *path == "" {
		dir, err := os.MkdirTemp("", "apcore-transactional-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "transactional:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		*path = filepath.Join(dir, "shop.db")
	}
	if err := run(context.Background(), os.Stdout, *path); err != nil {
		fmt.Fprintln(os.Stderr, "transactional:", err)
		os.Exit(1)
	}
}

// confirmIn is order.confirm's input.
type confirmIn struct {
	OrderID int64 `json:"order_id"`
}

// errDeclined is the second order's (pretend) payment failure.
var errDeclined = errors.New("payment declined")

func run(ctx context.Context, out io.Writer, path string) error {
	// _txlock=immediate: a transaction takes SQLite's write lock when it
	// begins, so that its first write never fails SQLITE_BUSY when
	// another connection wrote since it began reading.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (
	id INTEGER PRIMARY KEY, item TEXT NOT NULL, status TEXT NOT NULL)`); err != nil {
		return err
	}
	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
	if err != nil {
		return err
	}
	defer store.Close()

	reg := apcore.NewRegistry()
	if err := reg.Register("order.confirm", apcore.Typed(func(ctx context.Context, in confirmIn) (string, error) {
		res, err := db.ExecContext(ctx, "UPDATE orders SET status = 'confirmed' WHERE id = ?", in.OrderID)
		if err != nil {
			return "", err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return "", apcore.Permanent(fmt.Errorf("order %d not found", in.OrderID))
		}
		return fmt.Sprintf("order %d confirmed", in.OrderID), nil
	})); err != nil {
		return err
	}
	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
	if err != nil {
		return err
	}
	defer mgr.Shutdown(ctx)

	// 1. Committed: the order and its task.
	order, task, err := placeOrder(ctx, db, mgr, "book", nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "order %d (book) and task %s committed together\n", order, task[:8])
	info, err := mgr.Wait(ctx, task)
	if err != nil {
		return err
	}
	var status string
	if err := db.QueryRowContext(ctx, "SELECT status FROM orders WHERE id = ?", order).Scan(&status); err != nil {
		return err
	}
	fmt.Fprintf(out, "  task %s: %s (%v), ran %v after it was submitted; order %d is %s\n",
		task[:8], info.Status, info.Result, info.StartedAt.Sub(info.SubmittedAt).Round(time.Millisecond), order, status)

	// 2. Rolled back after the Submit: neither is left.
	order, task, err = placeOrder(ctx, db, mgr, "lamp", errDeclined)
	if !errors.Is(err, errDeclined) {
		return fmt.Errorf("the second order: %v", err)
	}
	fmt.Fprintf(out, "order %d (lamp) and task %s rolled back: %v\n", order, task[:8], err)
	var rows int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM orders WHERE id = ?", order).Scan(&rows); err != nil {
		return err
	}
	_, err = store.Get(ctx, task)
	switch {
	case errors.Is(err, apcore.ErrTaskNotFound):
	case err != nil:
		return err
	default:
		return fmt.Errorf("task %s exists after the rollback", task)
	}
	active, err := store.Count(ctx, apcore.StatusPending, apcore.StatusRunning)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  order rows with id %d: %d; task %s: not found; active tasks: %d\n", order, rows, task[:8], active)
	return nil
}

// placeOrder writes an order row and submits its confirmation task in one
// transaction, then commits it, or rolls it back when fail is set (a step
// after the Submit that fails). It returns the order's and the task's ids.
func placeOrder(ctx context.Context, db *sql.DB, mgr *apcore.TaskManager, item string, fail error) (int64, string, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, "", err
	}
	defer tx.Rollback() // after a Commit, does nothing
	res, err := tx.ExecContext(ctx, "INSERT INTO orders (item, status) VALUES (?, 'new')", item)
	if err != nil {
		return 0, "", err
	}
	order, err := res.LastInsertId()
	if err != nil {
		return 0, "", err
	}
	task, err := mgr.Submit(ctx, "order.confirm", map[string]any{"order_id": order}, apcore.WithTx(tx))
	if err != nil {
		return order, "", err
	}
	if fail != nil {
		return order, task, fail // the deferred Rollback undoes the row and the task
	}
	return order, task, tx.Commit()
}
