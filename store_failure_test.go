package apcore

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What a failing store does to a task, at each transition (the README's
// "When the store fails" section states these rules).

var errDown = errors.New("store is down")

// faultStore wraps a MemoryStore, hiding its type so that the manager takes
// its generic store path, and asks fault before every call whether to fail
// it. onSave, if set, runs after each successful Save.
type faultStore struct {
	inner  *MemoryStore
	fault  func(method string) error
	onSave func()
}

func (f *faultStore) Save(ctx context.Context, t TaskInfo) error {
	if err := f.fault("Save"); err != nil {
		return err
	}
	err := f.inner.Save(ctx, t)
	if err == nil && f.onSave != nil {
		f.onSave()
	}
	return err
}
func (f *faultStore) SaveIf(ctx context.Context, t TaskInfo, from ...TaskStatus) (bool, error) {
	if err := f.fault("SaveIf"); err != nil {
		return false, err
	}
	return f.inner.SaveIf(ctx, t, from...)
}
func (f *faultStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	if err := f.fault("Get"); err != nil {
		return TaskInfo{}, err
	}
	return f.inner.Get(ctx, id)
}
func (f *faultStore) List(ctx context.Context, s TaskStatus) ([]TaskInfo, error) {
	if err := f.fault("List"); err != nil {
		return nil, err
	}
	return f.inner.List(ctx, s)
}
func (f *faultStore) Delete(ctx context.Context, id string) error {
	if err := f.fault("Delete"); err != nil {
		return err
	}
	return f.inner.Delete(ctx, id)
}
func (f *faultStore) ListExpired(ctx context.Context, b time.Time) ([]TaskInfo, error) {
	if err := f.fault("ListExpired"); err != nil {
		return nil, err
	}
	return f.inner.ListExpired(ctx, b)
}
func (f *faultStore) Count(ctx context.Context, s ...TaskStatus) (int, error) {
	if err := f.fault("Count"); err != nil {
		return 0, err
	}
	return f.inner.Count(ctx, s...)
}
func (f *faultStore) Name() string { return "FaultStore" }

// flakyStore fails chosen methods a chosen number of times (-1: until told
// otherwise).
type flakyStore struct {
	*faultStore
	mu    sync.Mutex
	fails map[string]int
}

func newFlakyStore() *flakyStore {
	f := &flakyStore{fails: map[string]int{}}
	f.faultStore = &faultStore{inner: NewMemoryStore(), fault: f.countdown}
	return f
}

func (f *flakyStore) failN(method string, n int) {
	f.mu.Lock()
	f.fails[method] = n
	f.mu.Unlock()
}

func (f *flakyStore) countdown(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch n := f.fails[method]; {
	case n == 0:
		return nil
	case n > 0:
		f.fails[method] = n - 1
	}
	return &Error{Code: CodeTaskStoreUnavailable, Message: method + " failed", Cause: errDown}
}

// When the start is not recorded, the task runs all the same; a transient
// failure of the outcome write is retried and the store ends right. (The
// task is due a little later, so that it is saved pending and its start is
// a write of its own: one that finds a slot free at Submit is saved
// running. The module waits until the start's write has failed: a start
// written while the module runs is overtaken by an end that comes first.)
func TestStoreFailsAtStartAndBriefly(t *testing.T) {
	ctx := testCtx(t)
	s := newFlakyStore()
	logs := newLogCapture()
	g := newGate(false)
	g.result = "ok"
	m := newManager(t, registry(t, map[string]Module{"a.b": g}), WithStore(s), WithLogger(logs.logger()))
	s.failN("SaveIf", 3) // the running write, then two tries of the outcome
	id, err := m.Submit(ctx, "a.b", nil, WithDelay(20*time.Millisecond))
	require.NoError(t, err)
	g.waitStart(t)
	logs.waitMessage(t, slog.LevelWarn, "apcore: could not record a task transition")
	g.open()
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	stored, err := s.inner.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, stored.Status, "the outcome write was retried")
	assert.Equal(t, "ok", stored.Result)
}

