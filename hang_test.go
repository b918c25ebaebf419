package apcore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Nothing can hang the manager: a store that hangs, an observer that calls
// back into the manager, a lease that can no longer be renewed.

// hangMode is how a hangStore call behaves.
type hangMode int

const (
	answer   hangMode = iota // as the MemoryStore does
	hangCtx                  // blocks until its context ends (a hung connection with a driver that honours contexts)
	hangDeaf                 // blocks until the test releases it, whatever its context says
)

// hangStore is a MemoryStore behind a type the manager does not know (so
// its calls are timed and guarded), whose chosen calls hang. It is a plain
// store with Count and SaveIf, not a SharedStore.
type hangStore struct {
	inner   *MemoryStore
	mu      sync.Mutex
	modes   map[string]hangMode
	when    func(op string, info *TaskInfo) bool // nil: every call of a hanging op
	release chan struct{}
	entered chan string
}

func newHangStore() *hangStore {
	return &hangStore{inner: NewMemoryStore(), modes: map[string]hangMode{}, release: make(chan struct{}), entered: make(chan string, 1024)}
}

func (h *hangStore) set(op string, mode hangMode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.modes[op] = mode
}

// stop makes every call answer, and releases those that hang deaf.
func (h *hangStore) stop() {
	h.mu.Lock()
	h.modes = map[string]hangMode{}
	h.mu.Unlock()
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

func (h *hangStore) hang(ctx context.Context, op string, info *TaskInfo) error {
	h.mu.Lock()
	mode, when := h.modes[op], h.when
	h.mu.Unlock()
	if mode == answer || (when != nil && !when(op, info)) {
		return nil
	}
	select {
	case h.entered <- op:
	default:
	}
	switch mode {
	case hangCtx:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.release:
			return nil
		}
	default:
		<-h.release
		return nil
	}
}

func (h *hangStore) Save(ctx context.Context, t TaskInfo) error {
	if err := h.hang(ctx, "Save", &t); err != nil {
		return err
	}
	return h.inner.Save(ctx, t)
}
func (h *hangStore) SaveIf(ctx context.Context, t TaskInfo, from ...TaskStatus) (bool, error) {
	if err := h.hang(ctx, "SaveIf", &t); err != nil {
		return false, err
	}
	return h.inner.SaveIf(ctx, t, from...)
}
func (h *hangStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	if err := h.hang(ctx, "Get", nil); err != nil {
		return TaskInfo{}, err
	}
	return h.inner.Get(ctx, id)
}
func (h *hangStore) List(ctx context.Context, s TaskStatus) ([]TaskInfo, error) {
	if err := h.hang(ctx, "List", nil); err != nil {
		return nil, err
	}
	return h.inner.List(ctx, s)
}
func (h *hangStore) Delete(ctx context.Context, id string) error { return h.inner.Delete(ctx, id) }
func (h *hangStore) ListExpired(ctx context.Context, b time.Time) ([]TaskInfo, error) {
	return h.inner.ListExpired(ctx, b)
}
func (h *hangStore) Count(ctx context.Context, s ...TaskStatus) (int, error) {
	if err := h.hang(ctx, "Count", nil); err != nil {
		return 0, err
	}
	return h.inner.Count(ctx, s...)
}
func (h *hangStore) Name() string { return "HangStore" }

// pagedHangStore is a hangStore with the Pager capability, whose ListPage
// hangs as its List does.
type pagedHangStore struct{ *hangStore }

func (h pagedHangStore) ListPage(ctx context.Context, opts ListOptions) (TaskPage, error) {
	if err := h.hang(ctx, "ListPage", nil); err != nil {
		return TaskPage{}, err
	}
	return h.inner.ListPage(ctx, opts)
}

// A Pager whose ListPage hangs, deaf to its context: ListPage returns by
// the caller's deadline, and works again once the store answers.
func TestDeafPagerHangsNoCall(t *testing.T) {
	h := newHangStore()
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(pagedHangStore{h}), WithStoreTimeout(time.Second))
	require.NoError(t, err)
	ctx := testCtx(t)
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	_, err = m.Wait(ctx, id)
	require.NoError(t, err)
	h.set("ListPage", hangDeaf)
	err = within(t, "ListPage", 200*time.Millisecond, func(ctx context.Context) error {
		_, err := m.ListPage(ctx, ListOptions{Newest: true})
		return err
	})
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	h.stop()
	page, err := m.ListPage(ctx, ListOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{id}, idsOf(page.Tasks))
	require.NoError(t, m.Shutdown(ctx))
}

