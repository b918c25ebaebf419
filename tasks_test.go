package apcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
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

	var states []TaskStatus
	for _, r := range obs.of(id) {
		states = append(states, r.Status)
	}
	assert.Equal(t, []TaskStatus{StatusPending, StatusRunning, StatusCompleted}, states)
}

func TestStatusPredicates(t *testing.T) {
	for _, s := range allStatuses {
		assert.NotEqual(t, s.IsActive(), s.IsTerminal(), s)
	}
	assert.False(t, TaskStatus("bogus").IsActive())
	assert.False(t, TaskStatus("bogus").IsTerminal())
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

type ctxKey struct{}

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

func TestTaskContextKeepsValuesButNotCancellation(t *testing.T) {
	type seen struct {
		value any
		err   error
	}
	out := make(chan seen, 1)
	release := make(chan struct{})
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		<-release
		out <- seen{ctx.Value(ctxKey{}), ctx.Err()}
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"ctx.probe": mod}))
	reqCtx, cancelReq := context.WithTimeout(context.WithValue(context.Background(), ctxKey{}, "trace-7"), time.Hour)
	id, err := m.Submit(reqCtx, "ctx.probe", nil)
	require.NoError(t, err)
	cancelReq() // the request ends before the task runs its body
	close(release)
	got := <-out
	assert.Equal(t, "trace-7", got.value)
	assert.NoError(t, got.err, "the request's cancellation must not reach the task")
	info, err := m.Wait(testCtx(t), id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

// ---- 3. admission -----------------------------------------------------------

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
		{"empty id", context.Background(), "", nil, ErrInvalidInput},
		{"upper case id", context.Background(), "Data.Job", nil, ErrInvalidInput},
		{"trailing dot", context.Background(), "data.", nil, ErrInvalidInput},
		{"unknown module", context.Background(), "data.unknown", nil, ErrModuleNotFound},
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

func TestMaxConcurrentBoundsRunningModules(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(3))
	var ids []string
	for i := 0; i < 12; i++ {
		id, err := m.Submit(ctx, "slow.job", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for i := 0; i < 3; i++ {
		g.waitStart(t)
	}
	running, err := m.List(ctx, StatusRunning)
	require.NoError(t, err)
	assert.Len(t, running, 3)
	pending, err := m.List(ctx, StatusPending)
	require.NoError(t, err)
	assert.Len(t, pending, 9)
	g.open()
	for _, id := range ids {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
	}
	assert.EqualValues(t, 3, g.peak.Load())
	assert.EqualValues(t, 12, g.calls.Load())
}

func TestStartsAreFIFO(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(1))
	var ids []string
	for i := 0; i < 20; i++ {
		id, err := m.Submit(ctx, "slow.job", map[string]any{"name": fmt.Sprint(i)})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	g.open()
	for i := 0; i < 20; i++ {
		assert.Equal(t, fmt.Sprint(i), g.waitStart(t))
	}
	for _, id := range ids {
		_, err := m.Wait(ctx, id)
		require.NoError(t, err)
	}
}

func TestMaxConcurrentZeroKeepsTasksPending(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m, err := NewTaskManager(registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(0))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
	require.NoError(t, m.Shutdown(ctx))
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.True(t, info.StartedAt.IsZero())
	assert.Zero(t, g.calls.Load(), "with no slot, nothing ever starts")
}

func TestCancelledPendingTaskNeverRuns(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	var laterCalls atomic.Int32
	later := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		laterCalls.Add(1)
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"slow.job": g, "later.job": later}), WithMaxConcurrent(1))
	first, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	queued, err := m.Submit(ctx, "later.job", nil)
	require.NoError(t, err)
	ok, err := m.Cancel(ctx, queued)
	require.NoError(t, err)
	require.True(t, ok)
	info, err := m.Status(ctx, queued)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.False(t, info.CompletedAt.IsZero())

	after, err := m.Submit(ctx, "later.job", nil) // proves the queue moved on
	require.NoError(t, err)
	g.open()
	_, err = m.Wait(ctx, first)
	require.NoError(t, err)
	_, err = m.Wait(ctx, after)
	require.NoError(t, err)
	assert.EqualValues(t, 1, laterCalls.Load(), "only the task that was not cancelled ran")
}