// When the outcome cannot be written at all, it stays reachable through
// Status, Result and Wait, the slot is free, and it reaches the store once
// the store is back (on Status, or at Shutdown).
func TestStoreFailsAtFinish(t *testing.T) {
	ctx := testCtx(t)
	s := newFlakyStore()
	logs := newLogCapture()
	m, err := NewTaskManager(registry(t, map[string]Module{"a.b": constModule("ok")}),
		WithStore(s), WithLogger(logs.logger()), WithMaxConcurrent(1))
	require.NoError(t, err)

	first, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	s.failN("SaveIf", -1)
	second, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	for _, id := range []string{first, second} {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
	}
	logs.waitMessage(t, slog.LevelError, "apcore: could not record a task's outcome; it is kept in memory")

	info, err := m.Status(ctx, second)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "kept in memory")
	res, err := m.Result(ctx, second)
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
	ok, err := m.Cancel(ctx, second)
	require.NoError(t, err)
	assert.False(t, ok, "an ended task cannot be cancelled, even if the store has not heard")

	err = m.Shutdown(ctx)
	require.ErrorIs(t, err, ErrStoreUnavailable, "Shutdown reports outcomes the store still refuses")

	s.failN("SaveIf", 0)
	require.NoError(t, m.Shutdown(ctx), "a second Shutdown writes them")
	stored, err := s.inner.Get(ctx, second)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, stored.Status)
	assert.Equal(t, "ok", stored.Result)
}

// Status heals a kept outcome as soon as the store takes writes again.
func TestStatusWritesAKeptOutcome(t *testing.T) {
	ctx := testCtx(t)
	s := newFlakyStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": failModule("nope", nil)}), WithStore(s))
	s.failN("SaveIf", -1)
	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	stored, err := s.inner.Get(ctx, id)
	require.NoError(t, err)
	assert.True(t, stored.Status.IsActive(), "the store has not heard yet")

	s.failN("SaveIf", 0)
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	stored, err = s.inner.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, stored.Status)
	assert.Equal(t, "nope", stored.Error)
	assert.Zero(t, m.nKept.Load())
}

// A cancel the store refuses still stops the task; Cancel says so with the
// store's error, and the task ends cancelled here.
func TestStoreFailsAtCancel(t *testing.T) {
	ctx := testCtx(t)
	s := newFlakyStore()
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g, "a.b": constModule(1)}), WithStore(s), WithMaxConcurrent(1))
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	s.failN("SaveIf", 1+len(outcomeRetries)) // the write and each retry of it
	ok, err := m.Cancel(ctx, id)
	require.ErrorIs(t, err, ErrStoreUnavailable)
	assert.False(t, ok)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)

	next, err := m.Submit(ctx, "a.b", nil) // the slot came back
	require.NoError(t, err)
	info, err = m.Wait(ctx, next)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
}

// Reads that fail return typed errors and change nothing.
func TestStoreFailsOnReads(t *testing.T) {
	ctx := testCtx(t)
	s := newFlakyStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(s), WithMaxConcurrent(0))
	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	for _, method := range []string{"Get", "List", "Count", "Delete", "ListExpired"} {
		s.failN(method, -1)
	}
	_, err = m.Status(ctx, id)
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	_, err = m.List(ctx, "")
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	_, err = m.TaskCount(ctx)
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	_, err = m.Cleanup(ctx, -1)
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	_, err = m.Reap(ctx, time.Now())
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	_, err = m.Submit(ctx, "a.b", nil)
	assert.ErrorIs(t, err, ErrStoreUnavailable, "admission cannot count")
	for _, method := range []string{"Get", "List", "Count", "Delete", "ListExpired"} {
		s.failN(method, 0)
	}
	n, err := m.TaskCount(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// A reaper stuck in a slow sweep does not stop Shutdown from cancelling the
// tasks; a Shutdown whose ctx ends first can be called again to finish.
func TestShutdownWithAStuckReaper(t *testing.T) {
	ctx := testCtx(t)
	sweeping := make(chan struct{}, 1)
	unblock := make(chan struct{})
	store := &faultStore{inner: NewMemoryStore(), fault: func(method string) error {
		if method == "ListExpired" {
			select {
			case sweeping <- struct{}{}:
			default:
			}
			<-unblock
		}
		return nil
	}}
	g := newGate(true)
	m, err := NewTaskManager(registry(t, map[string]Module{"slow.job": g}), WithStore(store))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	_, err = m.StartReaper(ReaperConfig{SweepInterval: time.Millisecond})
	require.NoError(t, err)
	<-sweeping

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, m.Shutdown(short), context.DeadlineExceeded, "the sweep is stuck")
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status, "the tasks were cancelled all the same")
	close(unblock)
	require.NoError(t, m.Shutdown(ctx))
}