// within runs call with a context of d and fails the test unless it
// returns within d plus a margin.
func within(t *testing.T, name string, d time.Duration, call func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	begun := time.Now()
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		took := time.Since(begun)
		assert.Less(t, took, d+500*time.Millisecond, "%s took %v with a %v deadline", name, took, d)
		return err
	case <-time.After(d + 2*time.Second):
		t.Errorf("%s was still blocked %v after its %v deadline", name, 2*time.Second, d)
		return nil
	}
}

// A plain store whose terminal SaveIf hangs (honouring its context): every
// caller's call returns by its deadline, and the outcome is not lost.
func TestHungTerminalWriteHangsNoCall(t *testing.T) {
	h := newHangStore()
	h.when = func(op string, info *TaskInfo) bool { return info != nil && info.Status.IsTerminal() }
	h.set("SaveIf", hangCtx)
	g := newGate(true)
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": g}), WithStore(h), WithStoreTimeout(time.Second))
	require.NoError(t, err)
	ctx := testCtx(t)
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	other, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	g.open()
	recvOp(t, h.entered, "SaveIf")

	const d = 200 * time.Millisecond
	within(t, "Status", d, func(ctx context.Context) error { _, err := m.Status(ctx, id); return err })
	err = within(t, "Wait", d, func(ctx context.Context) error { _, err := m.Wait(ctx, id); return err })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	within(t, "Cancel", d, func(ctx context.Context) error { _, err := m.Cancel(ctx, other); return err })
	within(t, "List", d, func(ctx context.Context) error { _, err := m.List(ctx, ""); return err })
	err = within(t, "Shutdown", d, func(ctx context.Context) error { return m.Shutdown(ctx) })
	assert.Error(t, err, "Shutdown could not wait for everything")

	// The store answers again: the outcomes land, nothing is lost.
	h.stop()
	require.NoError(t, m.Shutdown(ctx))
	completesInStore(t, m, h, id)
}

// completesInStore checks that task id ends completed, for Wait and in h.
func completesInStore(t *testing.T, m *TaskManager, h *hangStore, id string) {
	t.Helper()
	ctx := testCtx(t)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	require.Eventually(t, func() bool {
		stored, err := h.inner.Get(ctx, id)
		return err == nil && stored.Status == StatusCompleted
	}, 5*time.Second, 10*time.Millisecond, "the completed record reaches the store")
}

// A store whose start write hangs, deaf to its context: a task that waited
// for a slot runs without waiting for that write, the caller's calls
// return by their deadlines meanwhile, and once the store answers the
// task ends completed, having run once.
func TestHungStartWriteHangsNoCall(t *testing.T) {
	h := newHangStore()
	h.when = func(op string, info *TaskInfo) bool { return info != nil && info.Status == StatusRunning }
	gate, finish, ran := make(chan struct{}), make(chan struct{}), make(chan struct{}, 2)
	var runs atomic.Int32
	m, err := NewTaskManager(registry(t, map[string]Module{
		"a.hold": ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) { <-gate; return 1, nil }),
		"a.job": ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
			runs.Add(1)
			ran <- struct{}{}
			<-finish
			return 2, nil
		}),
	}), WithStore(h), WithMaxConcurrent(1), WithStoreTimeout(time.Second))
	require.NoError(t, err)
	ctx := testCtx(t)
	first, err := m.Submit(ctx, "a.hold", nil) // takes the one slot: saved running
	require.NoError(t, err)
	h.set("Save", hangDeaf)
	h.set("SaveIf", hangDeaf)
	second, err := m.Submit(ctx, "a.job", nil) // waits for the slot: saved pending
	require.NoError(t, err)
	close(gate)
	select {
	case <-ran:
	case <-ctx.Done():
		t.Fatal("the task waited for its start's write")
	}
	select {
	case op := <-h.entered:
		require.Equal(t, "SaveIf", op, "the start write is what hangs")
	case <-ctx.Done():
		t.Fatal("the start write was not made")
	}

	// While the start write hangs, and once the module has returned (its
	// end waits behind that write), the caller's calls return in time.
	const d = 200 * time.Millisecond
	for round := range 2 {
		within(t, "Status", d, func(ctx context.Context) error { _, err := m.Status(ctx, second); return err })
		err := within(t, "Wait", d, func(ctx context.Context) error { _, err := m.Wait(ctx, second); return err })
		assert.ErrorIs(t, err, context.DeadlineExceeded, "round %d", round)
		within(t, "List", d, func(ctx context.Context) error { _, err := m.List(ctx, ""); return err })
		if round == 0 {
			close(finish)
		}
	}

	h.stop()
	for _, id := range []string{first, second} {
		completesInStore(t, m, h, id)
	}
	require.NoError(t, m.Shutdown(ctx))
	assert.Equal(t, int32(1), runs.Load(), "the task ran once")
}

