package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Managers sharing one redisstore each get a *redis.Client and a Store of
// their own, as separate processes would.
func sharedStores(t *testing.T, n int) []*redisstore.Store {
	t.Helper()
	prefix := freshPrefix(t, client(t))
	out := make([]*redisstore.Store, n)
	for i := range out {
		s, err := redisstore.New(newClient(t), redisstore.WithPrefix(prefix))
		require.NoError(t, err)
		out[i] = s
	}
	return out
}

// A cancel through one manager stops the module on the manager running it
// within the keeper's poll interval (200ms): p99 at most 1s over 200 tasks.
func TestRemoteCancelLatency(t *testing.T) {
	const tasks = 200
	stores := sharedStores(t, 2)
	var mu sync.Mutex
	stopped := map[string]time.Time{}
	started := make(chan string, tasks)
	runner := manager(t, registry(t, map[string]func(context.Context, map[string]any) (any, error){
		"cancel.wait": func(ctx context.Context, _ map[string]any) (any, error) {
			info, _ := apcore.TaskFromContext(ctx)
			id := info.TaskID
			started <- id
			<-ctx.Done()
			mu.Lock()
			stopped[id] = time.Now()
			mu.Unlock()
			return nil, ctx.Err()
		},
	}), stores[0], apcore.WithMaxConcurrent(tasks), apcore.WithMaxTasks(tasks))
	other := manager(t, registry(t, nil), stores[1])
	ids := make([]string, tasks)
	for i := range ids {
		id, err := runner.Submit(ctx(t), "cancel.wait", nil)
		require.NoError(t, err)
		ids[i] = id
	}
	deadline := time.After(30 * time.Second)
	for range tasks {
		select {
		case <-started:
		case <-deadline:
			t.Fatal("the tasks did not all start within 30s")
		}
	}
	cancelled := map[string]time.Time{}
	for _, id := range ids {
		cancelled[id] = time.Now()
		ok, err := other.Cancel(ctx(t), id)
		require.NoError(t, err)
		require.True(t, ok, "cancel through the other manager refused")
	}
	require.True(t, eventually(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stopped) == tasks
	}), "not every module saw its cancel within 10s")
	var lat []time.Duration
	mu.Lock()
	for id, at := range stopped {
		lat = append(lat, at.Sub(cancelled[id]))
	}
	mu.Unlock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("remote cancel latency over %d tasks: p50 %v, p99 %v, max %v", tasks, p50, p99, lat[len(lat)-1])
	assert.LessOrEqual(t, p99, time.Second, "p99 of the remote cancel latency")
	for _, id := range ids {
		info, err := runner.Wait(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCancelled, info.Status)
	}
}

// Four managers racing submits with WithMaxTasks(10) never have more than
// 10 active tasks between them, and fill exactly 10 places each round.
func TestAdmissionAcrossManagers(t *testing.T) {
	const managers, limit, rounds, each = 4, 10, 25, 5
	stores := sharedStores(t, managers)
	gates := make([]*gate, rounds)
	for i := range gates {
		gates[i] = newGate()
	}
	reg := registry(t, map[string]func(context.Context, map[string]any) (any, error){
		"admit.hold": func(ctx context.Context, in map[string]any) (any, error) {
			<-gates[int(in["round"].(int))].ch
			return nil, nil
		},
	})
	ms := make([]*apcore.TaskManager, managers)
	for i := range ms {
		ms[i] = manager(t, reg, stores[i], apcore.WithMaxTasks(limit), apcore.WithMaxConcurrent(limit))
	}
	defer func() {
		for _, g := range gates {
			g.open()
		}
	}()
	for r := range rounds {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var accepted []string
		var maxActive atomic.Int64
		for _, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					id, err := m.Submit(ctx(t), "admit.hold", map[string]any{"round": r})
					if err != nil {
						assert.ErrorIs(t, err, apcore.ErrTaskLimitExceeded)
						continue
					}
					mu.Lock()
					accepted = append(accepted, id)
					mu.Unlock()
					if n, err := stores[0].Count(ctx(t), apcore.StatusPending, apcore.StatusRunning); err == nil && int64(n) > maxActive.Load() {
						maxActive.Store(int64(n))
					}
				}
			}()
		}
		wg.Wait()
		n, err := stores[0].Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
		require.NoError(t, err)
		require.Equal(t, limit, len(accepted), "round %d: accepted submits", r)
		require.Equal(t, limit, n, "round %d: active records", r)
		require.LessOrEqual(t, maxActive.Load(), int64(limit), "round %d: active records seen while submitting", r)
		gates[r].open()
		for _, id := range accepted {
			info, err := ms[0].Wait(ctx(t), id)
			require.NoError(t, err)
			require.Equal(t, apcore.StatusCompleted, info.Status)
		}
	}
}