// ---- 6. cancel ------------------------------------------------------------------

func TestCancelRunningTask(t *testing.T) {
	ctx := testCtx(t)
	ctxEnded := make(chan error, 1)
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		<-ctx.Done()
		ctxEnded <- ctx.Err()
		return nil, ctx.Err()
	})
	started := make(chan struct{})
	obs := func(info TaskInfo) {
		if info.Status == StatusRunning {
			close(started)
		}
	}
	m := newManager(t, registry(t, map[string]Module{"watch.ctx": mod}), WithObserver(obs))
	id, err := m.Submit(ctx, "watch.ctx", nil, WithRetry(RetryConfig{MaxRetries: 3, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	<-started
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	assert.ErrorIs(t, <-ctxEnded, context.Canceled)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	require.NoError(t, m.Shutdown(ctx))
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status, "returning ctx.Err() must not send a cancelled task into a retry")
	assert.Zero(t, info.RetryCount)
}

func TestCancelledRunningTaskHoldsItsSlotUntilItReturns(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(false) // ignores ctx
	m := newManager(t, registry(t, map[string]Module{"slow.job": g, "a.b": constModule(1)}), WithMaxConcurrent(1))
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	next, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err := m.Status(ctx, next)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status, "the cancelled module still holds the only slot")
	g.open()
	info, err = m.Wait(ctx, next)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

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

func TestRetryUntilExhausted(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"always.fails": failModule("boom", &calls)}), WithObserver(obs.observe))
	cfg := RetryConfig{MaxRetries: 3, RetryDelay: 5 * time.Millisecond, BackoffMultiplier: 2, MaxRetryDelay: 12 * time.Millisecond}
	id, err := m.Submit(ctx, "always.fails", nil, WithRetry(cfg))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Equal(t, "boom", info.Error)
	assert.Equal(t, 3, info.RetryCount)
	assert.Equal(t, 3, info.MaxRetries)
	assert.Nil(t, info.Result)
	assert.EqualValues(t, 4, calls.Load(), "max_retries + 1 calls")

	var seq []string
	var started time.Time
	for _, r := range obs.of(id) {
		seq = append(seq, fmt.Sprintf("%s/%d", r.Status, r.RetryCount))
		if r.Status == StatusRunning {
			if started.IsZero() {
				started = r.StartedAt
			}
			assert.True(t, started.Equal(r.StartedAt), "started_at is kept across retries")
		}
		if r.Status == StatusPending && r.RetryCount > 0 {
			assert.True(t, started.Equal(r.StartedAt))
		}
	}
	assert.Equal(t, []string{
		"pending/0", "running/0", "pending/1", "running/1", "pending/2", "running/2",
		"pending/3", "running/3", "failed/3",
	}, seq)
}

