package apcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func TestLifecycleCompleted(t *testing.T) {
	ctx := testCtx(t)
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"math.answer": constModule(42)}), WithObserver(obs.observe))
	id, err := m.Submit(ctx, "math.answer", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, 42, info.Result)
	assert.Empty(t, info.Error)
	assert.False(t, info.StartedAt.IsZero())
	assert.False(t, info.CompletedAt.Before(info.StartedAt))
	assert.False(t, info.StartedAt.Before(info.SubmittedAt))

	// Wait wakes before the observer hears of the end (an observer never
	// holds up a waiter): wait for that call too.
	obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.Status.IsTerminal() })
	var states []TaskStatus
	for _, r := range obs.of(id) {
		states = append(states, r.Status)
	}
	assert.Equal(t, []TaskStatus{StatusPending, StatusRunning, StatusCompleted}, states)
}

// A cancel that lands while the module is finishing always wins: Cancel
// returning true means the task ends cancelled with no result, and a task
// whose Cancel returned false ended completed with its result.
func TestCancelRacingFinishIsAllOrNothing(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"quick.job": constModule("out")}), WithMaxConcurrent(4))
	var cancelledWins, completedWins int
	for i := 0; i < 300; i++ {
		id, err := m.Submit(ctx, "quick.job", nil)
		require.NoError(t, err)
		ok, err := m.Cancel(ctx, id)
		require.NoError(t, err)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		stored, err := m.Status(ctx, id)
		require.NoError(t, err)
		if ok {
			cancelledWins++
			assert.Equal(t, StatusCancelled, info.Status)
			assert.Equal(t, StatusCancelled, stored.Status)
			assert.Nil(t, stored.Result)
		} else {
			completedWins++
			assert.Equal(t, StatusCompleted, stored.Status)
			assert.Equal(t, "out", stored.Result)
		}
		again, err := m.Cancel(ctx, id)
		require.NoError(t, err)
		assert.False(t, again, "a terminal task cannot be cancelled again")
	}
	t.Logf("cancel won %d times, completion %d times", cancelledWins, completedWins)
}

func TestTerminalStateIsNeverOverwritten(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(false) // ignores ctx: returns a result after the cancel
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}))
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status, "cancelled at once, while the module still runs")
	assert.False(t, info.CompletedAt.IsZero())

	g.open()
	require.NoError(t, m.Shutdown(ctx)) // the module has returned its result
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.Nil(t, info.Result)
}

// ---- 2. submit --------------------------------------------------------------

func TestSubmitSavesPendingAndReturnsUUIDv4(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithMaxConcurrent(0))
	id, err := m.Submit(ctx, "a.b", map[string]any{"x": 1}, WithRetry(RetryConfig{MaxRetries: 2}))
	require.NoError(t, err)
	u, err := uuid.Parse(id)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(4), u.Version())
	assert.Equal(t, uuid.RFC4122, u.Variant())

	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
	assert.Equal(t, "a.b", info.ModuleID)
	assert.Equal(t, 2, info.MaxRetries)
	assert.Zero(t, info.RetryCount)
	assert.True(t, info.StartedAt.IsZero())
	assert.True(t, info.CompletedAt.IsZero())
	assert.WithinDuration(t, time.Now(), info.SubmittedAt, time.Minute)
}

func TestAdmissionIsAtomic(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func() TaskStore
	}{
		{"counter", func() TaskStore { return NewMemoryStore() }},
		{"list", func() TaskStore { return plainStore{NewMemoryStore()} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}),
				WithMaxConcurrent(0), WithMaxTasks(8), WithStore(tc.store()))
			var accepted, limited atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < 64; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := m.Submit(ctx, "a.b", nil)
					switch {
					case err == nil:
						accepted.Add(1)
					case errors.Is(err, ErrTaskLimitExceeded):
						limited.Add(1)
						assert.Equal(t, "Task limit reached (8)", err.Error())
						assert.Equal(t, CodeTaskLimitExceeded, CodeOf(err))
					default:
						t.Errorf("unexpected error: %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			assert.EqualValues(t, 8, accepted.Load())
			assert.EqualValues(t, 56, limited.Load())
			n, err := m.TaskCount(ctx)
			require.NoError(t, err)
			assert.Equal(t, 8, n)
		})
	}
}

