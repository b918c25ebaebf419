// Package apcore runs module calls as background tasks: the async task
// manager of the apcore protocol, for Go.
//
// A service registers modules (named functions such as
// "data.process_batch") in a Registry, hands it to NewTaskManager, and calls
// Submit. Submit saves a pending record and returns its id at once; the task
// runs on a goroutine of its own when one of max_concurrent slots is free.
// Status, Result, Wait, Cancel, List and Cleanup follow it from there, and an
// optional reaper deletes old records.
//
//	reg := apcore.NewRegistry()
//	_ = reg.Register("math.double", apcore.ModuleFunc(
//		func(ctx context.Context, in map[string]any) (any, error) {
//			return in["n"].(int) * 2, nil
//		}))
//	mgr, _ := apcore.NewTaskManager(reg)
//	defer mgr.Shutdown(context.Background())
//	id, _ := mgr.Submit(ctx, "math.double", map[string]any{"n": 21})
//	info, _ := mgr.Wait(ctx, id) // info.Status == StatusCompleted, info.Result == 42
//
// # States
//
// A task is pending (waiting for a slot, or waiting out a retry backoff),
// running (its module is executing), and then one of the terminal states
// completed, failed or cancelled, which are never left or overwritten. A
// failed attempt (an error, a panic, a timeout) goes back to pending while
// the task's retry budget lasts, unless its error is marked Permanent; a
// cancelled task is never retried.
//
//	submit ──> pending ──> running ──> completed
//	             ^  │         │ │
//	      retry  └──┼─────────┘ └────> failed
//	                └──── cancel ────> cancelled (from pending or running)
//
// # Cancellation
//
// Cancel marks the record cancelled at once and cancels the task's context.
// Go cannot stop a goroutine from outside, so a module must watch
// ctx.Done(); its concurrency slot stays taken until it returns, which keeps
// max_concurrent an honest bound on goroutines running modules. Whatever the
// module returns after a cancel is discarded, and a cancelled task is never
// retried.
//
// # Cost
//
// A pending task is a queued handle, not a parked goroutine: it gets a
// goroutine only when a slot frees (and a finishing task's goroutine takes
// the next queued task itself). A task in retry backoff holds a runtime
// timer, not a goroutine. Admission, status and cancel cost the same
// whatever the number of records, with the default MemoryStore.
package apcore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TaskManager runs submitted module calls in the background. It is safe for
// concurrent use. Create it with NewTaskManager and end it with Shutdown.
//
// The manager keeps a handle for each of its own active tasks in its table
// (tasks); records live only in the store, and every store is used through
// the same TaskStore methods and optional capabilities.
type TaskManager struct {
	exec     Executor
	resolver ModuleResolver // nil when exec cannot tell known modules
	store    TaskStore
	counter  Counter          // nil when the store has no Count
	cas      ConditionalSaver // nil when the store has no SaveIf
	log      *slog.Logger
	maxTasks int

	// observers are WithObserver's function and those Subscribe added, or
	// nil when there are none (see observe.go).
	observers atomic.Pointer[[]*observer]
	obsMu     sync.Mutex // serialises Subscribe and its cancel

	// gate orders Submits with Shutdown and Drain (closed); without a
	// SharedStore it also makes the capacity check and the save of a new
	// record atomic across concurrent Submits (see admit).
	gate   sync.RWMutex
	closed bool // guarded by gate

	// With a SharedStore (see replicas.go).
	shared      SharedStore
	jsonResults bool           // the store keeps results as JSON
	leaseTTL    time.Duration  // WithLeaseTTL
	carrier     ContextCarrier // WithContextCarrier, or nil
	owner       atomic.Pointer[string]
	leased      atomic.Bool   // this manager holds a lease under owner
	leaseMu     sync.Mutex    // serialises making a lease
	draining    atomic.Bool   // Drain has begun: claim nothing more
	mayClaim    atomic.Bool   // resumable tasks may wait in the store: a freed slot wakes the keeper
	wake        chan struct{} // wakes the keeper to claim now
	keeperStop  context.CancelFunc
	keeperDone  chan struct{}

	// tasks holds this manager's handles on its active tasks. A task is in
	// it from before its record is saved until it is terminal, so the table
	// never grows with finished records.
	tasks shardedMap[*task]

	// watch holds, with a SharedStore, the tasks that wait out a backoff:
	// with those that run (sched.running), the ones the keeper asks the
	// store about (see checkLost).
	watch shardedMap[*task]

	// sched is the FIFO of tasks waiting for a slot, and the slots.
	sched scheduler

	// wg counts workers, armed retry timers and AfterFunc goroutines;
	// Shutdown waits on it.
	wg       sync.WaitGroup
	stopOnce sync.Once
	drained  chan struct{} // closed when wg reaches zero after Shutdown

	reaperMu   sync.Mutex
	reaper     *ReaperHandle
	lastReaper *ReaperHandle // the reaper Shutdown stopped; set once, in stopOnce

	// kept holds terminal records the store refused (see keep in kept.go).
	kept        shardedMap[*keptOutcome]
	nKept       atomic.Int64
	writingBack atomic.Bool   // the background writer of kept outcomes runs
	closing     chan struct{} // closed when Shutdown or Drain begins
}

