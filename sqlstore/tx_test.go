package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// claimCounter is a Store that counts the Claim calls made on it: one per
// poll of its manager's claimer, something a test can wait for.
type claimCounter struct {
	*sqlstore.Store
	claims atomic.Int64
}

func (c *claimCounter) Claim(ctx context.Context, req apcore.ClaimRequest) ([]apcore.StoredTask, error) {
	got, err := c.Store.Claim(ctx, req)
	c.claims.Add(1)
	return got, err
}

// polls waits until c's manager has claimed n more times than from.
func (c *claimCounter) polls(t *testing.T, from int64, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return c.claims.Load() >= from+n }, 30*time.Second, 5*time.Millisecond,
		"the manager did not poll %d times", n)
}

// startedModule registers module id on reg: it reports each task's id on
// the returned channel when it starts, and completes.
func startedModule(t testing.TB, reg *apcore.Registry, id string) <-chan string {
	ran := make(chan string, 1024)
	require.NoError(t, reg.Register(id, apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		info, _ := apcore.TaskFromContext(ctx)
		ran <- info.TaskID
		return "ok", nil
	})))
	return ran
}

// A task submitted WithTx is seen by no manager while the transaction is
// open (two managers with free slots poll several times and run nothing,
// and another pool finds no record), runs once after the commit, and a
// rollback leaves no record and the count as it was: Submits up to the cap
// still fit afterwards.
func TestTxInvisibleUntilCommit(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reg := apcore.NewRegistry()
			ran := startedModule(t, reg, "tx.run")
			block := make(chan struct{})
			require.NoError(t, reg.Register("tx.block", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				select {
				case <-block:
				case <-ctx.Done():
				}
				return nil, nil
			})))
			sa, sb := &claimCounter{Store: b.open(t)}, &claimCounter{Store: b.open(t)}
			a := manager(t, reg, sa, apcore.WithMaxTasks(2), apcore.WithMaxConcurrent(4))
			bm := manager(t, reg, sb, apcore.WithMaxTasks(2), apcore.WithMaxConcurrent(4))
			// both have their lease and poll (SQLite: before the
			// transaction takes the write lock)
			sa.polls(t, 0, 1)
			sb.polls(t, 0, 1)
			db := sqlstore.DBForTest(sa.Store)

			tx, err := db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			id, err := a.Submit(ctx(t), "tx.run", map[string]any{"order": 1}, apcore.WithTx(tx))
			require.NoError(t, err)
			fromA, fromB := sa.claims.Load(), sb.claims.Load()
			sa.polls(t, fromA, 3)
			sb.polls(t, fromB, 3)
			select {
			case got := <-ran:
				t.Fatalf("task %s ran before the commit", got)
			default:
			}
			_, err = sb.Get(ctx(t), id)
			require.ErrorIs(t, err, apcore.ErrTaskNotFound, "another pool sees the record before the commit")
			n, err := sb.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			require.Zero(t, n)

			require.NoError(t, tx.Commit())
			select {
			case got := <-ran:
				require.Equal(t, id, got)
			case <-time.After(30 * time.Second):
				t.Fatal("the committed task did not run")
			}
			info, err := bm.Wait(ctx(t), id)
			require.NoError(t, err)
			require.Equal(t, apcore.StatusCompleted, info.Status)

			// A rollback: no record, no count.
			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			gone, err := a.Submit(ctx(t), "tx.run", nil, apcore.WithTx(tx))
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			_, err = sa.Get(ctx(t), gone)
			require.ErrorIs(t, err, apcore.ErrTaskNotFound)
			n, err = sb.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			require.Zero(t, n)
			// the cap (2) still holds two tasks
			for range 2 {
				_, err := a.Submit(ctx(t), "tx.block", nil)
				require.NoError(t, err)
			}
			_, err = a.Submit(ctx(t), "tx.block", nil)
			require.ErrorIs(t, err, apcore.ErrTaskLimitExceeded)
			close(block)
			sa.polls(t, sa.claims.Load(), 2) // nothing else turns up
			select {
			case got := <-ran:
				t.Fatalf("the rolled-back task %s ran", got)
			default:
			}
		})
	}
}