// hungSubmit makes a manager over a plain store whose save of a running
// record hangs, deaf to its context, and Submits a task that finds its
// slot free, so is saved running: it returns once that save hangs, with
// the task and the Submit's error to come.
func hungSubmit(t *testing.T) (*hangStore, *TaskManager, *task, <-chan error) {
	h := newHangStore()
	h.when = func(op string, info *TaskInfo) bool { return info != nil && info.Status == StatusRunning }
	h.set("Save", hangDeaf)
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(h), WithStoreTimeout(time.Second))
	require.NoError(t, err)
	ctx := testCtx(t)
	submitErr := make(chan error, 1)
	go func() { _, err := m.Submit(ctx, "a.job", nil); submitErr <- err }()
	select {
	case <-h.entered:
	case <-ctx.Done():
		t.Fatal("the Submit did not save")
	}
	tasks := m.tasks.values()
	require.Len(t, tasks, 1)
	return h, m, tasks[0], submitErr
}

// awaitCancelDecided waits until x's cancel is decided (by Shutdown here).
func awaitCancelDecided(t *testing.T, x *task) {
	t.Helper()
	awaitTask(t, x, func(x *task) bool { return x.state != stateQueued })
}

// awaitTask waits until cond holds for x, read under x's lock.
func awaitTask(t *testing.T, x *task, cond func(*task) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		return cond(x)
	}, 5*time.Second, time.Millisecond)
}

// A Submit of a task due later that waited for another Submit's save while
// Shutdown began, and was saved after Shutdown had cancelled what the
// table held, is refused and cancelled: Shutdown does not wait for its
// timer, and no pending record is left behind.
func TestDelayedSubmitRacingShutdown(t *testing.T) {
	h, m, first, firstErr := hungSubmit(t) // holding the Submits after it
	ctx := testCtx(t)
	laterErr, shutdownErr := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := m.Submit(ctx, "a.job", nil, WithRunAt(time.Now().Add(time.Hour)))
		laterErr <- err
	}()
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		shutdownErr <- m.Shutdown(sctx)
	}()
	awaitCancelDecided(t, first)
	h.stop()
	assert.ErrorIs(t, <-firstErr, ErrManagerClosed)
	assert.ErrorIs(t, <-laterErr, ErrManagerClosed, "the task due later is refused")
	require.NoError(t, <-shutdownErr, "Shutdown waits for no timer")
	pending, err := h.inner.List(ctx, StatusPending)
	require.NoError(t, err)
	assert.Empty(t, pending, "no record is left pending")
}

// A Shutdown that cancels a task while its Submit's save hangs: the cancel
// is written after that save, not before it (a plain Save would have put
// the running record back over the cancelled one, for good).
func TestCancelDuringSubmitSave(t *testing.T) {
	h, m, x, submitErr := hungSubmit(t)
	ctx := testCtx(t)
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- m.Shutdown(ctx) }()
	awaitCancelDecided(t, x)
	// Before the fix the cancel's write went straight on and the task left
	// the table; give it the chance to, then let the save land.
	deadline := time.Now().Add(200 * time.Millisecond)
	for m.hasTask(x) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	h.stop()
	assert.ErrorIs(t, <-submitErr, ErrManagerClosed)
	require.NoError(t, <-shutdownErr)
	stored, err := h.inner.Get(ctx, x.id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, stored.Status, "the cancel is the record's last write")
}