func TestRetrySucceedsOnALaterAttempt(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	flaky := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if calls.Add(1) < 3 {
			return nil, errors.New("connection reset")
		}
		return "ok", nil
	})
	m := newManager(t, registry(t, map[string]Module{"flaky.job": flaky}))
	id, err := m.Submit(ctx, "flaky.job", nil, WithRetry(RetryConfig{MaxRetries: 5, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, "ok", info.Result)
	assert.Equal(t, 2, info.RetryCount)
	assert.Empty(t, info.Error)
}

func TestBackoffHoldsNoSlot(t *testing.T) {
	ctx := testCtx(t)
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"always.fails": failModule("boom", nil), "a.b": constModule(1)}),
		WithMaxConcurrent(1), WithObserver(obs.observe))
	flaky, err := m.Submit(ctx, "always.fails", nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Hour}))
	require.NoError(t, err)
	obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == flaky && i.RetryCount == 1 })
	info, err := m.Status(ctx, flaky)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
	assert.Equal(t, 1, info.RetryCount)

	other, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err = m.Wait(ctx, other)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "the only slot is free while the other task backs off")
	ok, err := m.Cancel(ctx, flaky)
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestPermanentErrorFailsAtOnce(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	sentinel := errors.New("bad request")
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		calls.Add(1)
		return nil, Permanent(fmt.Errorf("validate: %w", sentinel))
	})
	m := newManager(t, registry(t, map[string]Module{"strict.job": mod}))
	id, err := m.Submit(ctx, "strict.job", nil, WithRetry(RetryConfig{MaxRetries: 5, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Equal(t, "validate: bad request", info.Error)
	assert.Zero(t, info.RetryCount)
	assert.EqualValues(t, 1, calls.Load())

	wrapped := Permanent(sentinel)
	assert.ErrorIs(t, wrapped, sentinel)
	assert.NoError(t, Permanent(nil))
}

func TestTimeoutBoundsEachAttempt(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		calls.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	m := newManager(t, registry(t, map[string]Module{"hangs.job": mod}))
	id, err := m.Submit(ctx, "hangs.job", nil, WithTimeout(5*time.Millisecond),
		WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Contains(t, info.Error, "timed out after 5ms")
	assert.EqualValues(t, 2, calls.Load(), "a timed-out attempt is retried like any failure")
}

// ---- 8. panics ------------------------------------------------------------------

func TestPanickingModuleFailsItsTask(t *testing.T) {
	ctx := testCtx(t)
	logs := newLogCapture()
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) { panic("kaboom") })
	m := newManager(t, registry(t, map[string]Module{"bad.job": mod, "a.b": constModule(1)}), WithLogger(logs.logger()))
	id, err := m.Submit(ctx, "bad.job", nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.True(t, strings.HasPrefix(info.Error, "panic: kaboom"), info.Error)
	assert.Equal(t, 1, info.RetryCount, "a panic is a failed attempt like any other")
	rec := logs.waitMessage(t, slog.LevelError, "apcore: module panicked")
	assert.Contains(t, attr(rec, "stack"), "runtime/debug.Stack")

	id, err = m.Submit(ctx, "a.b", nil) // the manager keeps working
	require.NoError(t, err)
	info, err = m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

// ---- 9. queries ---------------------------------------------------------------

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

func TestResultOfCompletedTaskIsACopy(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return map[string]any{"items": []any{1.0, 2.0}, "n": 2.0}, nil
	})}))
	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	info.Result.(map[string]any)["n"] = 99.0
	info.Result.(map[string]any)["items"].([]any)[0] = "changed"
	res, err := m.Result(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"items": []any{1.0, 2.0}, "n": 2.0}, res)
	res.(map[string]any)["n"] = 7.0
	again, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 2.0, again.Result.(map[string]any)["n"])
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
	tk, ok := m.lookup(id)
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

func seed(t *testing.T, s TaskStore, infos ...TaskInfo) {
	t.Helper()
	for _, info := range infos {
		require.NoError(t, s.Save(context.Background(), info))
	}
}

func TestCleanup(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store), WithMaxConcurrent(0))
	old, recent := now().Add(-2*time.Hour), now().Add(-time.Minute)
	seed(t, store,
		TaskInfo{TaskID: "old-done", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
		TaskInfo{TaskID: "old-failed-no-completed-at", ModuleID: "a.b", Status: StatusFailed, SubmittedAt: old},
		TaskInfo{TaskID: "recent-done", ModuleID: "a.b", Status: StatusCancelled, SubmittedAt: old, CompletedAt: recent},
		TaskInfo{TaskID: "old-running", ModuleID: "a.b", Status: StatusRunning, SubmittedAt: old, StartedAt: old},
		TaskInfo{TaskID: "old-pending", ModuleID: "a.b", Status: StatusPending, SubmittedAt: old},
	)
	n, err := m.Cleanup(ctx, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	left, err := m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"recent-done", "old-running", "old-pending"}, taskIDs(left))

	n, err = m.Cleanup(ctx, -1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err = m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"old-running", "old-pending"}, taskIDs(left))
	count, err := m.TaskCount(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, count)
}

