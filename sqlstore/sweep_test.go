package sqlstore_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A terminal record with neither CompletedAt nor SubmittedAt goes by the
// zero time, as the manager's Cleanup without the Sweeper reads it: before
// any later time, and not before the zero time itself.
func TestSweepRecordWithoutTimes(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: "timeless", ModuleID: "a.b", Status: apcore.StatusFailed}))
			n, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Time{}, Limit: 10})
			require.NoError(t, err)
			assert.Equal(t, 0, n, "the zero time is not before itself")
			n, err = s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Unix(0, 0), Limit: 10})
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			_, err = s.Get(ctx(t), "timeless")
			require.ErrorIs(t, err, apcore.ErrTaskNotFound)
		})
	}
}

// Batch sweeps racing inserts under a limit, and the ends of those tasks
// (which make them sweepable at once), leave the count of active records
// exact: afterwards the count equals the active records there are, and the
// limit admits exactly as many new records as it has room for. Each
// deletion is counted once.
func TestSweepRacingInsertsKeepsTheCount(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			old := time.Now().Add(-time.Hour)
			const seeded, limit, held = 1500, 6, 3
			for i := range seeded {
				st := apcore.StatusCompleted
				if i%10 == 0 {
					st = apcore.StatusFailed
				}
				require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: fmt.Sprintf("old-%d", i), ModuleID: "a.b", Status: st, SubmittedAt: old, CompletedAt: old}))
			}
			// Active records that stay through the race: the room left is
			// limit - held, for four inserters.
			for i := range held {
				ok, err := s.Insert(ctx(t), pendingTask(fmt.Sprintf("held-%d", i)), limit)
				require.NoError(t, err)
				require.True(t, ok)
			}
			var (
				wg             sync.WaitGroup
				ended, refused atomic.Int64
				swept          atomic.Int64
				inserting      atomic.Int32
				errMu          sync.Mutex
				firstErr       error
				setErr         = func(err error) {
					errMu.Lock()
					defer errMu.Unlock()
					if firstErr == nil {
						firstErr = err
					}
				}
			)
			for w := range 4 {
				inserting.Add(1)
				wg.Go(func() {
					defer inserting.Add(-1)
					for i := range 150 {
						id := fmt.Sprintf("new-%d-%d", w, i)
						ok, err := s.Insert(ctx(t), pendingTask(id), limit)
						if err != nil {
							setErr(err)
							return
						}
						if !ok {
							refused.Add(1)
							continue
						}
						end := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusCompleted,
							SubmittedAt: old, CompletedAt: old}, Owner: "o"}
						if ok, err := s.Update(ctx(t), end, "o"); err != nil || !ok {
							setErr(fmt.Errorf("Update(%s) = %v, %v", id, ok, err))
							return
						}
						ended.Add(1)
					}
				})
			}
			for range 2 {
				wg.Go(func() {
					for {
						running := inserting.Load() > 0 // read before the sweep: the last sweep follows every end
						n, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Now(), Limit: 50})
						if err != nil {
							setErr(err)
							return
						}
						swept.Add(int64(n))
						if n == 0 && !running {
							return
						}
					}
				})
			}
			wg.Wait()
			require.NoError(t, firstErr)
			t.Logf("%d ended, %d refused at the limit, %d swept", ended.Load(), refused.Load(), swept.Load())
			assert.Equal(t, seeded+ended.Load(), swept.Load(), "every terminal record swept, each counted once")
			all, err := s.List(ctx(t), "")
			require.NoError(t, err)
			require.Len(t, all, held, "only the held records are left")
			n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			require.Equal(t, held, n, "the count of active records")
			for i := range limit - held {
				ok, err := s.Insert(ctx(t), pendingTask(fmt.Sprintf("after-%d", i)), limit)
				require.NoError(t, err)
				require.True(t, ok, "room for %d more under the limit", limit-held)
			}
			ok, err := s.Insert(ctx(t), pendingTask("one-too-many"), limit)
			require.NoError(t, err)
			assert.False(t, ok, "the limit is full")
		})
	}
}