func TestAdmissionCountsActiveTasksOnly(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1), "slow.job": g}), WithMaxTasks(2))
	for i := 0; i < 5; i++ { // terminal records never count
		id, err := m.Submit(ctx, "a.b", nil)
		require.NoError(t, err)
		_, err = m.Wait(ctx, id)
		require.NoError(t, err)
	}
	a, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	_, err = m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	_, err = m.Submit(ctx, "a.b", nil)
	require.ErrorIs(t, err, ErrTaskLimitExceeded)
	ok, err := m.Cancel(ctx, a) // a cancelled task frees its place at once
	require.NoError(t, err)
	require.True(t, ok)
	_, err = m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	g.open()
}

func TestAdmissionUsesCounterNotList(t *testing.T) {
	ctx := testCtx(t)
	s := newHookStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(s), WithMaxConcurrent(0))
	for i := 0; i < 20; i++ {
		_, err := m.Submit(ctx, "a.b", nil)
		require.NoError(t, err)
	}
	_, err := m.TaskCount(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.lists.Load(), "with a Counter, admission and TaskCount must not list the store")
}

// ---- 4. submit rejects bad input, saving nothing ------------------------------

func TestSubmitRejects(t *testing.T) {
	var calls atomic.Int32
	counting := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		calls.Add(1)
		return nil, nil
	})
	var nilCtx context.Context
	cases := []struct {
		name   string
		ctx    context.Context
		module string
		opts   []SubmitOption
		want   *Error
	}{
		{"negative retries", context.Background(), "data.job", []SubmitOption{WithRetry(RetryConfig{MaxRetries: -1})}, ErrInvalidInput},
		{"shrinking backoff", context.Background(), "data.job", []SubmitOption{WithRetry(RetryConfig{MaxRetries: 1, BackoffMultiplier: 0.5})}, ErrInvalidInput},
		{"NaN backoff", context.Background(), "data.job", []SubmitOption{WithRetry(RetryConfig{BackoffMultiplier: nan()})}, ErrInvalidInput},
		{"negative delay", context.Background(), "data.job", []SubmitOption{WithRetry(RetryConfig{RetryDelay: -time.Second})}, ErrInvalidInput},
		{"negative timeout", context.Background(), "data.job", []SubmitOption{WithTimeout(-1)}, ErrInvalidInput},
		{"nil option", context.Background(), "data.job", []SubmitOption{nil}, ErrInvalidInput},
		{"nil context", nilCtx, "data.job", nil, ErrInvalidInput},
	}
	m := newManager(t, registry(t, map[string]Module{"data.job": counting}))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := m.Submit(tc.ctx, tc.module, nil, tc.opts...)
			require.ErrorIs(t, err, tc.want)
			assert.Empty(t, id)
			assert.NotEmpty(t, err.Error())
		})
	}
	n, err := m.TaskCount(context.Background())
	require.NoError(t, err)
	assert.Zero(t, n, "a rejected submit saves nothing")

	t.Run("store fails", func(t *testing.T) {
		s := newHookStore()
		cause := errors.New("disk on fire")
		s.setSaveErr(cause)
		m := newManager(t, registry(t, map[string]Module{"data.job": counting}), WithStore(s))
		_, err := m.Submit(context.Background(), "data.job", nil)
		require.ErrorIs(t, err, ErrStoreUnavailable)
		require.ErrorIs(t, err, cause)
		s.setSaveErr(nil)
		require.NoError(t, m.Shutdown(context.Background()))
		n, err := s.Count(context.Background())
		require.NoError(t, err)
		assert.Zero(t, n)
	})

	t.Run("closed manager", func(t *testing.T) {
		m := newManager(t, registry(t, map[string]Module{"data.job": counting}))
		require.NoError(t, m.Shutdown(context.Background()))
		_, err := m.Submit(context.Background(), "data.job", nil)
		require.ErrorIs(t, err, ErrManagerClosed)
	})
	assert.Zero(t, calls.Load(), "no rejected task may run")
}