func TestReapDeletesOnlyExpiredTerminalRecords(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store))
	cut := now()
	seed(t, store,
		TaskInfo{TaskID: "before", ModuleID: "a.b", Status: StatusFailed, SubmittedAt: cut, CompletedAt: cut.Add(-time.Microsecond), Error: "x"},
		TaskInfo{TaskID: "at-cutoff", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: cut, CompletedAt: cut},
		TaskInfo{TaskID: "active", ModuleID: "a.b", Status: StatusRunning, SubmittedAt: cut.Add(-time.Hour)},
	)
	n, err := m.Reap(ctx, cut)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err := m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"at-cutoff", "active"}, taskIDs(left))
}

// ---- 10. reaper -----------------------------------------------------------------

func TestReaperSweepsAndLogs(t *testing.T) {
	store := newHookStore()
	logs := newLogCapture()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store), WithLogger(logs.logger()))
	old := now().Add(-time.Hour)
	seed(t, store,
		TaskInfo{TaskID: "expired", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
		TaskInfo{TaskID: "active", ModuleID: "a.b", Status: StatusPending, SubmittedAt: old},
	)
	h, err := m.StartReaper(ReaperConfig{TTL: time.Minute, SweepInterval: time.Millisecond})
	require.NoError(t, err)
	_, err = m.StartReaper(ReaperConfig{})
	require.ErrorIs(t, err, ErrReaperAlreadyRunning)

	rec := logs.waitMessage(t, slog.LevelDebug, "apcore: reaper deleted expired tasks")
	assert.Equal(t, "1", attr(rec, "count"))
	_, err = store.Get(context.Background(), "expired")
	require.ErrorIs(t, err, ErrTaskNotFound)
	_, err = store.Get(context.Background(), "active")
	require.NoError(t, err, "the reaper never deletes an active task")

	store.mu.Lock()
	store.expiredErr = errors.New("connection refused")
	store.mu.Unlock()
	rec = logs.waitMessage(t, slog.LevelWarn, "apcore: reaper sweep failed; will retry at the next sweep")
	assert.Contains(t, attr(rec, "error"), "connection refused")

	require.NoError(t, h.Stop(context.Background()))
	require.NoError(t, h.Stop(context.Background()), "Stop is idempotent")
	select {
	case <-h.done:
	default:
		t.Fatal("Stop returned before the sweeper ended")
	}
	h2, err := m.StartReaper(ReaperConfig{SweepInterval: time.Hour})
	require.NoError(t, err, "a stopped reaper may be replaced")
	require.NoError(t, m.Shutdown(context.Background()))
	select {
	case <-h2.done:
	default:
		t.Fatal("Shutdown must stop the reaper")
	}
	_, err = m.StartReaper(ReaperConfig{})
	require.ErrorIs(t, err, ErrManagerClosed)
}

func TestReaperRejectsNegativeConfig(t *testing.T) {
	m := newManager(t, registry(t, nil))
	_, err := m.StartReaper(ReaperConfig{TTL: -1})
	require.ErrorIs(t, err, ErrInvalidInput)
	_, err = m.StartReaper(ReaperConfig{SweepInterval: -1})
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.Equal(t, ReaperConfig{TTL: time.Hour, SweepInterval: 5 * time.Minute}, DefaultReaperConfig())
}

// ---- 11. shutdown ---------------------------------------------------------------

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

func TestNewTaskManagerValidates(t *testing.T) {
	var nilFunc ExecutorFunc
	cases := []struct {
		name string
		exec Executor
		opts []Option
	}{
		{"nil executor", nil, nil},
		{"nil executor func", nilFunc, nil},
		{"negative concurrency", NewRegistry(), []Option{WithMaxConcurrent(-1)}},
		{"negative tasks", NewRegistry(), []Option{WithMaxTasks(-1)}},
		{"nil store", NewRegistry(), []Option{WithStore(nil)}},
		{"nil option", NewRegistry(), []Option{nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewTaskManager(tc.exec, tc.opts...)
			require.ErrorIs(t, err, ErrInvalidInput)
			assert.Equal(t, CodeInvalidInput, CodeOf(err))
			assert.Nil(t, m)
		})
	}
	m := newManager(t, NewRegistry(), WithLogger(nil))
	assert.Equal(t, "InMemoryTaskStore", m.Store().Name())
}

