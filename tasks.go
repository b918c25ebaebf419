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
// completed, failed or cancelled, which are never left or overwritten.
//
//	submit ──> pending ──> running ──> completed
//	             ^  │         │ │
//	     backoff └──┼─────────┘ └────> failed
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
// A pending task is a queued record, not a parked goroutine: it gets a
// goroutine only when a slot frees (and a finishing task's goroutine takes
// the next queued task itself). A task in retry backoff holds a runtime
// timer, not a goroutine. Admission, status and cancel cost the same
// whatever the number of records, with the default MemoryStore.
package apcore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// TaskStatus is the state of a task: one of the five Status constants.
type TaskStatus string

// The five task states.
const (
	// StatusPending: submitted and waiting for a concurrency slot, or waiting
	// out a retry backoff (then RetryCount > 0). Left for running or
	// cancelled.
	StatusPending TaskStatus = "pending"
	// StatusRunning: the module is executing. Left for completed, failed,
	// cancelled, or pending when a failed attempt will be retried.
	StatusRunning TaskStatus = "running"
	// StatusCompleted: the module returned without error; Result holds its
	// output. Terminal.
	StatusCompleted TaskStatus = "completed"
	// StatusFailed: the module failed and no retry is left; Error holds the
	// message. Terminal.
	StatusFailed TaskStatus = "failed"
	// StatusCancelled: cancelled before or during execution; any output was
	// discarded. Terminal.
	StatusCancelled TaskStatus = "cancelled"
)

const numStatuses = 5

// allStatuses lists the states in index order (see statusIndex).
var allStatuses = [numStatuses]TaskStatus{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}

// statusIndex maps a state to 0..4, or -1 for anything else.
func statusIndex(s TaskStatus) int {
	switch s {
	case StatusPending:
		return 0
	case StatusRunning:
		return 1
	case StatusCompleted:
		return 2
	case StatusFailed:
		return 3
	case StatusCancelled:
		return 4
	}
	return -1
}

// IsTerminal reports whether s is completed, failed or cancelled.
func (s TaskStatus) IsTerminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// IsActive reports whether s is pending or running.
func (s TaskStatus) IsActive() bool { return s == StatusPending || s == StatusRunning }

// TaskInfo is one task's record. Zero times mean "not yet".
// It marshals to and from the protocol's JSON wire format (snake_case
// names, times as float Unix seconds, null for unset), see spec/SPEC.md.
type TaskInfo struct {
	// TaskID is the UUID v4 that Submit returned.
	TaskID string
	// ModuleID is the module the task runs.
	ModuleID string
	// Status is the task's state.
	Status TaskStatus
	// SubmittedAt is when Submit saved the record.
	SubmittedAt time.Time
	// StartedAt is when the first attempt started; kept across retries.
	StartedAt time.Time
	// CompletedAt is when the task became terminal.
	CompletedAt time.Time
	// Result is the module's output; set on completed tasks only.
	Result any
	// Error is the failure's message; set on failed tasks only.
	Error string
	// RetryCount is how many retries have been taken.
	RetryCount int
	// MaxRetries is the task's retry budget.
	MaxRetries int
}

// wireTask is TaskInfo's JSON shape, field for field in the protocol's order.
type wireTask struct {
	TaskID      string     `json:"task_id"`
	ModuleID    string     `json:"module_id"`
	Status      TaskStatus `json:"status"`
	SubmittedAt float64    `json:"submitted_at"`
	StartedAt   *float64   `json:"started_at"`
	CompletedAt *float64   `json:"completed_at"`
	Result      any        `json:"result"`
	Error       *string    `json:"error"`
	RetryCount  int        `json:"retry_count"`
	MaxRetries  int        `json:"max_retries"`
}

// wireTaskIn is what UnmarshalJSON reads; pointers tell a missing field
// from a zero one, and the result is kept raw to decode it on its own.
type wireTaskIn struct {
	TaskID      *string         `json:"task_id"`
	ModuleID    *string         `json:"module_id"`
	Status      *TaskStatus     `json:"status"`
	SubmittedAt *float64        `json:"submitted_at"`
	StartedAt   *float64        `json:"started_at"`
	CompletedAt *float64        `json:"completed_at"`
	Result      json.RawMessage `json:"result"`
	Error       *string         `json:"error"`
	RetryCount  *int            `json:"retry_count"`
	MaxRetries  *int            `json:"max_retries"`
}

