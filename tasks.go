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
//	type DoubleIn struct {
//		N int `json:"n"`
//	}
//
//	reg := apcore.NewRegistry()
//	if err := reg.Register("math.double", apcore.Typed(
//		func(ctx context.Context, in DoubleIn) (int, error) {
//			return in.N * 2, nil
//		})); err != nil {
//		return err
//	}
//	mgr, err := apcore.NewTaskManager(reg)
//	if err != nil {
//		return err
//	}
//	defer mgr.Shutdown(context.Background())
//	id, err := mgr.Submit(ctx, "math.double", map[string]any{"n": 21})
//	if err != nil {
//		return err
//	}
//	info, err := mgr.Wait(ctx, id) // info.Status == StatusCompleted
//	if err != nil {
//		return err
//	}
//	n, err := apcore.ResultAs[int](info) // 42, whatever the store
//
// Typed converts the inputs map to the module's type and ResultAs a result
// to the caller's, through JSON, the same way wherever the task ran and
// whatever store kept it; ModuleFunc takes the map as it comes.
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
// # Replicas, progress and the rest
//
// Records live in a TaskStore: NewMemoryStore by default. Several managers
// sharing a SharedStore behave as one manager (see SharedStore,
// WithLeaseTTL, WithResumable and Drain): leases, tasks resumed on another
// replica when theirs dies, cancel from any replica, exact admission. A
// module reports progress with ReportProgress; observers (WithObserver,
// Subscribe) see every transition and progress report. Every call a caller
// makes returns by its context's deadline, whatever the store does
// (WithStoreTimeout).
//
// Beside this package, in modules of their own so that the core needs no
// driver: github.com/apcore-go/apcore/sqlstore (SQLite and PostgreSQL),
// github.com/apcore-go/apcore/redisstore (Redis),
// github.com/apcore-go/apcore/apcoreotel (OpenTelemetry traces and
// metrics), github.com/apcore-go/apcore/apcorehttp (a web dashboard and
// JSON API), and github.com/apcore-go/apcore/storetest (checks a store
// against the contract).
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
	exec         Executor
	resolver     ModuleResolver // nil when exec cannot tell known modules
	lister       ModuleLister   // nil when exec cannot list them
	store        TaskStore
	counter      Counter          // nil when the store has no Count
	cas          ConditionalSaver // nil when the store has no SaveIf
	log          *slog.Logger
	maxTasks     int
	storeTimeout time.Duration // WithStoreTimeout
	nonBlocking  bool          // the store is a MemoryStore: its calls never block

	// observers are WithObserver's function and those Subscribe added, or
	// nil when there are none (see observe.go).
	observers atomic.Pointer[[]*observer]
	obsMu     sync.Mutex // serialises Subscribe and its cancel

	// closed is set when Shutdown or Drain begins: Submit is refused from
	// then on (closing is closed at the same time, for those who wait).
	closed    atomic.Bool
	closeOnce sync.Once
	closing   chan struct{}
	// admitMu makes the capacity check and the save of a new record atomic
	// across concurrent Submits without a SharedStore (see admit).
	admitMu ctxMutex

	// With a SharedStore (see replicas.go and lease.go).
	shared      SharedStore
	jsonResults bool           // the store keeps results as JSON
	leaseTTL    time.Duration  // WithLeaseTTL
	carrier     ContextCarrier // WithContextCarrier, or nil
	owner       atomic.Pointer[string]
	leased      atomic.Bool // this manager holds a lease under owner
	leaseMu     ctxMutex    // serialises making and ending a lease
	lease       *leaseKeeper
	services    []*loop     // the lease keeper, recoverer, watcher and claimer
	claims      *loop       // the claimer, to wake
	draining    atomic.Bool // Drain has begun: claim nothing more
	mayClaim    atomic.Bool // resumable tasks may wait in the store: a freed slot wakes the claimer

	// tasks holds this manager's handles on its active tasks. A task is in
	// it from before its record is saved until its end is written, so the
	// table never grows with finished records.
	tasks shardedMap[*task]

	// watch holds, with a SharedStore, the tasks that wait out a backoff:
	// with those that run (sched.running), the ones the watcher asks the
	// store about.
	watch shardedMap[*task]

	// sched is the FIFO of tasks waiting for a slot, and the slots.
	sched scheduler

	// wg counts what runs for the tasks and that Shutdown waits for:
	// workers, armed retry and progress timers, AfterFunc goroutines, and
	// the writes of cancels and hand-backs. Each is counted when it is
	// decided, under the task's lock (see lifecycle.go).
	wg       sync.WaitGroup
	stopOnce sync.Once
	drained  chan struct{} // closed when wg reaches zero after Shutdown
	writes   chan struct{} // closed when Shutdown's cancels are written (or refused)
	stopErr  error         // the first cancel the store refused in Shutdown; set before writes closes

	reaperMu   sync.Mutex
	reaper     *ReaperHandle
	lastReaper *ReaperHandle // the reaper Shutdown stopped; set once, in stopOnce

	// kept holds terminal records the store refused (see keep in kept.go).
	wakeups    wakeups            // when to claim tasks due later (later.go)
	schedules  scheduleSet        // AddSchedule's schedules (schedule.go)
	notifyStop context.CancelFunc // ends a Notifier's wake-ups

	kept        shardedMap[*keptOutcome]
	nKept       atomic.Int64
	writingBack atomic.Bool // the background writer of kept outcomes runs
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
		exec:         exec,
		store:        cfg.store,
		log:          cfg.logger,
		maxTasks:     cfg.maxTasks,
		storeTimeout: cmp.Or(cfg.storeTimeout, defaultStoreTimeout),
		drained:      make(chan struct{}),
		closing:      make(chan struct{}),
		admitMu:      newCtxMutex(),
		leaseMu:      newCtxMutex(),
	}
	_, m.nonBlocking = cfg.store.(*MemoryStore)
	if cfg.observer != nil {
		m.observers.Store(&[]*observer{{fn: cfg.observer}})
	}
	m.tasks.init(0)
	m.watch.init(0)
	m.kept.init(0)
	m.resolver, _ = exec.(ModuleResolver)
	m.lister, _ = exec.(ModuleLister)
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
		m.startServices()
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
	if sc.tx != nil {
		return m.submitTx(ctx, moduleID, inputs, &sc)
	}
	if sc.resumable {
		return m.submitResumable(ctx, moduleID, inputs, &sc)
	}
	if sc.uniqueKey != "" && m.shared == nil {
		return "", invalidf("Submit: WithUniqueKey needs a store that implements apcore.SharedStore; %s does not", m.store.Name())
	}
	t := &task{
		id:          newTaskID(),
		moduleID:    moduleID,
		inputs:      inputs,
		ctx:         taskCtx{parent: ctx, wg: &m.wg, m: m},
		retry:       sc.retry,
		timeout:     sc.timeout,
		submittedAt: now(),
		priority:    int8(sc.priority),
	}
	if sc.uniqueKey != "" || !sc.runAt.IsZero() {
		t.later = &taskLater{runAt: sc.runAt, uniqueKey: sc.uniqueKey}
	}
	t.ctx.task = t
	if ctx.Done() != nil {
		t.ctx.parent = context.WithoutCancel(ctx)
	}
	var info TaskInfo
	t.record(&info, StatusPending)
	owned := m.announceFirst(t, &info)
	var st *StoredTask
	if m.shared != nil {
		st = &StoredTask{Info: info, Retry: t.retry, Timeout: t.timeout}
	}
	w, err := m.admitFor(ctx, t, st, owned, &info)
	if err != nil {
		return duplicateOf(err), err
	}
	if w != nil {
		go m.work(w, t)
	}
	return t.id, nil
}