func TestErrorMatchingByCode(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	err := fmt.Errorf("saving: %w", &Error{Code: CodeTaskStoreUnavailable, Message: "task store: save", Cause: cause})
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	assert.ErrorIs(t, err, cause)
	assert.NotErrorIs(t, err, ErrTaskNotFound)
	assert.Equal(t, CodeTaskStoreUnavailable, CodeOf(err))
	assert.Equal(t, ErrorCode(""), CodeOf(cause))
	assert.Equal(t, ErrorCode(""), CodeOf(nil))
	assert.Equal(t, "saving: task store: save: dial tcp: refused", err.Error())
	assert.Equal(t, "TASK_NOT_FOUND", ErrTaskNotFound.Error())
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	require.NoError(t, r.Register("a.b", constModule(1)))
	require.ErrorIs(t, r.Register("a.b", constModule(2)), ErrInvalidInput)
	require.ErrorIs(t, r.Register("A", constModule(2)), ErrInvalidInput)
	require.ErrorIs(t, r.Register("a.c", nil), ErrInvalidInput)
	var nilFunc ModuleFunc
	require.ErrorIs(t, r.Register("a.c", nilFunc), ErrInvalidInput)
	assert.True(t, r.HasModule("a.b"))
	assert.False(t, r.HasModule("a.c"))
	v, err := r.Call(context.Background(), "a.b", nil)
	require.NoError(t, err)
	assert.Equal(t, 1, v)
	_, err = r.Call(context.Background(), "a.c", nil)
	require.ErrorIs(t, err, ErrModuleNotFound)
}

// ---- 12. wire format ----------------------------------------------------------------

func TestTaskInfoJSON(t *testing.T) {
	sub := time.Date(2023, 11, 14, 22, 13, 20, 123456000, time.UTC)
	info := TaskInfo{TaskID: "t1", ModuleID: "a.b", Status: StatusPending, SubmittedAt: sub, MaxRetries: 2}
	b, err := json.Marshal(info)
	require.NoError(t, err)
	assert.JSONEq(t, `{"task_id":"t1","module_id":"a.b","status":"pending","submitted_at":1700000000.123456,
		"started_at":null,"completed_at":null,"result":null,"error":null,"retry_count":0,"max_retries":2}`, string(b))

	info.Status, info.StartedAt, info.CompletedAt, info.Error, info.RetryCount = StatusFailed, sub.Add(time.Second), sub.Add(2*time.Second), "boom", 2
	b, err = json.Marshal(info)
	require.NoError(t, err)
	var back TaskInfo
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, info.TaskID, back.TaskID)
	assert.True(t, info.SubmittedAt.Equal(back.SubmittedAt))
	assert.True(t, info.StartedAt.Equal(back.StartedAt))
	assert.True(t, info.CompletedAt.Equal(back.CompletedAt))
	assert.Equal(t, "boom", back.Error)
	assert.Equal(t, 2, back.RetryCount)

	// a slice of records, through the value receiver
	b, err = json.Marshal([]TaskInfo{info})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"status":"failed"`)
}

func TestTaskInfoJSONRejectsGarbage(t *testing.T) {
	bad := []string{
		``, `null`, `[]`, `"x"`, `{}`, `{"task_id":1}`,
		`{"task_id":"t","module_id":"m","status":"paused","submitted_at":1}`,
		`{"task_id":"t","module_id":"m","status":"pending"}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":"soon"}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1e300}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"started_at":-1e20}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"retry_count":-1}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"max_retries":1.5}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"error":3}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1`,
	}
	for _, in := range bad {
		var info TaskInfo
		info.TaskID = "kept"
		err := info.UnmarshalJSON([]byte(in))
		assert.Error(t, err, in)
		assert.Equal(t, "kept", info.TaskID, "a failed decode leaves the record alone: %s", in)
	}
}