// A store that ignores its context entirely: the caller's calls still
// return by their deadlines.
func TestDeafStoreHangsNoCall(t *testing.T) {
	h := newHangStore()
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(h), WithStoreTimeout(time.Second))
	require.NoError(t, err)
	ctx := testCtx(t)
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	_, err = m.Wait(ctx, id)
	require.NoError(t, err)
	for _, op := range []string{"Get", "List", "Save", "Count", "SaveIf"} {
		h.set(op, hangDeaf)
	}
	const d = 200 * time.Millisecond
	err = within(t, "Status", d, func(ctx context.Context) error { _, err := m.Status(ctx, id); return err })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	within(t, "Wait", d, func(ctx context.Context) error { _, err := m.Wait(ctx, "no-such-task"); return err })
	within(t, "Cancel", d, func(ctx context.Context) error { _, err := m.Cancel(ctx, id); return err })
	within(t, "List", d, func(ctx context.Context) error { _, err := m.List(ctx, ""); return err })
	err = within(t, "ListPage", d, func(ctx context.Context) error { _, err := m.ListPage(ctx, ListOptions{}); return err })
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	err = within(t, "Submit", d, func(ctx context.Context) error { _, err := m.Submit(ctx, "a.job", nil); return err })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	err = within(t, "a second Submit, behind the first", d, func(ctx context.Context) error { _, err := m.Submit(ctx, "a.job", nil); return err })
	assert.Error(t, err)
	h.stop()
	require.NoError(t, m.Shutdown(ctx))
	// A Submit that gave up is not left pending: the store saved it late,
	// and it was cancelled.
	all, err := h.inner.List(ctx, "")
	require.NoError(t, err)
	for _, info := range all {
		assert.True(t, info.Status.IsTerminal(), "task %s is %s", info.TaskID, info.Status)
	}
}

func recvOp(t *testing.T, ch chan string, op string) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case got := <-ch:
			if got == op {
				return
			}
		case <-deadline:
			t.Fatalf("no %s call hung", op)
		}
	}
}

// An observer that calls the manager about the task it is told about, and
// cancels it, deadlocks nothing.
func TestReentrantObserver(t *testing.T) {
	for _, how := range []string{"WithObserver", "Subscribe"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			var mgr atomic.Pointer[TaskManager]
			var statuses, cancels atomic.Int32
			observe := func(info TaskInfo) {
				m := mgr.Load()
				if m == nil {
					return
				}
				if _, err := m.Status(ctx, info.TaskID); err == nil {
					statuses.Add(1)
				}
				if info.Status == StatusRunning {
					if ok, _ := m.Cancel(ctx, info.TaskID); ok {
						cancels.Add(1)
					}
				}
			}
			g := newGate(true)
			var opts []Option
			if how == "WithObserver" {
				opts = append(opts, WithObserver(observe))
			}
			m, err := NewTaskManager(registry(t, map[string]Module{"a.job": g}), opts...)
			require.NoError(t, err)
			if how == "Subscribe" {
				_, err := m.Subscribe(observe)
				require.NoError(t, err)
			}
			mgr.Store(m)
			id, err := m.Submit(ctx, "a.job", nil)
			require.NoError(t, err)
			var info TaskInfo
			within(t, "Wait", 3*time.Second, func(ctx context.Context) error {
				var err error
				info, err = m.Wait(ctx, id)
				return err
			})
			assert.Equal(t, StatusCancelled, info.Status)
			assert.Equal(t, int32(1), cancels.Load())
			assert.GreaterOrEqual(t, statuses.Load(), int32(3), "pending, running and cancelled each read back")
			err = within(t, "Shutdown", 2*time.Second, func(ctx context.Context) error { return m.Shutdown(ctx) })
			assert.NoError(t, err)
		})
	}
}