func TestExecutorWithoutResolverAcceptsAnyValidID(t *testing.T) {
	ctx := testCtx(t)
	exec := ExecutorFunc(func(ctx context.Context, moduleID string, in map[string]any) (any, error) {
		return moduleID, nil
	})
	m := newManager(t, exec)
	id, err := m.Submit(ctx, "anything.goes", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "anything.goes", info.Result)
}

// ---- 5. concurrency -----------------------------------------------------------

func TestCancelUnknownAndTwice(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithMaxConcurrent(0))
	ok, err := m.Cancel(ctx, "no-such-task")
	require.NoError(t, err)
	assert.False(t, ok)
	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	ok, err = m.Cancel(ctx, id)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = m.Cancel(ctx, id)
	require.NoError(t, err)
	assert.False(t, ok)
}

// replicas returns two managers sharing one memory store, each running g as
// "slow.job".
func replicas(t *testing.T, g *gate) (*TaskManager, *TaskManager) {
	store := NewMemoryStore()
	return newManager(t, registry(t, map[string]Module{"slow.job": g}), WithStore(store)),
		newManager(t, registry(t, map[string]Module{"slow.job": g}), WithStore(store))
}

// A task of another manager on a shared store is cancelled in the store; the
// owner never overwrites that with its late result.
func TestCancelThroughAnotherManager(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(false)
	owner, other := replicas(t, g)
	id, err := owner.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	ok, err := other.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	g.open()
	info, err := owner.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.Nil(t, info.Result)
	info, err = other.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
}

// ---- 7. retry -------------------------------------------------------------------

func TestStatusAndResultErrors(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(map[string]any{"n": 1.0}), "slow.job": newGate(true)}), WithMaxConcurrent(0))
	_, err := m.Status(ctx, "missing")
	require.ErrorIs(t, err, ErrTaskNotFound)
	_, err = m.Result(ctx, "missing")
	require.ErrorIs(t, err, ErrTaskNotFound)
	assert.Equal(t, "Task not found: missing", err.Error())

	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	_, err = m.Result(ctx, id)
	require.ErrorIs(t, err, ErrTaskNotCompleted)
	assert.Equal(t, fmt.Sprintf("Task %s is not completed (status=pending)", id), err.Error())
}

func TestWaitWakesWithoutPolling(t *testing.T) {
	ctx := testCtx(t)
	s := newHookStore()
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithStore(s))
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	done := waitAsync(t, m, id)
	waiting(t, m, id)
	before := s.gets.Load()
	g.open()
	info := <-done
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, before, s.gets.Load(), "Wait on this manager's task reads no store")
}

// waitAsync runs m.Wait(id) on a goroutine and delivers its record.
func waitAsync(t *testing.T, m *TaskManager, id string) <-chan TaskInfo {
	done := make(chan TaskInfo, 1)
	go func() {
		info, err := m.Wait(testCtx(t), id)
		assert.NoError(t, err)
		done <- info
	}()
	return done
}

// waiting blocks until a Wait on id has parked on the task's channel.
func waiting(t *testing.T, m *TaskManager, id string) {
	t.Helper()
	tk, ok := m.tasks.load(id)
	require.True(t, ok)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		tk.mu.Lock()
		parked := tk.done != nil
		tk.mu.Unlock()
		if parked {
			return
		}
		runtime.Gosched()
	}
	t.Fatal("Wait never parked")
}

