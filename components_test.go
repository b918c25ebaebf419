package apcore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each background component's runOnce, on its own: the manager's loops are
// stopped, and the test runs one pass at a time.

// quietManager returns a manager over store whose background loops are
// stopped, so that a test drives its components by hand.
func quietManager(t *testing.T, exec Executor, store TaskStore, opts ...Option) *TaskManager {
	t.Helper()
	m := newManager(t, exec, append([]Option{WithStore(store), WithLeaseTTL(time.Second)}, opts...)...)
	for _, l := range m.services {
		l.Stop()
	}
	return m
}

func TestLeaseKeeperRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := quietManager(t, NewRegistry(), store)
	k := m.lease
	k.runOnce(ctx) // the loop's first pass made it already; this one renews
	require.True(t, m.leased.Load())
	owner := m.ownerID()
	k.mu.Lock()
	valid := k.validUntil
	k.mu.Unlock()
	assert.WithinDuration(t, time.Now().Add(time.Second-leaseMargin(time.Second)), valid, 200*time.Millisecond)

	// The store forgets the lease: the next pass gives it up.
	require.NoError(t, store.Release(ctx, owner))
	k.runOnce(ctx)
	assert.False(t, m.leased.Load())
	assert.NotEqual(t, owner, m.ownerID(), "a new owner id")
	k.runOnce(ctx) // and the pass after makes a new lease
	assert.True(t, m.leased.Load())
}

func TestLeaseKeeperWatchdog(t *testing.T) {
	ctx := testCtx(t)
	stall := &stallStore{MemoryStore: NewMemoryStore()}
	g := newGate(true)
	m := quietManager(t, registry(t, map[string]Module{"a.job": g}), stall, WithLeaseTTL(200*time.Millisecond))
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	stall.stalled.Store(true)
	done := make(chan struct{})
	go func() { // a renewal that hangs until its deadline: the end of the lease here
		defer close(done)
		m.lease.runOnce(ctx)
	}()
	// The watchdog stops the module and lets go of the task, without a
	// write: the store says running until another manager recovers it.
	require.Eventually(t, func() bool { return g.running.Load() == 0 }, 5*time.Second, time.Millisecond, "the module was stopped")
	// The task leaves the table when its release ends, which may be just
	// after the module returned.
	require.Eventually(t, func() bool { _, held := m.tasks.load(id); return !held }, 5*time.Second, time.Millisecond, "the task was let go of")
	assert.False(t, m.leased.Load())
	<-done
	stall.stalled.Store(false)
}

func TestRecovererRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := quietManager(t, NewRegistry(), store)
	_, err := store.Renew(ctx, LeaseRequest{Owner: "dead", Expires: time.Now().Add(-time.Second), Create: true})
	require.NoError(t, err)
	ok, err := store.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: "t1", ModuleID: "a.job", Status: StatusRunning, SubmittedAt: now()}, Owner: "dead"}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	recoverer{m}.runOnce(ctx)
	info, err := store.Get(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Equal(t, CodeTaskAbandoned, info.ErrorCode)
}

func TestWatcherRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	g := newGate(true)
	m := quietManager(t, registry(t, map[string]Module{"a.job": g}), store)
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	// Cancelled through the store, as another replica would.
	info, err := store.Get(ctx, id)
	require.NoError(t, err)
	info.Status, info.CompletedAt = StatusCancelled, now()
	ok, err := store.SaveIf(ctx, info, StatusRunning)
	require.NoError(t, err)
	require.True(t, ok)
	watcher{m}.runOnce(ctx)
	require.Eventually(t, func() bool { return g.running.Load() == 0 }, 5*time.Second, time.Millisecond, "the module was stopped")
	got, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, got.Status)
}

func TestClaimerRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := quietManager(t, registry(t, map[string]Module{"a.job": constModule(7)}), store)
	for _, mod := range []string{"a.job", "other.job"} {
		ok, err := store.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: mod, ModuleID: mod, Status: StatusPending, SubmittedAt: now()}, Resumable: true, Inputs: []byte(`{}`)}, 10)
		require.NoError(t, err)
		require.True(t, ok)
	}
	claimer{m}.runOnce(ctx)
	info, err := m.Wait(ctx, "a.job")
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	other, err := store.Get(ctx, "other.job")
	require.NoError(t, err)
	assert.Equal(t, StatusPending, other.Status, "a module this manager does not know is left to another")

	m.draining.Store(true)
	ok, err := store.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: "late", ModuleID: "a.job", Status: StatusPending, SubmittedAt: now()}, Resumable: true, Inputs: []byte(`{}`)}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	claimer{m}.runOnce(ctx)
	late, err := store.Get(ctx, "late")
	require.NoError(t, err)
	assert.Equal(t, StatusPending, late.Status, "a draining manager claims nothing")
	m.draining.Store(false)
	claimer{m}.runOnce(ctx)
	_, err = m.Wait(ctx, "late")
	require.NoError(t, err)
}

func TestLoopWakeAndStop(t *testing.T) {
	runs := make(chan context.Context, 8)
	l := newLoop(time.Hour, func(ctx context.Context) { runs <- ctx })
	l.Start()
	first := <-runs // at once
	l.Wake()
	<-runs // when woken, long before the hour
	l.Stop()
	assert.Error(t, first.Err(), "Stop cancels the runs' context")
	var never *loop
	never.Stop() // a loop never made: nothing to stop
}

func TestReaperRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := quietManager(t, NewRegistry(), store)
	old := now().Add(-2 * time.Hour)
	for id, st := range map[string]TaskStatus{"old-done": StatusCompleted, "old-failed": StatusFailed, "old-pending": StatusPending} {
		info := TaskInfo{TaskID: id, ModuleID: "a.x", Status: st, SubmittedAt: old}
		if st.IsTerminal() {
			info.CompletedAt = old
		}
		require.NoError(t, store.Save(ctx, info))
	}
	require.NoError(t, store.Save(ctx, TaskInfo{TaskID: "new-done", ModuleID: "a.x", Status: StatusCompleted, SubmittedAt: now(), CompletedAt: now()}))
	assert.Equal(t, 2, reaper{m, time.Hour}.runOnce(ctx), "the two old terminal records")
	left, err := store.List(ctx, "")
	require.NoError(t, err)
	var ids []string
	for _, info := range left {
		ids = append(ids, info.TaskID)
	}
	assert.ElementsMatch(t, []string{"old-pending", "new-done"}, ids)
	assert.Equal(t, 0, reaper{m, time.Hour}.runOnce(ctx))
}

func TestOutcomeWriterRunOnce(t *testing.T) {
	ctx := testCtx(t)
	store := newHookStore()
	m := quietManager(t, NewRegistry(), store)
	owner := m.ownerID()
	pending := TaskInfo{TaskID: "kept-1", ModuleID: "a.x", Status: StatusPending, SubmittedAt: now()}
	ok, err := store.Insert(ctx, StoredTask{Info: pending, Owner: owner}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	done := pending
	done.Status, done.CompletedAt, done.Result = StatusCompleted, now(), "r"
	// Kept by hand, as finish keeps an outcome the store refused, without
	// starting the writer's loop.
	m.kept.store(done.TaskID, &keptOutcome{info: done, holder: owner})
	m.nKept.Add(1)
	store.setSaveErr(errors.New("store down"))
	assert.Equal(t, 1, outcomeWriter{m}.runOnce(ctx), "refused: still kept")
	assert.True(t, m.isKept(done.TaskID))
	store.setSaveErr(nil)
	assert.Equal(t, 0, outcomeWriter{m}.runOnce(ctx))
	assert.False(t, m.isKept(done.TaskID))
	got, err := store.Get(ctx, done.TaskID)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, got.Status)
	assert.Equal(t, "r", got.Result)
}