// NewTaskManager validates its arguments: a nil executor or a negative
// limit is an error with code GENERAL_INVALID_INPUT.
func NewTaskManager(exec Executor, opts ...Option) (*TaskManager, error) {
	if isNil(exec) {
		return nil, invalidf("NewTaskManager: the executor is nil")
	}
	cfg := managerConfig{maxConcurrent: defaultMaxConcurrent, maxTasks: defaultMaxTasks}
	for i, o := range opts {
		if o == nil {
			return nil, invalidf("NewTaskManager: option %d is nil", i)
		}
		o(&cfg)
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	if cfg.store == nil {
		// Sized for the cap, up to presizeLimit, so that filling it does
		// not rehash.
		cfg.store = newMemoryStore(min(cfg.maxTasks, presizeLimit))
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	m := &TaskManager{
		exec:     exec,
		store:    cfg.store,
		log:      cfg.logger,
		maxTasks: cfg.maxTasks,
		drained:  make(chan struct{}),
		closing:  make(chan struct{}),
	}
	if cfg.observer != nil {
		m.observers.Store(&[]*observer{{fn: cfg.observer}})
	}
	m.tasks.init(0)
	m.watch.init(0)
	m.kept.init(0)
	m.resolver, _ = exec.(ModuleResolver)
	m.counter, _ = cfg.store.(Counter)
	m.cas, _ = cfg.store.(ConditionalSaver)
	if js, ok := cfg.store.(JSONStore); ok {
		m.jsonResults = js.KeepsJSON()
	}
	m.sched.limit, m.sched.wg = cfg.maxConcurrent, &m.wg
	if shared, ok := cfg.store.(SharedStore); ok {
		m.shared = shared
		m.leaseTTL = cmp.Or(cfg.leaseTTL, defaultLeaseTTL)
		m.carrier = cfg.carrier
		m.startKeeper()
	}
	return m, nil
}

// checkCtx rejects a nil context, which would otherwise panic deep inside.
func checkCtx(ctx context.Context, method string) error {
	if ctx == nil {
		return invalidf("%s: the context is nil", method)
	}
	return nil
}

// Submit saves a pending record and starts the task in the background; it
// returns the new task id (UUID v4) before the module runs. The task's
// context keeps ctx's values but not its cancellation or deadline.
//
// It fails, saving nothing, with GENERAL_INVALID_INPUT (a nil context or a
// bad option), TASK_MANAGER_CLOSED (after Shutdown), TASK_LIMIT_EXCEEDED
// (max_tasks active tasks already) or TASK_STORE_UNAVAILABLE (the store
// failed; the error wraps its cause). A module id that is malformed or
// unknown to the executor is not a Submit error (the protocol's newest
// text): the task is accepted and ends failed with ErrorCode
// GENERAL_INVALID_INPUT or MODULE_NOT_FOUND, without retries.
//
// inputs is handed to the module as it is, not copied: do not change it after
// Submit.
func (m *TaskManager) Submit(ctx context.Context, moduleID string, inputs map[string]any, opts ...SubmitOption) (string, error) {
	if err := checkCtx(ctx, "Submit"); err != nil {
		return "", err
	}
	var sc submitConfig
	if len(opts) > 0 {
		var err error
		if sc, err = submitOptions(opts); err != nil {
			return "", err
		}
	}
	if sc.resumable {
		return m.submitResumable(ctx, moduleID, inputs, &sc)
	}
	t := &task{
		id:          newTaskID(),
		moduleID:    moduleID,
		inputs:      inputs,
		ctx:         taskCtx{parent: ctx, wg: &m.wg, m: m},
		retry:       sc.retry,
		timeout:     sc.timeout,
		submittedAt: now(),
	}
	t.ctx.task = t
	if ctx.Done() != nil {
		t.ctx.parent = context.WithoutCancel(ctx)
	}
	var info TaskInfo
	t.record(&info, StatusPending)

	// With an observer, the task's lock is held until the pending record is
	// announced, so that neither a worker nor Cancel acts on the task first.
	// Without one nothing needs it, and a worker starting on another core
	// need not wait for this Submit to return.
	if m.observers.Load() != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
	}
	w, err := m.admit(ctx, t, &info)
	if err != nil {
		return "", err
	}
	m.notify(&info)
	if w != nil {
		go m.work(w, t)
	}
	return t.id, nil
}

// submitOptions applies opts to a fresh config. It is apart from Submit so
// that a Submit without options does not allocate the config on the heap
// (BenchmarkSubmit counts the allocations).
func submitOptions(opts []SubmitOption) (submitConfig, error) {
	sc := new(submitConfig)
	for i, o := range opts {
		if o == nil {
			return submitConfig{}, invalidf("Submit: option %d is nil", i)
		}
		o(sc)
	}
	return *sc, sc.err
}

// admit checks the capacity, puts t in the manager's table, saves its
// pending record and queues it; on failure t is in neither table nor store.
// It reports whether the caller must start a worker for t. The handle goes
// into the table before the record reaches the store, so that nothing
// reading the store (FailStale, say) takes the new record for another
// process's.
//
// With a SharedStore the count and the insert are one atomic Insert, and
// Submits run side by side (gate read-locked, against Shutdown only);
// otherwise the count and the save are made atomic here, one Submit at a
// time, which bounds max_tasks within this manager only.
func (m *TaskManager) admit(ctx context.Context, t *task, info *TaskInfo) (w *worker, err error) {
	if m.shared != nil {
		m.gate.RLock()
		defer m.gate.RUnlock()
		if err := m.checkOpen(ctx); err != nil {
			return nil, err
		}
		t.holder = m.ownerID()
		m.tasks.store(t.id, t)
		ok, err := m.shared.Insert(ctx, StoredTask{Info: *info, Owner: t.holder, Retry: t.retry, Timeout: t.timeout}, m.maxTasks)
		if err != nil || !ok {
			m.tasks.delete(t.id)
			return nil, m.refused(err)
		}
	} else {
		m.gate.Lock()
		defer m.gate.Unlock()
		if err := m.checkOpen(ctx); err != nil {
			return nil, err
		}
		active, err := m.count(ctx, activeStatuses...)
		if err != nil {
			return nil, err
		}
		if active >= m.maxTasks {
			return nil, m.refused(nil)
		}
		m.tasks.store(t.id, t)
		if err := m.store.Save(ctx, *info); err != nil {
			m.tasks.delete(t.id)
			return nil, storeErr("save new task", err)
		}
	}
	w, _ = m.sched.enqueue(t) // never refused: Shutdown closes it only after taking gate
	return w, nil
}

// checkOpen refuses a Submit once Shutdown or Drain has begun, and makes
// sure this manager holds a lease in a SharedStore before its first task
// reaches it. m.gate is held.
func (m *TaskManager) checkOpen(ctx context.Context) error {
	if m.closed {
		return &Error{Code: CodeTaskManagerClosed, Message: "Task manager is shut down"}
	}
	if m.shared != nil && !m.leased.Load() {
		return m.createLease(ctx)
	}
	return nil
}

// refused is Submit's error for a failed insert (err) or a full store.
func (m *TaskManager) refused(err error) error {
	if err != nil {
		return storeErr("save new task", err)
	}
	return newError(CodeTaskLimitExceeded, "Task limit reached (%d)", m.maxTasks)
}

// count counts the store's records in statuses (none = all), with Count
// when the store has it and by listing otherwise.
func (m *TaskManager) count(ctx context.Context, statuses ...TaskStatus) (int, error) {
	if m.counter != nil {
		n, err := m.counter.Count(ctx, statuses...)
		if err != nil {
			return 0, storeErr("count", err)
		}
		return n, nil
	}
	all, err := m.store.List(ctx, "")
	if err != nil {
		return 0, storeErr("list", err)
	}
	if len(statuses) == 0 {
		return len(all), nil
	}
	n := 0
	for i := range all {
		if slices.Contains(statuses, all[i].Status) {
			n++
		}
	}
	return n, nil
}

// Status returns a copy of the task's record, or an error matching
// ErrTaskNotFound.
func (m *TaskManager) Status(ctx context.Context, taskID string) (TaskInfo, error) {
	if err := checkCtx(ctx, "Status"); err != nil {
		return TaskInfo{}, err
	}
	if info, ok := m.keptOutcome(ctx, taskID); ok {
		return info, nil
	}
	info, err := m.store.Get(ctx, taskID)
	if err != nil {
		return TaskInfo{}, storeErr("get", err)
	}
	m.freshProgress(&info)
	return info, nil
}

// freshProgress puts the latest progress of a task this manager runs on a
// record read from the store, which gets it up to a quarter of a second
// later (see ReportProgress).
func (m *TaskManager) freshProgress(info *TaskInfo) {
	if info.Status != StatusRunning {
		return
	}
	t, ok := m.tasks.load(info.TaskID)
	if !ok {
		return
	}
	t.mu.Lock()
	if t.state == stateRunning && t.progressTimer != nil {
		info.Progress, info.ProgressMessage = t.progress, t.progressMsg
	}
	t.mu.Unlock()
}

// Result returns the result of a completed task. It fails with
// TASK_NOT_FOUND ("Task not found: <id>") or TASK_NOT_COMPLETED ("Task <id>
// is not completed (status=<s>)").
func (m *TaskManager) Result(ctx context.Context, taskID string) (any, error) {
	info, err := m.Status(ctx, taskID)
	if err != nil {
		return nil, err
	}
	if info.Status != StatusCompleted {
		return nil, newError(CodeTaskNotCompleted, "Task %s is not completed (status=%s)", taskID, info.Status)
	}
	return info.Result, nil
}

// Wait blocks until the task is terminal and returns its final record, or
// returns ctx's error when ctx ends first. For tasks this manager runs it
// wakes on the transition itself; for a task that another manager runs on a
// shared store it polls the store, from 10ms up to every 200ms.
func (m *TaskManager) Wait(ctx context.Context, taskID string) (TaskInfo, error) {
	if err := checkCtx(ctx, "Wait"); err != nil {
		return TaskInfo{}, err
	}
	delay := 10 * time.Millisecond
	for {
		if t, ok := m.tasks.load(taskID); ok {
			if info, ok, err := t.wait(ctx); ok {
				return info, err
			}
			// It ended without keeping its record here, or left this
			// manager: the store has it.
		}
		info, err := m.Status(ctx, taskID)
		if err != nil || info.Status.IsTerminal() {
			return info, err
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return TaskInfo{}, ctx.Err()
		case <-timer.C:
		}
		delay = min(delay*2, maxWaitPoll)
	}
}

// maxWaitPoll is the longest pause between two reads of the store while
// Wait follows a task that another manager runs.
const maxWaitPoll = 200 * time.Millisecond

// Cancel cancels an active task and reports whether this call did it: false
// (and nil) for an unknown or already terminal task. A pending task never
// runs; a running task's context is cancelled at once; a task in retry
// backoff is never called again, and its context is cancelled too. The
// record is cancelled at once, whatever the module returns later. A task of
// another manager sharing the store is cancelled in the store; its module
// stops when its own manager notices.
//
// If the store fails to record the cancel, the task is still stopped and
// ends cancelled in this manager, and Cancel returns the store's error.
func (m *TaskManager) Cancel(ctx context.Context, taskID string) (bool, error) {
	if err := checkCtx(ctx, "Cancel"); err != nil {
		return false, err
	}
	if t, ok := m.tasks.load(taskID); ok {
		return m.cancelTask(ctx, t)
	}
	if _, ok := m.keptOutcome(ctx, taskID); ok {
		return false, nil // it ended here; the store just has not heard
	}
	info, err := m.store.Get(ctx, taskID)
	if err != nil {
		if errors.Is(err, ErrTaskNotFound) {
			return false, nil
		}
		return false, storeErr("get", err)
	}
	if !info.Status.IsActive() {
		return false, nil
	}
	info.Status, info.CompletedAt = StatusCancelled, now()
	info.Result, info.Error, info.ErrorCode = nil, "", ""
	res, err := m.write(ctx, nil, &info)
	if res == written && err == nil {
		m.notify(&info)
		return true, nil
	}
	return false, err
}

// List returns copies of every record (status "") or of those in one state,
// in insertion order. An unknown status is GENERAL_INVALID_INPUT.
func (m *TaskManager) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if err := checkCtx(ctx, "List"); err != nil {
		return nil, err
	}
	if status != "" && !status.Valid() {
		return nil, invalidf("List: unknown status %q", status)
	}
	out, err := m.store.List(ctx, status)
	if err != nil {
		return nil, storeErr("list", err)
	}
	for i := range out {
		m.freshProgress(&out[i])
	}
	return out, nil
}

