package apcore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Managers sharing one MemoryStore behave as replicas sharing a database:
// these tests check the replica behaviour in the core; the stores' own
// tests repeat them over real servers and real processes.

// blocker is a module that reports each start and then waits for its
// context or for release.
type blocker struct {
	started  chan string
	release  chan struct{}
	stopped  chan string // receives the task id when the context ends first
	calls    atomic.Int32
	runsByID sync.Map // task id -> *atomic.Int32
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 1024), release: make(chan struct{}), stopped: make(chan string, 1024)}
}

func (b *blocker) Execute(ctx context.Context, in map[string]any) (any, error) {
	b.calls.Add(1)
	info, _ := TaskFromContext(ctx)
	n, _ := b.runsByID.LoadOrStore(info.TaskID, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	b.started <- info.TaskID
	select {
	case <-b.release:
		return map[string]any{"ran": info.TaskID}, nil
	case <-ctx.Done():
		b.stopped <- info.TaskID
		return nil, ctx.Err()
	}
}

func (b *blocker) runs(id string) int32 {
	n, ok := b.runsByID.Load(id)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

func recv[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
	var zero T
	return zero
}

func TestRemoteCancelStopsTheModule(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	a := newManager(t, reg, WithStore(store))
	b := newManager(t, reg, WithStore(store))

	var worst time.Duration
	for range 20 {
		id, err := a.Submit(ctx, "block", nil)
		require.NoError(t, err)
		recv(t, mod.started, 5*time.Second, "the module to start")
		waited := make(chan TaskInfo, 1)
		go func() {
			info, err := b.Wait(ctx, id)
			assert.NoError(t, err)
			waited <- info
		}()
		began := time.Now()
		ok, err := b.Cancel(ctx, id)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, id, recv(t, mod.stopped, 2*time.Second, "the module on the owning manager to see ctx.Done()"))
		worst = max(worst, time.Since(began))
		info, err := a.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCancelled, info.Status, "the owner's Wait returns the cancelled record")
		assert.Equal(t, StatusCancelled, recv(t, waited, 2*time.Second, "Wait on the other manager").Status)
	}
	assert.Less(t, worst, time.Second, "remote cancel reaches the module within one second")
	t.Logf("slowest remote cancel of 20: %v", worst)
}

func TestAdmissionIsExactAcrossManagers(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	reg := registry(t, map[string]Module{"block": newBlocker()})
	var ms []*TaskManager
	for range 4 {
		ms = append(ms, newManager(t, reg, WithStore(store), WithMaxTasks(10), WithMaxConcurrent(0)))
	}
	for round := range 20 {
		var accepted atomic.Int32
		var wg sync.WaitGroup
		for _, m := range ms {
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := m.Submit(ctx, "block", nil)
					if err == nil {
						accepted.Add(1)
					} else {
						assert.ErrorIs(t, err, ErrTaskLimitExceeded)
					}
				}()
			}
		}
		wg.Wait()
		active, err := store.Count(ctx, StatusPending, StatusRunning)
		require.NoError(t, err)
		require.Equal(t, 10, active, "round %d: active records in the store", round)
		require.Equal(t, int32(10), accepted.Load(), "round %d: accepted submits", round)
		for _, m := range ms {
			for _, info := range mustList(t, m, StatusPending) {
				_, err := m.Cancel(ctx, info.TaskID)
				require.NoError(t, err)
			}
		}
	}
}

func mustList(t *testing.T, m *TaskManager, status TaskStatus) []TaskInfo {
	t.Helper()
	out, err := m.List(context.Background(), status)
	require.NoError(t, err)
	return out
}

func TestResumableTaskRunsOnAnyManager(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	var ranOn sync.Map
	mk := func(name string, slots int) *TaskManager {
		reg := registry(t, map[string]Module{"echo": ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
			info, _ := TaskFromContext(ctx)
			ranOn.Store(info.TaskID, name)
			return in, nil
		})})
		return newManager(t, reg, WithStore(store), WithMaxConcurrent(slots))
	}
	a := mk("a", 0) // a accepts tasks but has no slot to run them
	mk("b", 4)
	id, err := a.Submit(ctx, "echo", map[string]any{"n": 7, "s": "x"}, WithResumable())
	require.NoError(t, err)
	info, err := a.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, map[string]any{"n": 7.0, "s": "x"}, info.Result, "a resumable task's inputs are the JSON-decoded form")
	on, _ := ranOn.Load(id)
	assert.Equal(t, "b", on)

	_, err = a.Submit(ctx, "echo", map[string]any{"bad": func() {}}, WithResumable())
	require.ErrorIs(t, err, ErrInvalidInput, "inputs that do not encode are refused")
	n, err := store.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "a refused resumable Submit saves nothing")
}