// The module's context is the manager's own type; contexts derived from it
// must see a cancel at once, and context.AfterFunc must keep its contract.
func TestTaskContextPropagatesToDerivedContexts(t *testing.T) {
	ctx := testCtx(t)
	type seen struct {
		child, timeout, after error
		stopped               bool
		deadline              bool
	}
	out := make(chan seen, 1)
	started := make(chan struct{})
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		child, cancelChild := context.WithCancel(ctx)
		defer cancelChild()
		withTimeout, cancelTimeout := context.WithTimeout(ctx, time.Hour)
		defer cancelTimeout()
		stopMe := context.AfterFunc(ctx, func() { t.Error("a stopped AfterFunc ran") })
		ran := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ran) })
		var s seen
		s.stopped = stopMe()
		_, s.deadline = ctx.Deadline()
		close(started)
		<-child.Done()
		<-withTimeout.Done()
		<-ran
		s.child, s.timeout, s.after = context.Cause(child), withTimeout.Err(), ctx.Err()
		out <- s
		return nil, ctx.Err()
	})
	m := newManager(t, registry(t, map[string]Module{"derive.ctx": mod}))
	id, err := m.Submit(ctx, "derive.ctx", nil)
	require.NoError(t, err)
	<-started
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	s := <-out
	assert.True(t, s.stopped, "stop before the cancel reports true")
	assert.False(t, s.deadline, "a task has no deadline of its own")
	assert.ErrorIs(t, s.child, context.Canceled)
	assert.ErrorIs(t, s.timeout, context.Canceled)
	assert.ErrorIs(t, s.after, context.Canceled)

	// AfterFunc on an already cancelled context runs at once.
	var tc taskCtx
	tc.parent = context.Background()
	tc.cancel()
	tc.cancel() // idempotent
	ran := make(chan struct{})
	stop := tc.AfterFunc(func() { close(ran) })
	<-ran
	assert.False(t, stop())
	assert.ErrorIs(t, tc.Err(), context.Canceled)
	<-tc.Done()
	assert.Equal(t, "apcore.taskContext", tc.String())
}

// Records a crashed process left active are failed by FailStale, which
// frees their places; this manager's own tasks and fresh ones are left alone.
func TestFailStale(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithStore(store), WithMaxTasks(3))
	old := now().Add(-2 * time.Hour)
	seed(t, store,
		TaskInfo{TaskID: "crashed-running", ModuleID: "slow.job", Status: StatusRunning, SubmittedAt: old, StartedAt: old},
		TaskInfo{TaskID: "crashed-pending", ModuleID: "slow.job", Status: StatusPending, SubmittedAt: old},
		TaskInfo{TaskID: "done-long-ago", ModuleID: "slow.job", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
	)
	mine, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	_, err = m.Submit(ctx, "slow.job", nil)
	require.ErrorIs(t, err, ErrTaskLimitExceeded, "the stale records hold two of the three places")

	n, err := m.FailStale(ctx, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	for _, id := range []string{"crashed-running", "crashed-pending"} {
		info, err := m.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusFailed, info.Status, id)
		assert.Contains(t, info.Error, "abandoned")
		assert.False(t, info.CompletedAt.IsZero())
	}
	info, err := m.Status(ctx, "done-long-ago")
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "terminal records are left alone")
	info, err = m.Status(ctx, mine)
	require.NoError(t, err)
	assert.Equal(t, StatusRunning, info.Status, "this manager's own task is left alone, however old")

	fresh, err := m.Submit(ctx, "slow.job", nil) // a place is free again
	require.NoError(t, err)
	n, err = m.FailStale(ctx, 0)
	require.NoError(t, err)
	assert.Zero(t, n, "only records no manager here runs are failed")
	_, err = m.FailStale(ctx, -1)
	require.ErrorIs(t, err, ErrInvalidInput)
	g.open()
	for _, id := range []string{mine, fresh} {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
	}
}