// Wait on a resumable task that is handed back (its attempt failed and it
// is retried from the store) follows it to its end instead of panicking.
func TestWaitFollowsAHandedBackTask(t *testing.T) {
	ctx := testCtx(t)
	var attempts atomic.Int32
	release := make(chan struct{})
	flaky := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if attempts.Add(1) == 1 {
			<-release
			return nil, errors.New("first attempt fails")
		}
		return "ok", nil
	})
	m := newManager(t, registry(t, map[string]Module{"a.job": flaky}))
	id, err := m.Submit(ctx, "a.job", nil, WithResumable(), WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: 10 * time.Millisecond}))
	require.NoError(t, err)
	h, ok := m.tasks.load(id)
	require.True(t, ok)
	waited := make(chan TaskInfo, 1)
	go func() {
		info, err := m.Wait(ctx, id)
		assert.NoError(t, err)
		waited <- info
	}()
	waitOnHandle(t, h)
	close(release)
	select {
	case info := <-waited:
		assert.Equal(t, StatusCompleted, info.Status)
		assert.Equal(t, 1, info.RetryCount)
	case <-time.After(testTimeout):
		t.Fatal("Wait did not return")
	}
}

// waitOnHandle returns once a Wait is waiting on h.
func waitOnHandle(t *testing.T, h *task) {
	t.Helper()
	awaitTask(t, h, func(h *task) bool { return h.done != nil })
}

// A Wait on a running resumable task that Drain hands back to the store
// (its context ran out while the module ran) follows the task there, and
// returns when another manager has run it to its end.
func TestWaitFollowsATaskDrainHandsBack(t *testing.T) {
	ctx := testCtx(t)
	var attempts atomic.Int32
	started := make(chan struct{}, 1)
	job := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if attempts.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done() // the first attempt runs until Drain cuts it short
			return nil, ctx.Err()
		}
		return "ok", nil
	})
	store := NewMemoryStore()
	a, err := NewTaskManager(registry(t, map[string]Module{"a.job": job}), WithStore(store))
	require.NoError(t, err)
	id, err := a.Submit(ctx, "a.job", nil, WithResumable())
	require.NoError(t, err)
	<-started
	h, ok := a.tasks.load(id)
	require.True(t, ok)
	waited := make(chan TaskInfo, 1)
	go func() {
		info, err := a.Wait(ctx, id)
		assert.NoError(t, err)
		waited <- info
	}()
	waitOnHandle(t, h)
	newManager(t, registry(t, map[string]Module{"a.job": job}), WithStore(store)) // runs it next
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.Error(t, a.Drain(short), "Drain cut the running task short")
	select {
	case info := <-waited:
		assert.Equal(t, StatusCompleted, info.Status)
		assert.Equal(t, "ok", info.Result)
	case <-time.After(testTimeout):
		t.Fatal("Wait did not return")
	}
}

// stallStore is a SharedStore over a MemoryStore whose lease renewals, once
// stalled, hang until their context ends: a replica whose connection to
// the store froze.
type stallStore struct {
	*MemoryStore
	stalled  atomic.Bool
	renewals atomic.Int32
}

func (s *stallStore) Renew(ctx context.Context, req LeaseRequest) (bool, error) {
	if s.stalled.Load() && !req.Create {
		<-ctx.Done()
		return false, ctx.Err()
	}
	s.renewals.Add(1)
	return s.MemoryStore.Renew(ctx, req)
}
func (s *stallStore) Name() string { return "StallStore" }