// announceFirst makes a Submit the goroutine that makes the new task's
// observer calls (see emit), before any worker or Cancel can act on the
// task, so that the pending record is announced first. It reports whether
// it did.
func (m *TaskManager) announceFirst(t *task, info *TaskInfo) bool {
	if m.observers.Load() == nil {
		return false
	}
	t.notifying = true
	return true
}

// admitted makes the observer calls of a Submit that announceFirst made
// the one to make them (owned): the pending record (info) and what was
// queued meanwhile when the task was saved, none when it was not (then
// nothing else knows the task).
func (m *TaskManager) admitted(t *task, owned bool, info *TaskInfo) {
	if !owned {
		return
	}
	t.mu.Lock()
	saved := t.seq > 0 || t.state != stateQueued || m.hasTask(t)
	if !saved {
		t.notifying, t.events = false, nil
	}
	t.mu.Unlock()
	if saved {
		m.deliver(t, info)
	}
}

// hasTask reports whether t is in the table.
func (m *TaskManager) hasTask(t *task) bool {
	x, ok := m.tasks.load(t.id)
	return ok && x == t
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

// admitFor is admit for a caller: it returns by ctx's end even when the
// store does not. If the store then saves the task after all, the task is
// cancelled at once (the caller was told that Submit failed), and its
// slot goes on to the next queued task.
func (m *TaskManager) admitFor(ctx context.Context, t *task, st *StoredTask, owned bool, info *TaskInfo) (*worker, error) {
	if m.nonBlocking || ctx.Done() == nil {
		w, err := m.admit(ctx, t, st)
		m.admitted(t, owned, info)
		return w, err
	}
	var copied StoredTask
	if st != nil {
		copied = *st
	}
	return m.admitGuarded(ctx, t, copied, st != nil, owned, *info)
}

// admitGuarded is admitFor's path for a context that may end: admit runs
// on a goroutine of its own. It takes its arguments by value, so that only
// this path pays for what the goroutine keeps.
func (m *TaskManager) admitGuarded(ctx context.Context, t *task, stored StoredTask, shared, owned bool, info TaskInfo) (*worker, error) {
	var st *StoredTask
	if shared {
		st = &stored
	}
	type result struct {
		w   *worker
		err error
	}
	r, ok := handOff(ctx, func() result {
		w, err := m.admit(ctx, t, st)
		m.admitted(t, owned, &info)
		return result{w, err}
	}, func(r result) {
		if r.err == nil {
			m.log.Warn("apcore: the store saved a task after its Submit gave up; cancelling it", "task_id", t.id)
			m.refuse(t)
			if r.w != nil { // a new worker for t: it finds t ended, and hands its slot on
				go m.work(r.w, t)
			}
		}
	})
	if !ok {
		return nil, gaveUp(ctx, "Submit: save the new task")
	}
	return r.w, r.err
}

// admit checks the capacity, puts t in the manager's table, saves its
// pending record and queues it; on failure t is in neither table nor store.
// It returns the worker the caller must start for t, if any. The handle
// goes into the table before the record reaches the store, so that nothing
// reading the store (FailStale, say) takes the new record for another
// process's, and a Shutdown or Drain that begins meanwhile finds it (or
// the scheduler, closed by then, refuses it).
//
// With a SharedStore (st not nil) the count and the insert are one atomic
// Insert, and Submits run side by side; otherwise the count and the save
// are made atomic here, one Submit at a time (admitMu, which a waiting
// Submit gives up when its context ends), which bounds max_tasks within
// this manager only.
func (m *TaskManager) admit(ctx context.Context, t *task, st *StoredTask) (w *worker, err error) {
	if m.closed.Load() {
		return nil, errClosed()
	}
	// A task that finds a slot free takes it before it is saved, and is
	// saved running: its start is then the insert's write, one store write
	// less per task (start only announces it, as for a claimed task).
	delayed := t.later != nil && t.later.runAt.After(now())
	var rw *worker
	var rIdle, reserved bool
	var startedAt time.Time // the stored start; the manager's own is set by start
	status := StatusPending
	reserve := func() { // just before the save, and before t is in the table
		if delayed {
			return
		}
		if rw, rIdle = m.sched.reserve(); rw != nil {
			reserved, startedAt, t.claimed, status = true, now(), true, StatusRunning
		}
	}
	defer func() {
		if reserved { // not saved: w starts nothing and hands the slot on
			none := &task{state: stateDone}
			if w := rw.give(rIdle, none); w != nil {
				go m.work(w, none)
			}
		}
	}()
	if st != nil {
		if !m.leased.Load() {
			if err := m.createLease(ctx); err != nil {
				return nil, storeErr("Submit: make this manager's lease in the shared store", err)
			}
		}
		t.holder = m.ownerID()
		st.Owner = t.holder
		reserve()
		st.Info.Status, st.Info.StartedAt = status, startedAt
		m.tasks.store(t.id, t)
		t.wmu.Lock() // t's first write: a cancel's write made meanwhile waits for it
		ok, err := m.shared.Insert(ctx, *st, m.maxTasks)
		t.wmu.Unlock()
		if err != nil || !ok {
			m.tasks.delete(t.id)
			return nil, m.refused(err)
		}
	} else {
		if err := m.admitMu.Lock(ctx); err != nil {
			return nil, gaveUp(ctx, "Submit: wait for the Submits before it")
		}
		defer m.admitMu.Unlock()
		active, err := m.count(ctx, activeStatuses...)
		if err != nil {
			return nil, err
		}
		if active >= m.maxTasks {
			return nil, m.refused(nil)
		}
		reserve() // after admitMu: a Submit that waits for it holds no slot
		m.tasks.store(t.id, t)
		var info TaskInfo
		t.record(&info, status)
		info.StartedAt = startedAt
		t.wmu.Lock() // t's first write: a cancel's write made meanwhile waits for it
		err = m.store.Save(ctx, info)
		t.wmu.Unlock()
		if err != nil {
			m.tasks.delete(t.id)
			return nil, storeErr("Submit: save the new task", err)
		}
	}
	if delayed {
		if m.closed.Load() {
			// Shutdown or Drain may have looked at the table before t
			// joined it: cancel t here, before its timer joins the
			// WaitGroup they wait on. Closed later, they find t.
			m.refuse(t)
			return nil, errClosed()
		}
		m.scheduleAt(t, t.later.runAt)
		return nil, nil
	}
	if reserved {
		reserved = false // saved: t goes to its worker
		if m.closed.Load() {
			// Shutdown or Drain began, and may have looked at the table
			// before t joined it: cancel t here; its worker hands the slot on.
			m.refuse(t)
			if w := rw.give(rIdle, t); w != nil {
				go m.work(w, t)
			}
			return nil, errClosed()
		}
		return rw.give(rIdle, t), nil
	}
	w, ok := m.sched.enqueue(t)
	if !ok {
		// Shutdown or Drain closed the scheduler after the check above, and
		// may have looked at the table before t joined it: cancel t here.
		m.refuse(t)
		return nil, errClosed()
	}
	return w, nil
}

// scheduleAt keeps a new task of this manager pending until at, on a
// runtime timer (no goroutine, no slot), after which it is queued as any
// other: the pending state a retry's backoff uses. A Shutdown or Drain
// that began meanwhile finds it in the table and cancels it (or the
// scheduler, closed by then, refuses it when the timer fires).
func (m *TaskManager) scheduleAt(t *task, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateQueued { // cancelled already
		return
	}
	t.state = stateBackoff
	m.wg.Add(1) // done by the timer's function, or by the cancel that stops the timer
	t.timer = time.AfterFunc(time.Until(at), func() { m.requeue(t) })
}

// errClosed is Submit's error once Shutdown or Drain has begun.
func errClosed() error {
	return &Error{Code: CodeTaskManagerClosed, Message: "Task manager is shut down"}
}

// markClosed marks the manager closed: Submit is refused, and background
// work that waits on the store gives up.
func (m *TaskManager) markClosed() {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		close(m.closing)
	})
}

