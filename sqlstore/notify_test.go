package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// listener returns the backend pid of the connection that LISTENs on the
// table's channel, once there is one other than not.
func listener(t *testing.T, db *sql.DB, table string, not int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		err := db.QueryRowContext(ctx(t), "SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> $2",
			"LISTEN "+table+"_new", not).Scan(&pid)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "no connection listens")
	return pid
}

// expectWakes waits for n wake-ups, then checks that no other has come.
func expectWakes(t *testing.T, wakes <-chan struct{}, n int, what string) {
	t.Helper()
	for i := range n {
		select {
		case <-wakes:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: wake-up %d of %d did not come", what, i+1, n)
		}
	}
	require.Empty(t, wakes, "%s: more wake-ups than %d", what, n)
}

// Notify on PostgreSQL: a wake-up for each committed transaction that
// InsertTx saved tasks in (one for the transaction, however many tasks),
// none for an open or rolled-back one; the LISTEN connection is made again
// when the server ends it (with a wake-up for what may have been missed);
// the goroutine ends with ctx.
func TestNotifyWakesOnCommit(t *testing.T) {
	db := postgres(t)
	table := freshTable(t, db)
	s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(table))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	ignore := goleak.IgnoreCurrent()

	wakes := make(chan struct{}, 64)
	nctx, stop := context.WithCancel(ctx(t))
	s.Notify(nctx, func() { wakes <- struct{}{} })
	pid := listener(t, db, table, 0)

	seq := 0
	insert := func(tx *sql.Tx) {
		seq++
		ok, err := s.InsertTx(ctx(t), tx, pendingTask(fmt.Sprintf("notify-%d", seq)), 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	begin := func() *sql.Tx {
		tx, err := db.BeginTx(ctx(t), nil)
		require.NoError(t, err)
		return tx
	}

	// A rollback sends nothing: the commit after it is the one wake-up
	// (notifications come in commit order).
	tx := begin()
	insert(tx)
	require.NoError(t, tx.Rollback())
	tx = begin()
	insert(tx)
	insert(tx)
	require.NoError(t, tx.Commit())
	expectWakes(t, wakes, 1, "rollback, then a commit of two tasks")

	// An open transaction sends nothing until it commits.
	open := begin()
	insert(open)
	tx = begin()
	insert(tx)
	require.NoError(t, tx.Commit())
	expectWakes(t, wakes, 1, "one commit beside an open transaction")
	require.NoError(t, open.Commit())
	expectWakes(t, wakes, 1, "the open transaction's commit")

	// The server ends the connection: Notify listens again, and wakes.
	var ended bool
	require.NoError(t, db.QueryRowContext(ctx(t), "SELECT pg_terminate_backend($1)", pid).Scan(&ended))
	require.True(t, ended)
	listener(t, db, table, pid)
	expectWakes(t, wakes, 1, "the reconnect")
	tx = begin()
	insert(tx)
	require.NoError(t, tx.Commit())
	expectWakes(t, wakes, 1, "a commit after the reconnect")

	stop()
	goleak.VerifyNone(t, ignore)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.QueryRowContext(ctx(t), "SELECT count(*) FROM pg_stat_activity WHERE query = $1", "LISTEN "+table+"_new").Scan(&n))
		return n == 0
	}, 10*time.Second, 10*time.Millisecond, "the LISTEN connection stayed open")
}

// On SQLite, Notify starts nothing: managers poll.
func TestNotifySQLiteDoesNothing(t *testing.T) {
	db := openSQLite(t, filepath.Join(t.TempDir(), "notify.db"))
	s, err := sqlstore.New(ctx(t), db, sqlstore.SQLite)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	ignore := goleak.IgnoreCurrent()
	nctx, stop := context.WithCancel(ctx(t))
	defer stop()
	s.Notify(nctx, func() { t.Error("woken on SQLite") })
	goleak.VerifyNone(t, ignore)
}