// A replica whose renewals hang stops its modules before its lease can end
// in the store, not when the renewal call gives up: another replica that
// recovers the task never runs it while the first still does.
func TestStalledLeaseStopsModulesInTime(t *testing.T) {
	ctx := testCtx(t)
	shared := NewMemoryStore()
	stall := &stallStore{MemoryStore: shared}
	const ttl = 600 * time.Millisecond
	var mu sync.Mutex
	var stoppedAt time.Time
	var runs []string
	started := make(chan string, 16)
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		tc, _ := TaskFromContext(ctx)
		mu.Lock()
		runs = append(runs, tc.TaskID)
		mu.Unlock()
		started <- tc.TaskID
		<-ctx.Done()
		mu.Lock()
		if stoppedAt.IsZero() {
			stoppedAt = time.Now()
		}
		mu.Unlock()
		return nil, ctx.Err()
	})
	reg := registry(t, map[string]Module{"a.job": mod})
	frozen := newManager(t, reg, WithStore(stall), WithLeaseTTL(ttl)) // store timeout: the default 10s
	id, err := frozen.Submit(ctx, "a.job", nil, WithResumable())
	require.NoError(t, err)
	require.Equal(t, id, <-started)
	before := stall.renewals.Load()
	require.Eventually(t, func() bool { return stall.renewals.Load() > before }, 5*time.Second, time.Millisecond)
	stall.stalled.Store(true)
	stalledAt := time.Now()

	live := newManager(t, reg, WithStore(shared), WithLeaseTTL(ttl))
	select {
	case again := <-started:
		require.Equal(t, id, again, "the live replica reruns the task")
	case <-time.After(testTimeout):
		t.Fatal("the live replica never reran the task")
	}
	rerunAt := time.Now()
	mu.Lock()
	stopped := stoppedAt
	mu.Unlock()
	require.False(t, stopped.IsZero(), "the frozen replica's module was still running when the task ran again elsewhere")
	assert.True(t, stopped.Before(rerunAt))
	assert.Less(t, stopped.Sub(stalledAt), ttl, "stopped within a TTL of the last renewal, not after the 10s store timeout")
	_, err = live.Cancel(ctx, id)
	require.NoError(t, err)
	stall.stalled.Store(false)
}

// Resumable tasks submitted as Drain begins are handed back, never
// cancelled, even with a slow observer between the insert and the queue.
func TestDrainRaceWithResumableSubmits(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	g := newGate(true)
	reg := registry(t, map[string]Module{"a.job": g})
	slow := func(info TaskInfo) {
		if info.Status == StatusPending {
			time.Sleep(time.Millisecond) // the slow observer the race needs: the fault, not a wait
		}
	}
	draining, err := NewTaskManager(reg, WithStore(store), WithObserver(slow), WithMaxConcurrent(1000), WithMaxTasks(10_000))
	require.NoError(t, err)
	var ids sync.Map
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 75 {
				id, err := draining.Submit(ctx, "a.job", nil, WithResumable())
				if err != nil {
					require.ErrorIs(t, err, ErrManagerClosed)
					return
				}
				ids.Store(id, true)
			}
		})
	}
	for range 20 {
		g.waitStart(t)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_ = draining.Drain(short) // the running ones are cut short and handed back
	wg.Wait()
	cancelled := 0
	ids.Range(func(k, _ any) bool {
		info, err := store.Get(ctx, k.(string))
		require.NoError(t, err)
		if info.Status == StatusCancelled {
			cancelled++
		}
		return true
	})
	assert.Zero(t, cancelled, "resumable tasks cancelled by Drain instead of handed back")
	g.open()
	other := newManager(t, reg, WithStore(store), WithMaxConcurrent(100), WithMaxTasks(10_000))
	ids.Range(func(k, _ any) bool {
		info, err := other.Wait(ctx, k.(string))
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
		return true
	})
}

func TestLeaseTTLMinimum(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, time.Microsecond, 99 * time.Millisecond} {
		_, err := NewTaskManager(NewRegistry(), WithLeaseTTL(d))
		require.ErrorIs(t, err, ErrInvalidInput, "WithLeaseTTL(%v)", d)
		assert.Contains(t, err.Error(), "100ms")
	}
	m := newManager(t, NewRegistry(), WithLeaseTTL(minLeaseTTL))
	assert.Equal(t, minLeaseTTL, m.leaseTTL)
	for _, d := range []time.Duration{0, -time.Second} {
		_, err := NewTaskManager(NewRegistry(), WithStoreTimeout(d))
		require.ErrorIs(t, err, ErrInvalidInput, "WithStoreTimeout(%v)", d)
	}
}