// A transaction of another *sql.DB (here one open on the very same
// database) is refused with GENERAL_INVALID_INPUT, saving nothing and
// leaving the transaction usable: it still commits its own rows. So is a
// transaction that has ended.
func TestTxOfAnotherDatabase(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reg := apcore.NewRegistry()
			startedModule(t, reg, "tx.run")
			s := b.open(t)
			m := manager(t, reg, s)
			other := b.raw(t)
			scratch := fmt.Sprintf("tx_scratch_%d", time.Now().UnixNano())
			_, err := other.ExecContext(ctx(t), "CREATE TABLE "+scratch+" (v INTEGER)")
			require.NoError(t, err)
			t.Cleanup(func() { _, _ = other.Exec("DROP TABLE " + scratch) })

			tx, err := other.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			_, err = tx.ExecContext(ctx(t), "INSERT INTO "+scratch+" (v) VALUES (1)")
			require.NoError(t, err)
			_, err = m.Submit(ctx(t), "tx.run", nil, apcore.WithTx(tx))
			require.Error(t, err)
			require.Equal(t, apcore.CodeInvalidInput, apcore.CodeOf(err), "%v", err)
			require.ErrorContains(t, err, "sqlstore.New")
			// the transaction goes on and commits its own work
			_, err = tx.ExecContext(ctx(t), "INSERT INTO "+scratch+" (v) VALUES (2)")
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			var rows int
			require.NoError(t, other.QueryRowContext(ctx(t), "SELECT count(*) FROM "+scratch).Scan(&rows))
			require.Equal(t, 2, rows)
			n, err := s.Count(ctx(t))
			require.NoError(t, err)
			require.Zero(t, n, "the refused task was saved")

			// an ended transaction of the right database
			tx, err = sqlstore.DBForTest(s).BeginTx(ctx(t), nil)
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			_, err = m.Submit(ctx(t), "tx.run", nil, apcore.WithTx(tx))
			require.Equal(t, apcore.CodeInvalidInput, apcore.CodeOf(err), "%v", err)
			_, err = s.InsertTx(ctx(t), nil, pendingTask("nil-tx"), 10)
			require.Equal(t, apcore.CodeInvalidInput, apcore.CodeOf(err), "%v", err)
		})
	}
}

// An insert that fails or is refused inside the transaction leaves it
// usable (on PostgreSQL, where a failed statement aborts a transaction,
// through the savepoint), and a refusal at the limit keeps no count row
// locked: another pool inserts at once.
func TestTxRefusalKeepsTheTransaction(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			db := sqlstore.DBForTest(s)
			tx, err := db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			ok, err := s.InsertTx(ctx(t), tx, pendingTask("first"), 10)
			require.NoError(t, err)
			require.True(t, ok)
			// the same id again fails, and the transaction goes on
			_, err = s.InsertTx(ctx(t), tx, pendingTask("first"), 10)
			require.Error(t, err)
			ok, err = s.InsertTx(ctx(t), tx, pendingTask("second"), 10)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, tx.Commit())
			for _, id := range []string{"first", "second"} {
				_, err := s.Get(ctx(t), id)
				require.NoError(t, err, id)
			}

			// At the limit (2 active): refused, and nothing stays locked.
			other := b.open(t)
			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			defer tx.Rollback()
			ok, err = s.InsertTx(ctx(t), tx, pendingTask("over"), 2)
			require.NoError(t, err)
			require.False(t, ok)
			quick, cancel := context.WithTimeout(ctx(t), 5*time.Second)
			defer cancel()
			if b.dialect == sqlstore.PostgreSQL {
				// SQLite's writer would wait for tx's write lock: tx wrote
				ok, err = other.Insert(quick, pendingTask("beside"), 3)
				require.NoError(t, err, "an insert of another pool waited for the refused one's transaction")
				require.True(t, ok)
			}
			_, err = tx.ExecContext(ctx(t), "SELECT 1")
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			_, err = s.Get(ctx(t), "over")
			require.ErrorIs(t, err, apcore.ErrTaskNotFound)
		})
	}
}

// WithTx combines with the other submit options: the task waits for its
// RunAt, is retried by its policy, and its timeout ends an attempt.
func TestTxWithOtherOptions(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reg := apcore.NewRegistry()
			var mu sync.Mutex
			starts := map[string][]time.Time{}
			require.NoError(t, reg.Register("tx.flaky", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				info, _ := apcore.TaskFromContext(ctx)
				mu.Lock()
				starts[info.TaskID] = append(starts[info.TaskID], time.Now())
				n := len(starts[info.TaskID])
				mu.Unlock()
				if n == 1 {
					return nil, errors.New("first attempt fails")
				}
				return "ok", nil
			})))
			require.NoError(t, reg.Register("tx.slow", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			})))
			s := b.open(t)
			m := manager(t, reg, s)
			tx, err := sqlstore.DBForTest(s).BeginTx(ctx(t), nil)
			require.NoError(t, err)
			runAt := time.Now().Add(time.Second)
			flaky, err := m.Submit(ctx(t), "tx.flaky", map[string]any{"n": 1}, apcore.WithTx(tx), apcore.WithRunAt(runAt),
				apcore.WithRetry(apcore.RetryConfig{MaxRetries: 1, RetryDelay: 10 * time.Millisecond}),
				apcore.WithTimeout(10*time.Second), apcore.WithPriority(5))
			require.NoError(t, err)
			slow, err := m.Submit(ctx(t), "tx.slow", nil, apcore.WithTx(tx), apcore.WithTimeout(100*time.Millisecond))
			require.NoError(t, err)
			require.NoError(t, tx.Commit())

			info, err := m.Wait(ctx(t), flaky)
			require.NoError(t, err)
			require.Equal(t, apcore.StatusCompleted, info.Status, "%+v", info)
			require.Equal(t, 1, info.RetryCount)
			mu.Lock()
			first := starts[flaky][0]
			require.Len(t, starts[flaky], 2)
			mu.Unlock()
			require.False(t, first.Before(runAt.Truncate(time.Microsecond)), "started %v before its RunAt %v", first, runAt)

			info, err = m.Wait(ctx(t), slow)
			require.NoError(t, err)
			require.Equal(t, apcore.StatusFailed, info.Status)
			require.Equal(t, apcore.CodeModuleTimeout, info.ErrorCode, "%+v", info)
		})
	}
}