func TestWaitHonoursContext(t *testing.T) {
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}))
	id, err := m.Submit(context.Background(), "slow.job", nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = m.Wait(ctx, id)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = m.Wait(ctx, "unknown")
	require.Error(t, err)
	g.open()
}

func TestWaitOnAnotherManagersTask(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	owner, watcher := replicas(t, g)
	id, err := owner.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	done := waitAsync(t, watcher, id)
	g.open()
	info := <-done
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, "done", info.Result)
}

func TestListIsInInsertionOrderAndFilters(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithMaxConcurrent(0))
	var ids []string
	for i := 0; i < 30; i++ {
		id, err := m.Submit(ctx, "a.b", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for _, i := range []int{3, 17, 29} {
		ok, err := m.Cancel(ctx, ids[i])
		require.NoError(t, err)
		require.True(t, ok)
	}
	all, err := m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, ids, taskIDs(all))
	cancelled, err := m.List(ctx, StatusCancelled)
	require.NoError(t, err)
	assert.Equal(t, []string{ids[3], ids[17], ids[29]}, taskIDs(cancelled))
	pending, err := m.List(ctx, StatusPending)
	require.NoError(t, err)
	assert.Len(t, pending, 27)
	_, err = m.List(ctx, "paused")
	require.ErrorIs(t, err, ErrInvalidInput)
}

func taskIDs(infos []TaskInfo) []string {
	out := []string{}
	for _, i := range infos {
		out = append(out, i.TaskID)
	}
	return out
}

func TestShutdownCancelsEverythingAndWaits(t *testing.T) {
	ctx := testCtx(t)
	honours := newGate(true)
	stubborn := newGate(false)
	obs := newObserved()
	m, err := NewTaskManager(registry(t, map[string]Module{
		"honours.ctx": honours, "ignores.ctx": stubborn, "always.fails": failModule("x", nil),
	}), WithMaxConcurrent(2), WithObserver(obs.observe))
	require.NoError(t, err)
	running1, err := m.Submit(ctx, "honours.ctx", nil)
	require.NoError(t, err)
	running2, err := m.Submit(ctx, "ignores.ctx", nil)
	require.NoError(t, err)
	honours.waitStart(t)
	stubborn.waitStart(t)
	pending, err := m.Submit(ctx, "honours.ctx", nil)
	require.NoError(t, err)
	_, err = m.StartReaper(ReaperConfig{SweepInterval: time.Hour})
	require.NoError(t, err)

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = m.Shutdown(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the stubborn module is still running")
	for _, id := range []string{running1, running2, pending} {
		info, err := m.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCancelled, info.Status, id)
	}
	_, err = m.Submit(ctx, "honours.ctx", nil)
	require.ErrorIs(t, err, ErrManagerClosed)

	stubborn.open()
	require.NoError(t, m.Shutdown(ctx))
	require.NoError(t, m.Shutdown(ctx), "Shutdown is idempotent")
	assert.EqualValues(t, 1, honours.calls.Load(), "the pending task never ran")
}

func TestShutdownCancelsTasksInBackoff(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	obs := newObserved()
	m, err := NewTaskManager(registry(t, map[string]Module{"always.fails": failModule("x", &calls)}), WithObserver(obs.observe))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "always.fails", nil, WithRetry(RetryConfig{MaxRetries: 3, RetryDelay: time.Hour}))
	require.NoError(t, err)
	obs.waitFor(t, func(i TaskInfo) bool { return i.RetryCount == 1 })
	require.NoError(t, m.Shutdown(ctx))
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.EqualValues(t, 1, calls.Load())
}

// ---- 13. logging ----------------------------------------------------------------

