package sqlstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Managers sharing one store through pools of their own behave as the
// replicas of one service: storetest's replica check.
func TestReplicasOwnPools(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			require.NoError(t, storetest.TestReplicas(ctx(t), b.open(t)))
		})
	}
}

// A task running on manager A, cancelled through manager B: A's module
// sees its context end. p99 of the latency from the cancel to ctx.Done()
// must stay within a second.
func TestRemoteCancelLatency(t *testing.T) {
	const tasks = 200
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			var mu sync.Mutex
			stopped := map[string]time.Time{}
			started := make(chan string, tasks)
			ended := make(chan struct{}, tasks)
			reg := apcore.NewRegistry()
			require.NoError(t, reg.Register("cancel.wait", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				info, _ := apcore.TaskFromContext(ctx)
				started <- info.TaskID
				<-ctx.Done()
				mu.Lock()
				stopped[info.TaskID] = time.Now()
				mu.Unlock()
				ended <- struct{}{}
				return nil, ctx.Err()
			})))
			a := manager(t, reg, b.open(t), apcore.WithMaxConcurrent(tasks), apcore.WithMaxTasks(tasks))
			bm := manager(t, reg, b.open(t))
			ids := make([]string, tasks)
			for i := range ids {
				var err error
				ids[i], err = a.Submit(ctx(t), "cancel.wait", nil)
				require.NoError(t, err)
			}
			for range tasks {
				<-started
			}
			cancelled := map[string]time.Time{}
			for _, id := range ids {
				// Spread the cancels over A's poll cycle.
				time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
				at := time.Now()
				ok, err := bm.Cancel(ctx(t), id)
				require.NoError(t, err)
				require.True(t, ok)
				cancelled[id] = at
			}
			for _, id := range ids {
				info, err := a.Wait(ctx(t), id)
				require.NoError(t, err)
				assert.Equal(t, apcore.StatusCancelled, info.Status)
			}
			deadline := ctx(t)
			for range tasks { // every module saw its context end
				select {
				case <-ended:
				case <-deadline.Done():
					t.Fatal("a module never saw its context end")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lat := make([]time.Duration, 0, tasks)
			for _, id := range ids {
				end, ok := stopped[id]
				require.True(t, ok, "task %s's module never saw its context end", id)
				lat = append(lat, end.Sub(cancelled[id]))
			}
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			t.Logf("%s remote cancel over %d tasks: p50 %v p99 %v max %v", b.name, tasks, p50, p99, lat[len(lat)-1])
			assert.LessOrEqual(t, p99, time.Second)
		})
	}
}

// Four managers racing submits with WithMaxTasks(10): never more than 10
// active in the store, and exactly 10 admitted each round.
func TestReplicaAdmission(t *testing.T) {
	const managers, limit, each, rounds = 4, 10, 6, 12
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			// Each round's tasks wait for that round's channel.
			releases := make([]chan struct{}, rounds)
			for i := range releases {
				releases[i] = make(chan struct{})
			}
			var closeOnce sync.Once
			releaseAll := func() {
				closeOnce.Do(func() {
					for _, r := range releases {
						select {
						case <-r:
						default:
							close(r)
						}
					}
				})
			}
			reg := apcore.NewRegistry()
			require.NoError(t, reg.Register("admit.hold", apcore.ModuleFunc(func(_ context.Context, in map[string]any) (any, error) {
				<-releases[in["round"].(int)]
				return nil, nil
			})))
			var ms []*apcore.TaskManager
			for range managers {
				ms = append(ms, manager(t, reg, b.open(t), apcore.WithMaxTasks(limit), apcore.WithMaxConcurrent(limit)))
			}
			t.Cleanup(releaseAll) // runs before the managers' Shutdown
			store := b.open(t)
			for round := range rounds {
				var wg sync.WaitGroup
				var mu sync.Mutex
				var admitted []string
				for _, m := range ms {
					for range each {
						wg.Add(1)
						go func() {
							defer wg.Done()
							id, err := m.Submit(ctx(t), "admit.hold", map[string]any{"round": round})
							if err != nil {
								assert.ErrorIs(t, err, apcore.ErrTaskLimitExceeded)
								return
							}
							mu.Lock()
							admitted = append(admitted, id)
							mu.Unlock()
						}()
					}
				}
				wg.Wait()
				active, err := store.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
				require.NoError(t, err)
				// One List: two (pending, then running) could count a task
				// that starts between them twice.
				all, err := store.List(ctx(t), "")
				require.NoError(t, err)
				records := 0
				for _, info := range all {
					if info.Status.IsActive() {
						records++
					}
				}
				require.Equal(t, limit, len(admitted), "round %d: admitted", round)
				require.Equal(t, limit, active, "round %d: active count", round)
				require.Equal(t, limit, records, "round %d: active records", round)
				close(releases[round])
				for _, id := range admitted {
					info, err := ms[0].Wait(ctx(t), id)
					require.NoError(t, err)
					require.Equal(t, apcore.StatusCompleted, info.Status)
				}
			}
		})
	}
}