func TestDrainIdleWithEndedContext(t *testing.T) {
	m, err := NewTaskManager(NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.NoError(t, m.Drain(ctx), "nothing was cut short")
	m2, err := NewTaskManager(NewRegistry())
	require.NoError(t, err)
	assert.NoError(t, m2.Shutdown(ctx), "nothing was cut short")
}

func TestDrainSaysWhatItCutShort(t *testing.T) {
	g := newGate(true)
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": g}))
	require.NoError(t, err)
	id, err := m.Submit(testCtx(t), "a.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = m.Drain(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 task(s) unfinished")
	assert.Contains(t, err.Error(), id)
}

func TestProgressMessageLimitAfterReplacement(t *testing.T) {
	ctx := testCtx(t)
	var got error
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		got = ReportProgress(ctx, 50, strings.Repeat("\x00", maxProgressMessage))
		return nil, ReportProgress(ctx, 60, strings.Repeat("\x00", maxProgressMessage/3))
	})
	m := newManager(t, registry(t, map[string]Module{"a.job": mod}))
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	require.ErrorIs(t, got, ErrInvalidInput, "4,096 NUL bytes become 12,288 bytes: over the limit")
	assert.Equal(t, StatusCompleted, info.Status)
	assert.LessOrEqual(t, len(info.ProgressMessage), maxProgressMessage)
	assert.Equal(t, 60.0, info.Progress)
}

// A replica that lacks a module leaves its resumable tasks pending for a
// replica that has it (a rolling deploy), whether the executor lists its
// modules (Registry) or can only say whether it knows one.
func TestRollingDeployLeavesUnknownModules(t *testing.T) {
	for _, how := range []string{"lister", "resolver"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			store := NewMemoryStore()
			oldReg := registry(t, map[string]Module{"old.job": constModule(1)})
			var oldExec Executor = oldReg
			if how == "resolver" {
				oldExec = resolverOnly{oldReg}
			}
			claims := &claimCounter{MemoryStore: store}
			old := newManager(t, oldExec, WithStore(claims), WithLeaseTTL(time.Second))
			var ids []string
			for range 5 {
				id, err := old.Submit(ctx, "new.job", nil, WithResumable())
				require.NoError(t, err)
				ids = append(ids, id)
			}
			// The old replica claims a few times and keeps none.
			n := claims.n.Load()
			require.Eventually(t, func() bool { return claims.n.Load() >= n+3 }, 5*time.Second, time.Millisecond)
			for _, id := range ids {
				info, err := store.Get(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, StatusPending, info.Status)
			}
			newer := newManager(t, registry(t, map[string]Module{"old.job": constModule(1), "new.job": constModule(2)}), WithStore(store), WithLeaseTTL(time.Second))
			for _, id := range ids {
				info, err := newer.Wait(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, StatusCompleted, info.Status)
			}
		})
	}
}

// resolverOnly is an executor that can say whether it knows a module but
// not list them.
type resolverOnly struct{ r *Registry }

func (e resolverOnly) Call(ctx context.Context, id string, in map[string]any) (any, error) {
	return e.r.Call(ctx, id, in)
}
func (e resolverOnly) HasModule(id string) bool { return e.r.HasModule(id) }

// claimCounter counts the claims made through it.
type claimCounter struct {
	*MemoryStore
	n atomic.Int32
}

func (c *claimCounter) Claim(ctx context.Context, req ClaimRequest) ([]StoredTask, error) {
	defer c.n.Add(1)
	return c.MemoryStore.Claim(ctx, req)
}

// A module whose task Drain hands back sees it pending, not cancelled,
// through TaskFromContext (apcoreotel names the attempt's outcome by it).
func TestTaskFromContextOfAHandedBackTask(t *testing.T) {
	seen := make(chan TaskStatus, 1)
	started := make(chan struct{})
	var mgr atomic.Pointer[TaskManager]
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		close(started)
		<-ctx.Done()
		info, _ := TaskFromContext(ctx)
		for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, held := mgr.Load().tasks.load(info.TaskID); !held {
				break // the hand-back is written: the manager let go of the task
			}
		}
		info, _ = TaskFromContext(ctx)
		seen <- info.Status
		return nil, ctx.Err()
	})
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": mod}))
	require.NoError(t, err)
	mgr.Store(m)
	_, err = m.Submit(testCtx(t), "a.job", nil, WithResumable())
	require.NoError(t, err)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, m.Drain(ctx), context.DeadlineExceeded)
	assert.Equal(t, StatusPending, <-seen)
}