// Resumable tasks submitted through one manager run on the others.
func TestResumableTasksRunOnOtherManagers(t *testing.T) {
	const tasks = 20
	stores := sharedStores(t, 3)
	hold := newGate()
	defer hold.open()
	ms := make([]*apcore.TaskManager, 3)
	for i := range ms {
		name := fmt.Sprint("m", i)
		ms[i] = manager(t, registry(t, map[string]func(context.Context, map[string]any) (any, error){
			"res.where": func(ctx context.Context, in map[string]any) (any, error) {
				if name == "m0" {
					<-hold.ch // the submitter holds on to the one task it takes
				}
				return map[string]any{"ran_on": name, "n": in["n"]}, nil
			},
		}), stores[i], apcore.WithLeaseTTL(time.Second), apcore.WithMaxConcurrent(1))
	}
	ids := make([]string, tasks)
	for i := range ids {
		id, err := ms[0].Submit(ctx(t), "res.where", map[string]any{"n": i}, apcore.WithResumable())
		require.NoError(t, err)
		ids[i] = id
	}
	require.True(t, eventually(20*time.Second, func() bool {
		done, err := stores[1].Count(ctx(t), apcore.StatusCompleted)
		return err == nil && done >= tasks-1
	}), "the other managers did not run the resumable tasks within 20s")
	ranOn := map[string]int{}
	for i, id := range ids {
		info, err := ms[1+i%2].Status(ctx(t), id)
		require.NoError(t, err)
		if info.Status != apcore.StatusCompleted {
			continue // the task the submitter holds
		}
		res := info.Result.(map[string]any)
		assert.Equal(t, float64(i), res["n"], "the inputs reached the module")
		ranOn[res["ran_on"].(string)]++
	}
	t.Logf("resumable tasks ran on: %v", ranOn)
	assert.GreaterOrEqual(t, ranOn["m1"]+ranOn["m2"], tasks-1, "tasks run by the other managers")
	hold.open()
	for _, id := range ids {
		info, err := ms[0].Wait(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCompleted, info.Status)
	}
}

// The records of an owner whose lease ends and is never renewed (a process
// that died) are recovered by a live manager within about two TTLs:
// resumable ones run there, the others end failed TASK_ABANDONED.
func TestDeadOwnersTasksAreRecovered(t *testing.T) {
	const ttl = time.Second
	stores := sharedStores(t, 2)
	dead := stores[0]
	now := time.Now()
	_, err := dead.Renew(ctx(t), apcore.LeaseRequest{Owner: "dead-owner", Expires: now.Add(ttl), Create: true})
	require.NoError(t, err)
	var resumable, plain []string
	for i := range 3 {
		id := fmt.Sprint("dead-res-", i)
		ok, err := dead.Insert(ctx(t), apcore.StoredTask{
			Info:      apcore.TaskInfo{TaskID: id, ModuleID: "dead.job", Status: apcore.StatusPending, SubmittedAt: now},
			Resumable: true, Inputs: []byte(`{"i":1}`), NotBefore: now,
		}, 100)
		require.NoError(t, err)
		require.True(t, ok)
		resumable = append(resumable, id)
		id = fmt.Sprint("dead-plain-", i)
		ok, err = dead.Insert(ctx(t), apcore.StoredTask{
			Info:  apcore.TaskInfo{TaskID: id, ModuleID: "dead.job", Status: apcore.StatusRunning, SubmittedAt: now, StartedAt: now},
			Owner: "dead-owner",
		}, 100)
		require.NoError(t, err)
		require.True(t, ok)
		plain = append(plain, id)
	}
	claimed, err := dead.Claim(ctx(t), apcore.ClaimRequest{Owner: "dead-owner", Limit: 10, Now: now})
	require.NoError(t, err)
	require.Len(t, claimed, 3, "the dead owner claims the resumable tasks before it dies")

	live := manager(t, registry(t, map[string]func(context.Context, map[string]any) (any, error){
		"dead.job": func(context.Context, map[string]any) (any, error) { return "recovered", nil },
	}), stores[1], apcore.WithLeaseTTL(ttl))
	lapsed := now.Add(ttl)
	for _, id := range resumable {
		info, err := live.Wait(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCompleted, info.Status, id)
		assert.Equal(t, "recovered", info.Result, id)
	}
	for _, id := range plain {
		info, err := live.Wait(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusFailed, info.Status, id)
		assert.Equal(t, apcore.CodeTaskAbandoned, info.ErrorCode, id)
	}
	took := time.Since(lapsed)
	t.Logf("the dead owner's tasks ended %v after its lease did", took)
	assert.LessOrEqual(t, took, 2*ttl+500*time.Millisecond, "recovery within about two TTLs")
}