// TaskCount returns the number of records in the store, in every state.
func (m *TaskManager) TaskCount(ctx context.Context) (int, error) {
	if err := checkCtx(ctx, "TaskCount"); err != nil {
		return 0, err
	}
	return m.count(ctx)
}

// Store returns the manager's task store.
func (m *TaskManager) Store() TaskStore { return m.store }

// Shutdown stops the reaper, cancels every active task of this manager and
// waits for their goroutines to return (or ctx to end). Later Submits fail
// with ErrManagerClosed. With a SharedStore it also cancels the active
// records that no live manager holds (an earlier run's leftovers, or a
// dead replica's), never a live replica's, and then ends its lease. Every
// cancel is attempted, and recorded in the store even when ctx has already
// ended: ctx bounds only the wait for modules. It returns the first cancel
// the store refused, or ctx's error when ctx ends before the modules
// return (the tasks are cancelled all the same, and their goroutines end
// when their modules return). It is idempotent: a later call waits again
// and returns nil once every task goroutine has returned.
func (m *TaskManager) Shutdown(ctx context.Context) error {
	if err := checkCtx(ctx, "Shutdown"); err != nil {
		return err
	}
	return m.shutdown(ctx, true)
}

// shutdown is Shutdown; Drain calls it without cancelling orphans, so that
// a draining replica leaves the pending resumable tasks to the others.
func (m *TaskManager) shutdown(ctx context.Context, orphans bool) error {
	var first error
	m.stopOnce.Do(func() {
		m.gate.Lock()
		m.close()
		m.gate.Unlock()
		m.stopKeeper()
		m.sched.close()
		m.reaperMu.Lock()
		m.lastReaper = m.reaper
		m.reaperMu.Unlock()
		if m.lastReaper != nil {
			m.lastReaper.signal()
		}
		writes := context.WithoutCancel(ctx)
		var errs []error
		for _, t := range m.tasks.values() {
			if _, err := m.cancelTask(writes, t); err != nil {
				errs = append(errs, err)
			}
		}
		if orphans && m.shared != nil {
			errs = append(errs, m.cancelOrphans(writes)...)
		}
		if len(errs) > 0 {
			first = errs[0]
			m.log.Warn("apcore: shutdown could not record every cancel", "failures", len(errs), "error", first)
		}
		go func() {
			m.wg.Wait()
			close(m.drained)
		}()
	})
	var reaperDone <-chan struct{}
	if m.lastReaper != nil {
		reaperDone = m.lastReaper.done
	}
	for _, done := range []<-chan struct{}{reaperDone, m.drained} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return cmp.Or(first, ctx.Err())
		}
	}
	if left := m.flushKept(ctx); left > 0 {
		return cmp.Or(first, error(&Error{
			Code:    CodeTaskStoreUnavailable,
			Message: fmt.Sprintf("Shutdown: the store refused the outcome of %d task(s); Status on this manager still reports them", left),
		}))
	}
	m.endLease(ctx)
	return first
}

// close marks the manager closed (m.gate is held): Submit is refused, and
// background work that waits on the store gives up.
func (m *TaskManager) close() {
	if !m.closed {
		m.closed = true
		close(m.closing)
	}
}

// isClosing reports whether Shutdown or Drain has begun.
func (m *TaskManager) isClosing() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}