// A resumable task submitted to a manager with a free slot is held by it
// from the insert and runs there, with no claim: another manager never
// takes it, and its module sees the inputs as any replica would, decoded
// from JSON.
func TestResumableTaskRunsWhereItWasSubmittedWhenThereIsRoom(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	mod := newBlocker()
	a := newManager(t, registry(t, map[string]Module{"block": mod}), WithStore(store), WithMaxConcurrent(4))
	other := newBlocker()
	newManager(t, registry(t, map[string]Module{"block": other}), WithStore(store), WithMaxConcurrent(4))
	var ids []string
	for range 4 {
		id, err := a.Submit(ctx, "block", map[string]any{"n": 7}, WithResumable())
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for range 4 {
		recv(t, mod.started, 5*time.Second, "a start on the submitting manager")
	}
	for _, id := range ids {
		info, err := store.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusRunning, info.Status)
	}
	close(mod.release)
	for _, id := range ids {
		info, err := a.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
		assert.Equal(t, int32(1), mod.runs(id))
	}
	assert.Zero(t, other.calls.Load(), "the other manager claimed none of them")
}

func TestResumableRetryMovesBetweenManagers(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	var attempts sync.Map // attempt number -> manager name
	mk := func(name string) *TaskManager {
		reg := registry(t, map[string]Module{"flaky": ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
			info, _ := TaskFromContext(ctx)
			attempts.Store(info.RetryCount, name)
			if info.RetryCount < 2 {
				return nil, errors.New("not yet")
			}
			return "done", nil
		})})
		return newManager(t, reg, WithStore(store))
	}
	a, b := mk("a"), mk("b")
	id, err := a.Submit(ctx, "flaky", nil, WithResumable(), WithRetry(RetryConfig{MaxRetries: 3, RetryDelay: 20 * time.Millisecond}))
	require.NoError(t, err)
	info, err := b.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, 2, info.RetryCount, "the retry count carries over between attempts, wherever they run")
	for i := range 3 {
		_, ok := attempts.Load(i)
		assert.True(t, ok, "attempt %d ran", i)
	}
}

// stopAsIfDead stops m's background components and its lease's watchdog
// without ending its lease, as a process that froze or died would: its
// lease lapses after the TTL.
func stopAsIfDead(m *TaskManager) {
	m.lease.stop()
	for _, l := range m.services {
		l.Stop()
	}
}

func TestDeadManagersTasksAreRecovered(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	const ttl = 300 * time.Millisecond
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	dead := newManager(t, reg, WithStore(store), WithLeaseTTL(ttl))
	plain, err := dead.Submit(ctx, "block", nil)
	require.NoError(t, err)
	resumable, err := dead.Submit(ctx, "block", nil, WithResumable())
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the first start")
	recv(t, mod.started, 5*time.Second, "the second start")
	stopAsIfDead(dead)
	lapsedAt := time.Now()

	live := newManager(t, reg, WithStore(store), WithLeaseTTL(ttl))
	info, err := live.Wait(ctx, plain)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Equal(t, CodeTaskAbandoned, info.ErrorCode)
	recovered := time.Since(lapsedAt)
	assert.Less(t, recovered, 3*ttl, "recovered within about two TTLs")
	t.Logf("recovered %v after the lease stopped being renewed (TTL %v)", recovered, ttl)

	// The resumable task runs again on the live manager.
	assert.Equal(t, resumable, recv(t, mod.started, 5*time.Second, "the resumable task to start again"))
	assert.Equal(t, int32(2), mod.runs(resumable))

	// The dead manager's modules return now: their late writes are refused.
	close(mod.release)
	info, err = live.Wait(ctx, resumable)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	stored, err := store.Get(ctx, plain)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, stored.Status, "the dead manager's late result did not land")

	// When the dead manager comes back it learns its lease is gone.
	dead.lease.runOnce(ctx)
	assert.False(t, dead.leased.Load(), "a lapsed lease cannot be renewed")
}

func TestLapsedManagerStopsItsModules(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	const ttl = 300 * time.Millisecond
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	frozen := newManager(t, reg, WithStore(store), WithLeaseTTL(ttl))
	id, err := frozen.Submit(ctx, "block", nil)
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the start")
	stopAsIfDead(frozen)
	live := newManager(t, reg, WithStore(store), WithLeaseTTL(ttl))
	info, err := live.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, info.Status)

	// The frozen manager thaws: its next renewal finds the lease gone, and
	// it stops the module it still runs.
	frozen.lease.runOnce(ctx)
	assert.False(t, frozen.leased.Load())
	assert.Equal(t, id, recv(t, mod.stopped, 2*time.Second, "the frozen manager's module to be stopped"))
	info, err = frozen.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status, "Wait on the thawed manager reads what the store says")
}