// refused is Submit's error for a failed insert (err) or a full store.
func (m *TaskManager) refused(err error) error {
	var dup *DuplicateError
	if errors.As(err, &dup) {
		return &Error{Code: CodeTaskDuplicate, Message: "Submit: a task with this unique key exists", Cause: dup}
	}
	if err != nil {
		return storeErr("Submit: save the new task", err)
	}
	return newError(CodeTaskLimitExceeded, "Task limit reached (%d)", m.maxTasks)
}

// duplicateOf returns the id of the record that holds the unique key a
// Submit's error is about, or "".
func duplicateOf(err error) string {
	var dup *DuplicateError
	if errors.As(err, &dup) {
		return dup.TaskID
	}
	return ""
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
// ErrTaskNotFound. It returns by ctx's end whatever the store does (then
// with an error that matches ctx's error and TASK_STORE_UNAVAILABLE).
func (m *TaskManager) Status(ctx context.Context, taskID string) (TaskInfo, error) {
	if err := checkCtx(ctx, "Status"); err != nil {
		return TaskInfo{}, err
	}
	if info, ok := m.keptOutcome(ctx, taskID); ok {
		return info, nil
	}
	info, err := callFor(m, ctx, "Status: get", func(ctx context.Context) (TaskInfo, error) {
		return m.store.Get(ctx, taskID)
	})
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
// If the store fails to record the cancel, or does not answer before ctx
// ends, the task is still stopped and ends cancelled in this manager, and
// Cancel returns false with the store's error (or one that matches ctx's):
// the cancel is not lost, it is kept here and written when the store
// answers (Status and Wait on this manager report it meanwhile).
func (m *TaskManager) Cancel(ctx context.Context, taskID string) (bool, error) {
	if err := checkCtx(ctx, "Cancel"); err != nil {
		return false, err
	}
	if t, ok := m.tasks.load(taskID); ok {
		return m.cancelFor(ctx, t)
	}
	if _, ok := m.keptOutcome(ctx, taskID); ok {
		return false, nil // it ended here; the store just has not heard
	}
	return callFor(m, ctx, "Cancel", func(ctx context.Context) (bool, error) {
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
	})
}

// cancelFor cancels one of this manager's tasks for a caller: the task
// stops at once, and the cancelled record is written on a goroutine of its
// own, so that Cancel returns by ctx's end whatever the store does.
func (m *TaskManager) cancelFor(ctx context.Context, t *task) (bool, error) {
	if m.nonBlocking {
		res, ok, err := m.cancelNow(t)
		return ok && err == nil && res == written, err
	}
	info, seq, ok := m.cancel(t)
	if !ok {
		return false, nil
	}
	type result struct {
		res writeResult
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer m.wg.Done() // counted by cancel
		res, err := m.finish(t, &info, seq)
		ch <- result{res, err}
	}()
	select {
	case r := <-ch:
		return r.err == nil && r.res == written, r.err
	case <-ctx.Done():
		return false, &Error{Code: CodeTaskStoreUnavailable, Message: "Cancel: the task is stopped, but the store had not recorded the cancel when the context ended; it is written when the store answers", Cause: context.Cause(ctx)}
	}
}

// List returns copies of every record (status "") or of those in one state,
// in insertion order. An unknown status is GENERAL_INVALID_INPUT. It reads
// every record the store holds: ListPage costs a page.
func (m *TaskManager) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if err := checkCtx(ctx, "List"); err != nil {
		return nil, err
	}
	if status != "" && !status.Valid() {
		return nil, invalidf("List: unknown status %q", status)
	}
	out, err := callFor(m, ctx, "List", func(ctx context.Context) ([]TaskInfo, error) {
		return m.store.List(ctx, status)
	})
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
	return callFor(m, ctx, "TaskCount", func(ctx context.Context) (int, error) { return m.count(ctx) })
}

// Store returns the manager's task store.
func (m *TaskManager) Store() TaskStore { return m.store }

// Shutdown stops the reaper, cancels every active task of this manager and
// waits for their goroutines to return (or ctx to end). Later Submits fail
// with ErrManagerClosed. With a SharedStore it also cancels the active
// records that no live manager holds (an earlier run's leftovers, or a
// dead replica's), never a live replica's, and then ends its lease. A
// resumable task due later (WithRunAt, or a retry's backoff) that waits
// in the store is no one's to cancel: it stays pending for whichever
// manager runs when it is due, also after every manager has shut down.
//
// Every cancel is attempted, and recorded in the store even when ctx has
// already ended: the writes are made on goroutines of their own, each
// bounded by the store timeout (WithStoreTimeout), and Shutdown waits for
// them until ctx ends, or, when ctx had ended before Shutdown began, until
// they are done or the store timeout passes. It returns the first cancel
// the store refused, or an error matching ctx's error when ctx ends before
// the modules return (the tasks are cancelled all the same, and their
// goroutines end when their modules return). It is idempotent: a later
// call waits again and returns nil once every task goroutine has returned.
func (m *TaskManager) Shutdown(ctx context.Context) error {
	if err := checkCtx(ctx, "Shutdown"); err != nil {
		return err
	}
	return m.shutdown(ctx, true)
}

// shutdown is Shutdown; Drain calls it without cancelling orphans, so that
// a draining replica leaves the pending resumable tasks to the others.
func (m *TaskManager) shutdown(ctx context.Context, orphans bool) error {
	first, idle := false, false
	m.stopOnce.Do(func() {
		first = true
		m.markClosed()
		m.stopWakeups()
		m.schedules.stopAll()
		if m.notifyStop != nil {
			m.notifyStop()
		}
		for _, l := range m.services {
			l.stop() // their goroutines end on their own; drained waits for them
		}
		if m.lease != nil {
			m.lease.stop() // every task is cancelled here: nothing left to give up
		}
		idle = m.sched.close() == 0
		m.reaperMu.Lock()
		m.lastReaper = m.reaper
		m.reaperMu.Unlock()
		if m.lastReaper != nil {
			m.lastReaper.signal()
		}
		var jobs, backs []writeJob
		for _, t := range m.tasks.values() {
			if !orphans && t.resumable { // Drain: back to the store, for another replica
				if j, ok := m.handBackJob(t, false); ok {
					backs = append(backs, j)
				}
				continue
			}
			if info, seq, ok := m.cancel(t); ok {
				jobs = append(jobs, writeJob{t, info, seq})
			}
		}
		m.handBackAll(backs)
		m.writes = make(chan struct{})
		m.wg.Add(1)
		go m.writeCancels(jobs, orphans && m.shared != nil)
		go func() {
			m.wg.Wait()
			for _, l := range m.services {
				<-l.done
			}
			close(m.drained)
		}()
	})
	// The store writes: until ctx ends, or the store timeout when it had
	// ended already (an ended context still records every cancel).
	wait := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(context.Background(), m.storeTimeout)
		defer cancel()
	}
	select {
	case <-m.writes:
	case <-wait.Done():
		return fmt.Errorf("apcore: Shutdown: the store had not recorded every cancel when the context ended; the writes go on until the store timeout: %w", context.Cause(ctx))
	}
	if idle {
		ctx = wait // no module to wait for: only the manager's own goroutines
	}
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
			continue
		default:
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("apcore: Shutdown: %d module(s) had not returned when the context ended (their tasks are cancelled): %w", m.sched.busyNow(), context.Cause(ctx))
		}
	}
	if left, _ := callFor(m, ctx, "Shutdown: write kept outcomes", func(ctx context.Context) (int, error) {
		return m.flushKept(ctx), nil
	}); left > 0 {
		return cmp.Or(m.stopErrFor(first), error(&Error{
			Code:    CodeTaskStoreUnavailable,
			Message: fmt.Sprintf("Shutdown: the store refused the outcome of %d task(s); Status on this manager still reports them", left),
		}))
	}
	callFor(m, ctx, "Shutdown: end the lease", func(context.Context) (struct{}, error) {
		m.endLease()
		return struct{}{}, nil
	})
	return m.stopErrFor(first)
}