// The wire format keeps times to the microsecond, and accepts years 1-9999.
const (
	minUnixSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxUnixSeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// unixSeconds is t as float Unix seconds, to the microsecond. The zero time
// is 0.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMicro()) / 1e6
}

// optSeconds is t as a nullable wire time: nil for the zero time.
func optSeconds(t time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	f := unixSeconds(t)
	return &f
}

// fromSeconds converts wire seconds to a UTC time rounded to the microsecond.
func fromSeconds(field string, f float64) (time.Time, error) {
	if math.IsNaN(f) || f < minUnixSeconds || f > maxUnixSeconds {
		return time.Time{}, fmt.Errorf("%s: %v is not a Unix time in years 1-9999", field, f)
	}
	return time.UnixMicro(int64(math.Round(f * 1e6))).UTC(), nil
}

// MarshalJSON encodes the record in the protocol's wire format: snake_case
// names, times as float Unix seconds (microsecond precision), null for an
// unset started_at, completed_at, result or error.
func (t TaskInfo) MarshalJSON() ([]byte, error) {
	w := wireTask{
		TaskID:      t.TaskID,
		ModuleID:    t.ModuleID,
		Status:      t.Status,
		SubmittedAt: unixSeconds(t.SubmittedAt),
		StartedAt:   optSeconds(t.StartedAt),
		CompletedAt: optSeconds(t.CompletedAt),
		Result:      t.Result,
		RetryCount:  t.RetryCount,
		MaxRetries:  t.MaxRetries,
	}
	if t.Error != "" {
		w.Error = &t.Error
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes a record in the protocol's wire format. task_id,
// module_id, status and submitted_at are required; status must be one of the
// five states; times must be Unix seconds in years 1-9999; counts must not be
// negative. Unknown fields are ignored. A result decodes as encoding/json
// decodes into an any (objects to map[string]any, numbers to float64).
// On error t is left unchanged.
func (t *TaskInfo) UnmarshalJSON(data []byte) error {
	var w wireTaskIn
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("apcore: task record: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("apcore: task record: "+format, args...)
	}
	switch {
	case w.TaskID == nil:
		return bad("task_id is missing")
	case w.ModuleID == nil:
		return bad("module_id is missing")
	case w.Status == nil:
		return bad("status is missing")
	case statusIndex(*w.Status) < 0:
		return bad("status %q is not one of pending, running, completed, failed, cancelled", *w.Status)
	case w.SubmittedAt == nil:
		return bad("submitted_at is missing")
	case w.RetryCount != nil && *w.RetryCount < 0:
		return bad("retry_count is negative")
	case w.MaxRetries != nil && *w.MaxRetries < 0:
		return bad("max_retries is negative")
	}
	out := TaskInfo{TaskID: *w.TaskID, ModuleID: *w.ModuleID, Status: *w.Status}
	var err error
	if out.SubmittedAt, err = fromSeconds("submitted_at", *w.SubmittedAt); err != nil {
		return bad("%v", err)
	}
	if *w.SubmittedAt == 0 {
		out.SubmittedAt = time.Time{}
	}
	if w.StartedAt != nil {
		if out.StartedAt, err = fromSeconds("started_at", *w.StartedAt); err != nil {
			return bad("%v", err)
		}
	}
	if w.CompletedAt != nil {
		if out.CompletedAt, err = fromSeconds("completed_at", *w.CompletedAt); err != nil {
			return bad("%v", err)
		}
	}
	if len(w.Result) > 0 && !bytes.Equal(w.Result, []byte("null")) {
		if err := json.Unmarshal(w.Result, &out.Result); err != nil {
			return bad("result: %v", err)
		}
	}
	if w.Error != nil {
		out.Error = *w.Error
	}
	if w.RetryCount != nil {
		out.RetryCount = *w.RetryCount
	}
	if w.MaxRetries != nil {
		out.MaxRetries = *w.MaxRetries
	}
	*t = out
	return nil
}

// ---- the manager ----------------------------------------------------------

// Manager defaults, from the protocol.
const (
	defaultMaxConcurrent = 10
	defaultMaxTasks      = 1000
)

// managerConfig collects the Options given to NewTaskManager.
type managerConfig struct {
	maxConcurrent int
	maxTasks      int
	store         TaskStore
	logger        *slog.Logger
	observer      func(TaskInfo)
	err           error // the first invalid option
}

// fail records the first invalid option.
func (c *managerConfig) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// Option configures a TaskManager; pass them to NewTaskManager.
type Option func(*managerConfig)

// WithMaxConcurrent bounds how many modules run at once. Default 10; 0 means
// nothing ever starts (every task stays pending), negative is invalid.
func WithMaxConcurrent(n int) Option {
	return func(c *managerConfig) {
		if n < 0 {
			c.fail(invalidf("WithMaxConcurrent(%d): the limit must be 0 or more", n))
		}
		c.maxConcurrent = n
	}
}

// WithMaxTasks bounds how many tasks may be active (pending + running) in the
// store at once; terminal records do not count. Default 1000; 0 refuses
// every submit, negative is invalid.
func WithMaxTasks(n int) Option {
	return func(c *managerConfig) {
		if n < 0 {
			c.fail(invalidf("WithMaxTasks(%d): the limit must be 0 or more", n))
		}
		c.maxTasks = n
	}
}

// WithStore sets where task records live. Default: NewMemoryStore(). A nil
// store is invalid.
func WithStore(s TaskStore) Option {
	return func(c *managerConfig) {
		if s == nil {
			c.fail(invalidf("WithStore(nil): a store is required"))
		}
		c.store = s
	}
}

// WithLogger sets the logger for task failures, panics (with their stack),
// store errors and reaper sweeps. Default: discard everything. nil also
// means discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *managerConfig) { c.logger = l }
}

// WithObserver registers fn to be called with a copy of the record after
// every transition the manager makes: pending at submit, running, pending
// again before a retry, and the terminal state. For each task the calls come
// in order, one at a time, on the goroutine making the transition; fn must
// return quickly and must not call the manager about the same task. Default:
// none.
func WithObserver(fn func(TaskInfo)) Option {
	return func(c *managerConfig) { c.observer = fn }
}

// submitConfig collects the SubmitOptions given to Submit.
type submitConfig struct {
	retry   RetryConfig
	timeout time.Duration
	err     error
}

// SubmitOption configures one task; pass them to Submit.
type SubmitOption func(*submitConfig)

// WithRetry sets the task's retry policy (see RetryConfig). Default: no retry.
func WithRetry(cfg RetryConfig) SubmitOption {
	return func(c *submitConfig) {
		if err := cfg.validate(); err != nil && c.err == nil {
			c.err = err
		}
		c.retry = cfg.withDefaults()
	}
}

// WithTimeout bounds each attempt: when d passes, the attempt's context is
// cancelled and, once the module returns, the attempt fails with
// MODULE_TIMEOUT (and is retried if the policy allows). 0 (the default)
// means no bound; negative is invalid.
func WithTimeout(d time.Duration) SubmitOption {
	return func(c *submitConfig) {
		if d < 0 && c.err == nil {
			c.err = invalidf("WithTimeout(%v): the timeout must be 0 (none) or more", d)
		}
		c.timeout = d
	}
}

// TaskManager runs submitted module calls in the background. It is safe for
// concurrent use. Create it with NewTaskManager and end it with Shutdown.
type TaskManager struct {
	exec     Executor
	resolver ModuleResolver // nil when exec cannot tell known modules
	store    TaskStore
	counter  Counter          // nil when the store has no Count
	cas      ConditionalSaver // nil when the store has no SaveIf
	mem      *MemoryStore     // the store, when it is the default kind
	log      *slog.Logger
	observer func(TaskInfo)
	maxTasks int

	// admit makes the capacity check and the save of a new record atomic
	// across concurrent Submits, and orders them with Shutdown.
	admit  sync.Mutex
	closed bool // guarded by admit

	// tasks holds this manager's active tasks, unless the store is a
	// MemoryStore, whose records carry them (see lookup). A task leaves it
	// when it becomes terminal, so it never grows with finished records.
	tasks shardedMap[*task]

	// sched is the FIFO of tasks waiting for a slot (see runner.go).
	sched scheduler

	// wg counts task goroutines and armed retry timers; Shutdown waits on it.
	wg       sync.WaitGroup
	stopOnce sync.Once
	drained  chan struct{} // closed when wg reaches zero after Shutdown

	reaperMu   sync.Mutex
	reaper     *ReaperHandle
	lastReaper *ReaperHandle // the reaper Shutdown stopped; set once, in stopOnce

	// unsaved keeps terminal records the store refused (see keepUnsaved).
	unsaved  shardedMap[*TaskInfo]
	nUnsaved atomic.Int64
}

// NewTaskManager validates its arguments: a nil executor or a negative
// limit is an error with code GENERAL_INVALID_INPUT.
func NewTaskManager(exec Executor, opts ...Option) (*TaskManager, error) {
	if exec == nil {
		return nil, invalidf("NewTaskManager: the executor is nil")
	}
	if f, ok := exec.(ExecutorFunc); ok && f == nil {
		return nil, invalidf("NewTaskManager: the executor is a nil ExecutorFunc")
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
		cfg.store = NewMemoryStore()
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	m := &TaskManager{
		exec:     exec,
		store:    cfg.store,
		log:      cfg.logger,
		observer: cfg.observer,
		maxTasks: cfg.maxTasks,
		drained:  make(chan struct{}),
	}
	m.tasks.init()
	m.unsaved.init()
	m.resolver, _ = exec.(ModuleResolver)
	m.counter, _ = cfg.store.(Counter)
	m.cas, _ = cfg.store.(ConditionalSaver)
	m.mem, _ = cfg.store.(*MemoryStore)
	m.sched.sem = semaphore.NewWeighted(int64(cfg.maxConcurrent))
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
// It fails, saving nothing, with GENERAL_INVALID_INPUT (bad module id or
// option), MODULE_NOT_FOUND (the executor is a ModuleResolver that does not
// know moduleID), TASK_MANAGER_CLOSED (after Shutdown), TASK_LIMIT_EXCEEDED
// (max_tasks active tasks already) or TASK_STORE_UNAVAILABLE (the store
// failed; the error wraps its cause).
//
// inputs is handed to the module as it is, not copied: do not change it after
// Submit.
func (m *TaskManager) Submit(ctx context.Context, moduleID string, inputs map[string]any, opts ...SubmitOption) (string, error) {
	if err := checkCtx(ctx, "Submit"); err != nil {
		return "", err
	}
	if err := ValidateModuleID(moduleID); err != nil {
		return "", err
	}
	if m.resolver != nil && !m.resolver.HasModule(moduleID) {
		return "", newError(CodeModuleNotFound, "Module not found: %s", moduleID)
	}
	var sc submitConfig
	if len(opts) > 0 {
		var err error
		if sc, err = submitOptions(opts); err != nil {
			return "", err
		}
	}
	t := &task{
		owner:       m,
		id:          newTaskID(),
		moduleID:    moduleID,
		inputs:      inputs,
		ctx:         taskCtx{parent: ctx, wg: &m.wg},
		retry:       sc.retry,
		timeout:     sc.timeout,
		submittedAt: now(),
	}
	if ctx.Done() != nil {
		t.ctx.parent = context.WithoutCancel(ctx)
	}
	var info TaskInfo
	t.record(&info, StatusPending)

	// With an observer, the task's lock is held until the pending record is
	// announced, so that neither a worker nor Cancel acts on the task first.
	// Without one nothing needs it, and a worker starting on another core
	// need not wait for this Submit to return.
	if m.observer != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
	}
	m.admit.Lock()
	if err := m.admitLocked(ctx, t, info); err != nil {
		m.admit.Unlock()
		return "", err
	}
	if m.mem == nil {
		m.tasks.store(t.id, t)
	}
	start, _ := m.sched.enqueue(m, t) // never refused: Shutdown closes it only after taking admit
	m.admit.Unlock()
	m.notify(&info)
	if start {
		go m.work(t)
	}
	return t.id, nil
}

// submitOptions applies opts to a fresh config. It is apart from Submit so
// that a Submit without options does not allocate the config on the heap.
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

// admitLocked checks the capacity and saves the new record; m.admit is held.
func (m *TaskManager) admitLocked(ctx context.Context, t *task, info TaskInfo) error {
	if m.closed {
		return &Error{Code: CodeTaskManagerClosed, Message: "Task manager is shut down"}
	}
	active, err := m.count(ctx, activeStatuses...)
	if err != nil {
		return err
	}
	if active >= m.maxTasks {
		return newError(CodeTaskLimitExceeded, "Task limit reached (%d)", m.maxTasks)
	}
	if m.mem != nil {
		rec, err := m.mem.insert(info, t)
		t.rec = rec
		return err
	}
	if err := m.store.Save(ctx, info); err != nil {
		return storeErr("save new task", err)
	}
	return nil
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
		if hasStatus(statuses, all[i].Status) {
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
	if info, ok := m.unsavedOutcome(ctx, taskID); ok {
		return info, nil
	}
	info, err := m.store.Get(ctx, taskID)
	if err != nil {
		return TaskInfo{}, storeErr("get", err)
	}
	return info, nil
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
// returns ctx's error when ctx ends first. For tasks of this manager it wakes
// on the transition itself; for a task that another manager runs on a
// shared store it polls the store, from 10ms up to every second.
func (m *TaskManager) Wait(ctx context.Context, taskID string) (TaskInfo, error) {
	if err := checkCtx(ctx, "Wait"); err != nil {
		return TaskInfo{}, err
	}
	if m.mem != nil { // one lookup finds either the handle or the record
		t, info, err := m.mem.handleOrRecord(taskID, m)
		switch {
		case t != nil:
			return m.waitTask(ctx, t)
		case err != nil || info.Status.IsTerminal():
			return info, err
		}
	} else if t, ok := m.tasks.load(taskID); ok {
		return m.waitTask(ctx, t)
	}
	delay := 10 * time.Millisecond
	for {
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
		delay = min(delay*2, time.Second)
	}
}

// Cancel cancels an active task and reports whether this call did it: false
// (and nil) for an unknown or already terminal task. A pending task never
// runs; a running task's context is cancelled at once; a task in retry
// backoff is never called again. The record is cancelled at once, whatever
// the module returns later. A task of another manager sharing the store is
// cancelled in the store; its module stops when its own manager notices.
//
// If the store fails to record the cancel, the task is still stopped and
// ends cancelled in this manager, and Cancel returns the store's error.
func (m *TaskManager) Cancel(ctx context.Context, taskID string) (bool, error) {
	if err := checkCtx(ctx, "Cancel"); err != nil {
		return false, err
	}
	if t, ok := m.lookup(taskID); ok {
		return m.cancelTask(ctx, t)
	}
	if _, ok := m.unsavedOutcome(ctx, taskID); ok {
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
	info.Status, info.CompletedAt, info.Result, info.Error = StatusCancelled, now(), nil, ""
	return m.transition(ctx, nil, &info)
}

// List returns copies of every record (status "") or of those in one state,
// in insertion order. An unknown status is GENERAL_INVALID_INPUT.
func (m *TaskManager) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if err := checkCtx(ctx, "List"); err != nil {
		return nil, err
	}
	if status != "" && statusIndex(status) < 0 {
		return nil, invalidf("List: unknown status %q", status)
	}
	out, err := m.store.List(ctx, status)
	if err != nil {
		return nil, storeErr("list", err)
	}
	return out, nil
}

// Cleanup deletes terminal records whose reference time (CompletedAt, or
// SubmittedAt when that is unset) is at least maxAge in the past, and returns
// how many it deleted. Active tasks are never deleted; a negative maxAge
// deletes every terminal record.
func (m *TaskManager) Cleanup(ctx context.Context, maxAge time.Duration) (int, error) {
	if err := checkCtx(ctx, "Cleanup"); err != nil {
		return 0, err
	}
	all, err := m.store.List(ctx, "")
	if err != nil {
		return 0, storeErr("list", err)
	}
	cutoff := time.Now()
	var ids []string
	for i := range all {
		t := &all[i]
		if !t.Status.IsTerminal() {
			continue
		}
		ref := t.CompletedAt
		if ref.IsZero() {
			ref = t.SubmittedAt
		}
		if maxAge < 0 || cutoff.Sub(ref) >= maxAge {
			ids = append(ids, t.TaskID)
		}
	}
	return m.deleteAll(ctx, ids)
}

// FailStale ends tasks that a crashed process left active. It marks failed
// every pending or running record in the store that this manager does not
// run and whose last start (StartedAt, or SubmittedAt if it never started)
// is at least olderThan in the past, and returns how many it marked. The
// error message says the task was abandoned.
//
// A record only ever leaves pending or running through the manager that
// runs it, so after a crash its records would stay active for good and
// count against max_tasks. Call FailStale at start-up (olderThan 0 is right
// when no other process shares the store), or now and then with an
// olderThan longer than any task runs when replicas share it: a task that
// another live replica still runs is marked failed too, and that replica's
// late result is then refused. Each record is changed with SaveIf when the
// store has it, so a task that ends meanwhile keeps its own outcome.
func (m *TaskManager) FailStale(ctx context.Context, olderThan time.Duration) (int, error) {
	if err := checkCtx(ctx, "FailStale"); err != nil {
		return 0, err
	}
	if olderThan < 0 {
		return 0, invalidf("FailStale(%v): the age must be 0 or more", olderThan)
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	var errs []error
	for _, status := range activeStatuses {
		records, err := m.store.List(ctx, status)
		if err != nil {
			return n, storeErr("list", err)
		}
		for i := range records {
			info := &records[i]
			last := info.StartedAt
			if last.IsZero() {
				last = info.SubmittedAt
			}
			if last.After(cutoff) {
				continue
			}
			if _, ours := m.lookup(info.TaskID); ours {
				continue
			}
			if _, kept := m.unsaved.load(info.TaskID); kept {
				continue // it ended here; the store has not heard yet
			}
			info.Status, info.CompletedAt, info.Result = StatusFailed, now(), nil
			info.Error = "abandoned: the process running it stopped before it ended (marked by FailStale)"
			saved, err := m.transitionStore(ctx, info)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if saved {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// Reap is one reaper sweep: it deletes the records that the store's
// ListExpired(before) returns (terminal, CompletedAt strictly before before)
// and returns how many it deleted.
func (m *TaskManager) Reap(ctx context.Context, before time.Time) (int, error) {
	if err := checkCtx(ctx, "Reap"); err != nil {
		return 0, err
	}
	expired, err := m.store.ListExpired(ctx, before)
	if err != nil {
		return 0, storeErr("list expired", err)
	}
	ids := make([]string, 0, len(expired))
	for i := range expired {
		if expired[i].Status.IsTerminal() { // a faulty store must not cost us an active task
			ids = append(ids, expired[i].TaskID)
		}
	}
	return m.deleteAll(ctx, ids)
}

// deleteAll deletes ids, going on past failures; it returns how many it
// deleted and the failures joined.
func (m *TaskManager) deleteAll(ctx context.Context, ids []string) (int, error) {
	n := 0
	var errs []error
	for _, id := range ids {
		if err := m.store.Delete(ctx, id); err != nil {
			errs = append(errs, storeErr("delete "+id, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
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

// Shutdown stops the reaper, cancels every active task and waits for their
// goroutines to return (or ctx to end). Later Submits fail with ErrManagerClosed.
// It is idempotent: a second call waits again and returns nil once every
// task goroutine has returned. When ctx ends first it returns ctx's error;
// the tasks are cancelled all the same, and their goroutines end when their
// modules return.
func (m *TaskManager) Shutdown(ctx context.Context) error {
	if err := checkCtx(ctx, "Shutdown"); err != nil {
		return err
	}
	m.stopOnce.Do(func() {
		m.admit.Lock()
		m.closed = true
		m.admit.Unlock()
		m.sched.close()
		m.reaperMu.Lock()
		m.lastReaper = m.reaper
		m.reaperMu.Unlock()
		if m.lastReaper != nil {
			m.lastReaper.signal()
		}
		var errs []error
		for _, t := range m.active() {
			if _, err := m.cancelTask(ctx, t); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			m.log.Warn("apcore: shutdown could not record every cancel", "failures", len(errs), "error", errs[0])
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
			return ctx.Err()
		}
	}
	if left := m.flushUnsaved(ctx); left > 0 {
		return &Error{
			Code:    CodeTaskStoreUnavailable,
			Message: fmt.Sprintf("Shutdown: the store refused the outcome of %d task(s); Status on this manager still reports them", left),
		}
	}
	return nil
}

// now is the current time, to the microsecond (the wire format's precision)
// and in UTC, so a record reads the same from every store.
func now() time.Time { return time.UnixMicro(time.Now().UnixMicro()).UTC() }