func TestDrainHandsResumableTasksToAnotherManager(t *testing.T) {
	store := NewMemoryStore()
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	draining := newManager(t, reg, WithStore(store), WithMaxConcurrent(1))
	ctx := testCtx(t)
	var ids []string
	for range 5 {
		id, err := draining.Submit(ctx, "block", nil, WithResumable())
		require.NoError(t, err)
		ids = append(ids, id)
	}
	first := recv(t, mod.started, 5*time.Second, "one task to start")
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := draining.Drain(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the running task was cut short")
	assert.Equal(t, first, recv(t, mod.stopped, 2*time.Second, "the cut-short module to stop"))
	_, err = draining.Submit(ctx, "block", nil)
	require.ErrorIs(t, err, ErrManagerClosed)

	other := newManager(t, reg, WithStore(store), WithMaxConcurrent(5))
	close(mod.release)
	for _, id := range ids {
		info, err := other.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status, "task %s", id)
	}
	assert.Equal(t, int32(2), mod.runs(first), "the cut-short task ran again")
}

func TestDrainLetsOwnTasksFinish(t *testing.T) {
	ctx := testCtx(t)
	mod := newBlocker()
	m, err := NewTaskManager(registry(t, map[string]Module{"block": mod}))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "block", nil)
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the start")
	done := make(chan error, 1)
	go func() { done <- m.Drain(ctx) }()
	close(mod.release)
	require.NoError(t, recv(t, done, 5*time.Second, "Drain"), "nothing was cut short")
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

func TestShutdownCancelsOrphansButNotLiveReplicas(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	live := newManager(t, reg, WithStore(store))
	kept, err := live.Submit(ctx, "block", nil)
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the live replica's task to start")
	// A record an earlier run left: held by an owner with no lease.
	ghost := StoredTask{Info: TaskInfo{TaskID: "ghost-task", ModuleID: "block", Status: StatusRunning, SubmittedAt: now()}, Owner: "ghost"}
	ok, err := store.Insert(ctx, ghost, 100)
	require.NoError(t, err)
	require.True(t, ok)

	leaving, err := NewTaskManager(reg, WithStore(store))
	require.NoError(t, err)
	require.NoError(t, leaving.Shutdown(ctx))
	info, err := store.Get(ctx, "ghost-task")
	require.NoError(t, err)
	// Shutdown cancels it, unless a keeper's recovery failed it first.
	if info.Status != StatusCancelled {
		assert.Equal(t, StatusFailed, info.Status, "a record no live manager holds ends")
		assert.Equal(t, CodeTaskAbandoned, info.ErrorCode)
	}
	info, err = store.Get(ctx, kept)
	require.NoError(t, err)
	assert.Equal(t, StatusRunning, info.Status, "a live replica's task is never cancelled")
	close(mod.release)
}

func TestShutdownRecordsCancelsWithEndedContext(t *testing.T) {
	mod := newBlocker()
	store := NewMemoryStore()
	m, err := NewTaskManager(registry(t, map[string]Module{"block": mod}), WithStore(store), WithMaxConcurrent(2))
	require.NoError(t, err)
	ctx := testCtx(t)
	var ids []string
	for range 30 {
		id, err := m.Submit(ctx, "block", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Shutdown(ended); err != nil {
		require.ErrorIs(t, err, context.Canceled, "the only error an ended context may cause")
	}
	for _, id := range ids {
		info, err := store.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCancelled, info.Status, "task %s", id)
	}
	require.NoError(t, m.Shutdown(ctx))
}

// carrier carries one context value through the store.
type carrier struct{}

type traceKey struct{}

func (carrier) Inject(ctx context.Context) map[string]string {
	if v, ok := ctx.Value(traceKey{}).(string); ok {
		return map[string]string{"trace": v}
	}
	return nil
}

func (carrier) Extract(ctx context.Context, c map[string]string) context.Context {
	return context.WithValue(ctx, traceKey{}, c["trace"])
}

func TestContextCarrierReachesTheRunningManager(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	reg := registry(t, map[string]Module{"trace": ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		return fmt.Sprint(ctx.Value(traceKey{})), nil
	})})
	a := newManager(t, reg, WithStore(store), WithMaxConcurrent(0), WithContextCarrier(carrier{}))
	newManager(t, reg, WithStore(store), WithContextCarrier(carrier{}))
	id, err := a.Submit(context.WithValue(ctx, traceKey{}, "abc123"), "trace", nil, WithResumable())
	require.NoError(t, err)
	info, err := a.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "abc123", info.Result)
}

func TestResumableNeedsASharedStore(t *testing.T) {
	m := newManager(t, registry(t, map[string]Module{"x": constModule(1)}), WithStore(plainStore{NewMemoryStore()}))
	_, err := m.Submit(context.Background(), "x", nil, WithResumable())
	require.ErrorIs(t, err, ErrInvalidInput)
}