// stopErrFor returns the first cancel the store refused, to the first
// Shutdown call only.
func (m *TaskManager) stopErrFor(first bool) error {
	if !first {
		return nil
	}
	return m.stopErr
}

// shutdownWriters bounds the goroutines that write Shutdown's cancels.
const shutdownWriters = 8

// writeCancels writes Shutdown's cancels, then (orphans) cancels the
// records that no live manager holds; it keeps the first refusal in
// m.stopErr and closes m.writes. The WaitGroup counts it and each job.
func (m *TaskManager) writeCancels(jobs []writeJob, orphans bool) {
	defer m.wg.Done()
	var mu sync.Mutex
	var errs []error
	next := make(chan *writeJob)
	var writers sync.WaitGroup
	for range min(len(jobs), shutdownWriters) {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := range next {
				if _, err := m.finish(j.t, &j.info, j.seq); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				m.wg.Done() // counted by cancel
			}
		}()
	}
	for i := range jobs {
		next <- &jobs[i]
	}
	close(next)
	writers.Wait()
	if orphans {
		errs = append(errs, m.cancelOrphans()...)
	}
	if len(errs) > 0 {
		m.stopErr = errs[0]
		m.log.Warn("apcore: shutdown could not record every cancel", "failures", len(errs), "error", errs[0])
	}
	close(m.writes)
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