// deafInsertStore is a SharedStore over a MemoryStore whose Inserts, while
// deaf, wait for the test whatever their context says.
type deafInsertStore struct {
	*MemoryStore
	deaf    atomic.Bool
	release chan struct{}
}

func (s *deafInsertStore) Insert(ctx context.Context, st StoredTask, limit int) (bool, error) {
	if s.deaf.Load() {
		<-s.release
	}
	return s.MemoryStore.Insert(ctx, st, limit)
}

// With a SharedStore whose Insert hangs, Submit (plain and resumable)
// returns by its deadline, and a task the store saves after Submit gave
// up ends cancelled, not pending for good.
func TestSharedInsertHangsNoSubmit(t *testing.T) {
	ctx := testCtx(t)
	s := &deafInsertStore{MemoryStore: NewMemoryStore(), release: make(chan struct{})}
	m, err := NewTaskManager(registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(s), WithLeaseTTL(time.Second))
	require.NoError(t, err)
	s.deaf.Store(true)
	const d = 200 * time.Millisecond
	err = within(t, "Submit", d, func(ctx context.Context) error { _, err := m.Submit(ctx, "a.job", nil); return err })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	err = within(t, "Submit WithResumable", d, func(ctx context.Context) error {
		_, err := m.Submit(ctx, "a.job", nil, WithResumable())
		return err
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	err = within(t, "Submit WithUniqueKey", d, func(ctx context.Context) error {
		_, err := m.Submit(ctx, "a.job", nil, WithUniqueKey("k"))
		return err
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// Due later: inserted held by no one, so no handle here ends it.
	err = within(t, "Submit WithResumable WithDelay", d, func(ctx context.Context) error {
		_, err := m.Submit(ctx, "a.job", nil, WithResumable(), WithDelay(time.Hour))
		return err
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	s.deaf.Store(false)
	close(s.release)
	require.NoError(t, m.Shutdown(ctx))
	require.Eventually(t, func() bool { // the late inserts land, then their cancels
		all, err := s.MemoryStore.List(ctx, "")
		if err != nil || len(all) != 4 {
			return false
		}
		for _, info := range all {
			if info.Status != StatusCancelled {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "every late-saved task ends cancelled")
}

// A task that a hung store saves after its Submit gave up is cancelled,
// and the slot its Submit took for it goes on: with one slot, the next
// task runs.
func TestLateSavedTaskHandsItsSlotOn(t *testing.T) {
	ctx := testCtx(t)
	s := &deafInsertStore{MemoryStore: NewMemoryStore(), release: make(chan struct{})}
	m := newManager(t, registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(s), WithMaxConcurrent(1))
	s.deaf.Store(true)
	err := within(t, "Submit", 100*time.Millisecond, func(ctx context.Context) error { _, err := m.Submit(ctx, "a.job", nil); return err })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	s.deaf.Store(false)
	close(s.release)
	require.Eventually(t, func() bool { // the late insert lands, then its cancel
		all, err := s.MemoryStore.List(ctx, StatusCancelled)
		return err == nil && len(all) == 1
	}, 5*time.Second, time.Millisecond)
	id, err := m.Submit(ctx, "a.job", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "the one slot went on to the next task")
}

// deafTxStore is a SharedStore over a MemoryStore whose InsertTx (WithTx)
// waits for the test whatever its context says.
type deafTxStore struct {
	*MemoryStore
	release chan struct{}
}

func (s *deafTxStore) InsertTx(ctx context.Context, tx *sql.Tx, st StoredTask, limit int) (bool, error) {
	<-s.release
	return false, ctx.Err()
}

// Submit WithTx returns by its deadline when the store's insert in the
// transaction hangs.
func TestTxInsertHangsNoSubmit(t *testing.T) {
	s := &deafTxStore{MemoryStore: NewMemoryStore(), release: make(chan struct{})}
	m := newManager(t, registry(t, map[string]Module{"a.job": constModule(1)}), WithStore(s))
	defer close(s.release)
	err := within(t, "Submit WithTx", 200*time.Millisecond, func(ctx context.Context) error {
		_, err := m.Submit(ctx, "a.job", nil, WithTx(new(sql.Tx)))
		return err
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrStoreUnavailable)
}