func TestSilentByDefault(t *testing.T) {
	logs := newLogCapture()
	prev := slog.Default()
	slog.SetDefault(logs.logger())
	defer slog.SetDefault(prev)
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{
		"bad.job":      ModuleFunc(func(context.Context, map[string]any) (any, error) { panic("x") }),
		"always.fails": failModule("y", nil),
	}))
	for _, mod := range []string{"bad.job", "always.fails"} {
		id, err := m.Submit(ctx, mod, nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond}))
		require.NoError(t, err)
		_, err = m.Wait(ctx, id)
		require.NoError(t, err)
	}
	assert.Zero(t, logs.count(), "without WithLogger nothing is logged anywhere")
}

func TestLogsFailures(t *testing.T) {
	logs := newLogCapture()
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"always.fails": failModule("disk full", nil)}), WithLogger(logs.logger()))
	id, err := m.Submit(ctx, "always.fails", nil)
	require.NoError(t, err)
	_, err = m.Wait(ctx, id)
	require.NoError(t, err)
	rec := logs.waitMessage(t, slog.LevelWarn, "apcore: task failed")
	assert.Equal(t, id, attr(rec, "task_id"))
	assert.Equal(t, "disk full", attr(rec, "error"))
}

// ---- options and errors -----------------------------------------------------------

// writeLog is a MemoryStore that notes, per task, the state of each of its
// inserts and updates.
type writeLog struct {
	*MemoryStore
	mu     sync.Mutex
	writes map[string][]string
}

func (w *writeLog) note(id, what string) {
	w.mu.Lock()
	w.writes[id] = append(w.writes[id], what)
	w.mu.Unlock()
}

func (w *writeLog) of(id string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes[id])
}

func (w *writeLog) Insert(ctx context.Context, task StoredTask, limit int) (bool, error) {
	w.note(task.Info.TaskID, "insert "+string(task.Info.Status))
	return w.MemoryStore.Insert(ctx, task, limit)
}

func (w *writeLog) Update(ctx context.Context, task StoredTask, holder string) (bool, error) {
	w.note(task.Info.TaskID, "update "+string(task.Info.Status))
	return w.MemoryStore.Update(ctx, task, holder)
}

// A task that finds a slot free at Submit is saved running, with its start
// time: its start costs no write of its own. One that waits for a slot is
// saved pending, and its start is written as it starts (or overtaken by its
// end). Either way the observers see pending, running, completed.
func TestFreeSlotTaskIsSavedRunning(t *testing.T) {
	ctx := testCtx(t)
	store := &writeLog{MemoryStore: NewMemoryStore(), writes: map[string][]string{}}
	g := newGate(false)
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"a.gate": g, "a.quick": constModule("ok")}),
		WithStore(store), WithMaxConcurrent(1), WithObserver(obs.observe))
	first, err := m.Submit(ctx, "a.gate", nil)
	require.NoError(t, err)
	g.waitStart(t)
	stored, err := store.Get(ctx, first)
	require.NoError(t, err)
	assert.Equal(t, StatusRunning, stored.Status)
	assert.False(t, stored.StartedAt.IsZero(), "saved with its start time")
	second, err := m.Submit(ctx, "a.quick", nil) // the one slot is taken
	require.NoError(t, err)
	g.open()
	for _, id := range []string{first, second} {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, info.Status)
	}
	assert.Equal(t, []string{"insert running", "update completed"}, store.of(first))
	// The second's start is written while it runs, unless its end,
	// written after it, overtook it.
	if w := store.of(second); len(w) == 2 {
		assert.Equal(t, []string{"insert pending", "update completed"}, w)
	} else {
		assert.Equal(t, []string{"insert pending", "update running", "update completed"}, w)
	}
	for _, id := range []string{first, second} {
		obs.waitFor(t, func(info TaskInfo) bool { return info.TaskID == id && info.Status == StatusCompleted })
		var seen []TaskStatus
		for _, info := range obs.of(id) {
			seen = append(seen, info.Status)
		}
		assert.Equal(t, []TaskStatus{StatusPending, StatusRunning, StatusCompleted}, seen, "task %s", id)
	}
}
