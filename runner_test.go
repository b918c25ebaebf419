package apcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The protocol's newest text: a malformed or unknown module id is accepted
// by Submit; the task fails at once, with a code, and is never retried.
func TestBadModuleIDIsAcceptedThenFails(t *testing.T) {
	var calls atomic.Int32
	reg := registry(t, map[string]Module{"data.job": failModule("x", &calls)})
	var raw atomic.Int32
	plain := ExecutorFunc(func(ctx context.Context, id string, in map[string]any) (any, error) {
		raw.Add(1)
		return nil, newError(CodeModuleNotFound, "Module not found: %s", id)
	})
	retry := WithRetry(RetryConfig{MaxRetries: 3, RetryDelay: time.Millisecond})
	cases := []struct {
		name, module string
		exec         Executor
		code         ErrorCode
		message      string
	}{
		{"empty id", "", reg, CodeInvalidInput, "module id is empty"},
		{"upper case id", "Data.Job", reg, CodeInvalidInput, `module id "Data.Job"`},
		{"trailing dot", "data.", reg, CodeInvalidInput, "ends with '.'"},
		{"unknown to a resolver", "data.unknown", reg, CodeModuleNotFound, "Module not found: data.unknown"},
		{"unknown to a plain executor", "data.unknown", plain, CodeModuleNotFound, "Module not found: data.unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := newManager(t, tc.exec)
			id, err := m.Submit(ctx, tc.module, nil, retry)
			require.NoError(t, err)
			require.NotEmpty(t, id)
			info, err := m.Wait(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, StatusFailed, info.Status)
			assert.Equal(t, tc.code, info.ErrorCode)
			assert.Contains(t, info.Error, tc.message)
			assert.Zero(t, info.RetryCount, "never retried")
			assert.Equal(t, tc.module, info.ModuleID)
		})
	}
	assert.Zero(t, calls.Load(), "the registered module is never called")
	assert.Equal(t, int32(1), raw.Load(), "a plain executor is asked once, not once per retry")
}

// Each way an attempt can fail leaves its code in the failed record.
func TestFailedRecordCarriesErrorCode(t *testing.T) {
	mods := map[string]Module{
		"plain.error": failModule("boom", nil),
		"typed.error": ModuleFunc(func(context.Context, map[string]any) (any, error) {
			return nil, Permanent(&Error{Code: CodeTaskLimitExceeded, Message: "downstream is full"})
		}),
		"panics": ModuleFunc(func(context.Context, map[string]any) (any, error) { panic("oh no") }),
		"slow": ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}),
	}
	want := map[string]ErrorCode{
		"plain.error": CodeModuleExecuteError,
		"typed.error": CodeTaskLimitExceeded,
		"panics":      CodeModuleExecuteError,
		"slow":        CodeModuleTimeout,
	}
	ctx := testCtx(t)
	m := newManager(t, registry(t, mods))
	for module, code := range want {
		id, err := m.Submit(ctx, module, nil, WithTimeout(20*time.Millisecond))
		require.NoError(t, err)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusFailed, info.Status, module)
		assert.Equal(t, code, info.ErrorCode, module)
		stored, err := m.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, code, stored.ErrorCode, "%s: the store keeps the code", module)
	}
	id, err := m.Submit(ctx, "plain.error", nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 1, info.RetryCount)
	assert.Equal(t, CodeModuleExecuteError, info.ErrorCode)
}

// A module that calls runtime.Goexit (what t.FailNow does) fails its task
// and gives its slot back: with one slot, the next task still runs.
func TestGoexitFailsTaskAndFreesSlot(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	mods := map[string]Module{
		"goexit": ModuleFunc(func(context.Context, map[string]any) (any, error) {
			calls.Add(1)
			runtime.Goexit()
			return nil, nil
		}),
		"ok": constModule("fine"),
	}
	m := newManager(t, registry(t, mods), WithMaxConcurrent(1))
	first, err := m.Submit(ctx, "goexit", nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond}))
	require.NoError(t, err)
	second, err := m.Submit(ctx, "ok", nil)
	require.NoError(t, err)

	info, err := m.Wait(ctx, first)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, info.Status)
	assert.Equal(t, CodeModuleExecuteError, info.ErrorCode)
	assert.Contains(t, info.Error, "runtime.Goexit")
	assert.Equal(t, int32(2), calls.Load(), "a Goexit is a failed attempt like any other: retried")

	info, err = m.Wait(ctx, second)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "the slot came back")
}