// Resumable tasks submitted on one manager run on any and complete.
func TestReplicaResumable(t *testing.T) {
	const managers, tasks = 3, 30
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			var mu sync.Mutex
			ranOn := map[int]int{}
			var ms []*apcore.TaskManager
			for i := range managers {
				reg := apcore.NewRegistry()
				require.NoError(t, reg.Register("res.double", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
					mu.Lock()
					ranOn[i]++
					mu.Unlock()
					select {
					case <-time.After(20 * time.Millisecond): // work that takes a while
					case <-ctx.Done():
						return nil, ctx.Err()
					}
					return in["n"].(float64) * 2, nil
				})))
				ms = append(ms, manager(t, reg, b.open(t), apcore.WithLeaseTTL(time.Second), apcore.WithMaxConcurrent(2)))
			}
			ids := make([]string, tasks)
			for i := range ids {
				var err error
				ids[i], err = ms[0].Submit(ctx(t), "res.double", map[string]any{"n": i}, apcore.WithResumable())
				require.NoError(t, err)
			}
			for i, id := range ids {
				info, err := ms[i%managers].Wait(ctx(t), id)
				require.NoError(t, err)
				require.Equal(t, apcore.StatusCompleted, info.Status, "task %d: %s %s", i, info.Error, info.ErrorCode)
				assert.Equal(t, float64(2*i), info.Result)
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s: tasks run per manager: %v", b.name, ranOn)
			assert.GreaterOrEqual(t, len(ranOn), 2, "the resumable tasks ran on one manager only")
		})
	}
}

// A manager that died: its lease, made with a short expiry, is never
// renewed. A live manager recovers its records within about two TTLs: the
// resumable ones run to completion there, the others end TASK_ABANDONED.
func TestLeaseRecovery(t *testing.T) {
	const ttl = time.Second
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dead := b.open(t)
			now := time.Now()
			owner := fmt.Sprintf("dead-%d", now.UnixNano())
			ok, err := dead.Renew(ctx(t), apcore.LeaseRequest{Owner: owner, Expires: now.Add(300 * time.Millisecond), Create: true})
			require.NoError(t, err)
			require.True(t, ok)
			var resumable, plain []string
			for i := range 6 {
				id := fmt.Sprintf("%s-%d", owner, i)
				st := apcore.StoredTask{
					Info:  apcore.TaskInfo{TaskID: id, ModuleID: "rec.echo", Status: apcore.StatusRunning, SubmittedAt: now, StartedAt: now},
					Owner: owner,
				}
				if i%2 == 0 {
					st.Resumable, st.Inputs = true, []byte(fmt.Sprintf(`{"n":%d}`, i))
					resumable = append(resumable, id)
				} else {
					plain = append(plain, id)
				}
				ok, err := dead.Insert(ctx(t), st, 100)
				require.NoError(t, err)
				require.True(t, ok)
			}
			reg := apcore.NewRegistry()
			require.NoError(t, reg.Register("rec.echo", apcore.ModuleFunc(func(_ context.Context, in map[string]any) (any, error) {
				return in["n"], nil
			})))
			start := time.Now()
			live := manager(t, reg, b.open(t), apcore.WithLeaseTTL(ttl))
			for _, id := range append(slices.Clone(resumable), plain...) {
				c, cancel := context.WithTimeout(ctx(t), 3*ttl)
				info, err := live.Wait(c, id)
				cancel()
				require.NoError(t, err, "task %s not recovered within 3 TTLs", id)
				if slices.Contains(resumable, id) {
					assert.Equal(t, apcore.StatusCompleted, info.Status, id)
				} else {
					assert.Equal(t, apcore.StatusFailed, info.Status, id)
					assert.Equal(t, apcore.CodeTaskAbandoned, info.ErrorCode, id)
				}
			}
			t.Logf("%s: recovered and finished in %v (TTL %v)", b.name, time.Since(start), ttl)
			assert.Less(t, time.Since(start), 2*ttl+time.Second)
			// The dead manager's late write is refused (fencing).
			late := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: plain[0], ModuleID: "rec.echo", Status: apcore.StatusCompleted, CompletedAt: time.Now()}, Owner: owner}
			ok, err = dead.Update(ctx(t), late, owner)
			require.NoError(t, err)
			assert.False(t, ok)
		})
	}
}

// Exact admission across pools: 8 stores (each its own pool) race Inserts
// directly against one table.
func TestAdmissionAcrossPools(t *testing.T) {
	const pools, each, limit, rounds = 8, 8, 10, 10
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			var stores []apcore.SharedStore
			for range pools {
				stores = append(stores, b.open(t))
			}
			for round := range rounds {
				var wg sync.WaitGroup
				var accepted atomic.Int64
				for p, s := range stores {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range each {
							id := fmt.Sprintf("adm-%d-%d-%d", round, p, i)
							ok, err := s.Insert(ctx(t), apcore.StoredTask{
								Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: time.Now()}, Owner: "o",
							}, limit)
							assert.NoError(t, err)
							if ok {
								accepted.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				require.Equal(t, int64(limit), accepted.Load(), "round %d", round)
				active, err := stores[0].List(ctx(t), apcore.StatusPending)
				require.NoError(t, err)
				require.Len(t, active, limit, "round %d", round)
				for _, info := range active {
					info.Status, info.CompletedAt = apcore.StatusCompleted, time.Now()
					ok, err := stores[round%pools].Update(ctx(t), apcore.StoredTask{Info: info, Owner: "o"}, "o")
					require.NoError(t, err)
					require.True(t, ok)
				}
			}
		})
	}
}