// A result that holds itself, or nests absurdly deep, fails the task instead
// of overflowing the stack when it is copied.
func TestCyclicOrDeepResultFailsTask(t *testing.T) {
	ctx := testCtx(t)
	mods := map[string]Module{
		"cyclic.map": ModuleFunc(func(context.Context, map[string]any) (any, error) {
			m := map[string]any{}
			m["self"] = m
			return m, nil
		}),
		"cyclic.slice": ModuleFunc(func(context.Context, map[string]any) (any, error) {
			s := []any{nil}
			s[0] = s
			return s, nil
		}),
		"deep": ModuleFunc(func(context.Context, map[string]any) (any, error) {
			var v any = "leaf"
			for range maxResultDepth + 5 {
				v = []any{v}
			}
			return v, nil
		}),
	}
	m := newManager(t, registry(t, mods))
	for module := range mods {
		id, err := m.Submit(ctx, module, nil, WithRetry(RetryConfig{MaxRetries: 2, RetryDelay: time.Millisecond}))
		require.NoError(t, err)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusFailed, info.Status, module)
		assert.Equal(t, CodeInvalidInput, info.ErrorCode, module)
		assert.Contains(t, info.Error, "cannot be kept", module)
		assert.Zero(t, info.RetryCount, "%s: the same module would return the same result: no retry", module)
	}
}

// Cancel means the context is done, even for a task waiting out a retry
// backoff whose earlier attempt left a helper goroutine on the context.
func TestCancelInBackoffCancelsContext(t *testing.T) {
	ctx := testCtx(t)
	helperSaw := make(chan error, 1)
	attempts := make(chan struct{}, 4)
	var once sync.Once
	mod := ModuleFunc(func(taskCtx context.Context, _ map[string]any) (any, error) {
		once.Do(func() {
			go func() {
				<-taskCtx.Done()
				helperSaw <- taskCtx.Err()
			}()
		})
		attempts <- struct{}{}
		return nil, errors.New("try again")
	})
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"flaky": mod}), WithObserver(obs.observe))
	id, err := m.Submit(ctx, "flaky", nil, WithRetry(RetryConfig{MaxRetries: 5, RetryDelay: time.Hour}))
	require.NoError(t, err)
	<-attempts
	obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.Status == StatusPending && i.RetryCount == 1 })
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	select {
	case err := <-helperSaw:
		assert.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the helper of the first attempt never saw the cancel")
	}
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
}

// slowSaveStore delays the save of a new record, so that the record sits in
// the store for a while before Submit returns.
type slowSaveStore struct {
	*MemoryStore
	saving chan struct{} // receives when a new record is in the store
	resume chan struct{}
}

func (s *slowSaveStore) Insert(ctx context.Context, task StoredTask, limit int) (bool, error) {
	ok, err := s.MemoryStore.Insert(ctx, task, limit)
	if ok {
		s.saving <- struct{}{}
		<-s.resume
	}
	return ok, err
}

// FailStale never touches this manager's own tasks, not even one whose
// record is in the store before Submit has returned.
func TestFailStaleSparesOwnNewTask(t *testing.T) {
	ctx := testCtx(t)
	store := &slowSaveStore{MemoryStore: NewMemoryStore(), saving: make(chan struct{}), resume: make(chan struct{})}
	m := newManager(t, registry(t, map[string]Module{"ok": constModule(1)}), WithStore(store), WithMaxConcurrent(0))
	submitted := make(chan string, 1)
	go func() {
		id, err := m.Submit(ctx, "ok", nil)
		assert.NoError(t, err)
		submitted <- id
	}()
	<-store.saving
	n, err := m.FailStale(ctx, 0)
	require.NoError(t, err)
	assert.Zero(t, n, "the new task is this manager's own")
	close(store.resume)
	id := <-submitted
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
}

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

	obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.Status.IsTerminal() }) // Wait wakes before the observer's last call
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
