package apcore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/semaphore"
)

// This file runs tasks. The rules, in one place:
//
//   - A pending task waits as a node in the scheduler's FIFO, not as a
//     goroutine. A goroutine exists only for a task that holds one of the
//     semaphore's slots; when its task is done it takes the next queued task
//     itself, and releases the slot only when the queue is empty.
//   - The queue is never non-empty while a slot is free: enqueue and the
//     release in next both happen under the scheduler's lock.
//   - A task's mu orders everything that happens to it (start, finish,
//     retry, cancel, wait). Lock order: task.mu, then scheduler.mu.
//   - A task in retry backoff holds a runtime timer (time.AfterFunc), not a
//     goroutine and not a slot.
//   - Every store write of a transition goes through transition, which uses
//     SaveIf(from pending, running) when the store has it, so a terminal
//     record written by anyone is never overwritten.

// taskState is where a task of this manager is in its life.
type taskState uint8

const (
	stateQueued  taskState = iota // pending: in the queue or about to be
	stateRunning                  // a goroutine is calling the module
	stateBackoff                  // pending: waiting out a retry delay
	stateDone                     // terminal (final holds the record if a Wait needs it)
)

// task is the manager's handle on one of its active tasks.
type task struct {
	owner        *TaskManager
	id, moduleID string
	inputs       map[string]any
	ctx          taskCtx // what the module runs with
	retry        RetryConfig
	timeout      time.Duration
	submittedAt  time.Time

	mu         sync.Mutex
	state      taskState
	startedAt  time.Time
	retryCount int
	cancel     context.CancelFunc // set while running: ends the attempt's timeout context
	timer      *time.Timer        // set while in backoff
	done       chan struct{}      // made by the first Wait, closed at the end
	final      *TaskInfo          // the terminal record, kept once done if a Wait needs it

	// rec is the task's record when the store is a *MemoryStore, so
	// transitions skip the lookup and the record carries the handle (see
	// MemoryStore.insert).
	rec *memRecord

	// Queue links, guarded by scheduler.mu.
	prev, next *task
	queued     bool
}

// record fills info with the task's record in status, from what the handle
// knows. (It fills rather than returns, so callers hold one copy.)
func (t *task) record(info *TaskInfo, status TaskStatus) {
	info.TaskID, info.ModuleID, info.Status = t.id, t.moduleID, status
	info.SubmittedAt, info.StartedAt = t.submittedAt, t.startedAt
	info.RetryCount, info.MaxRetries = t.retryCount, t.retry.MaxRetries
}

// waitTask blocks until t is terminal or ctx ends.
func (m *TaskManager) waitTask(ctx context.Context, t *task) (TaskInfo, error) {
	t.mu.Lock()
	if t.state == stateDone {
		final := t.final
		t.mu.Unlock()
		if final == nil { // ended before anyone waited: the store has it
			return m.Status(ctx, t.id)
		}
		return final.clone(), nil
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.final.clone(), nil
	case <-ctx.Done():
		return TaskInfo{}, ctx.Err()
	}
}

// taskCtx is the context a task's module runs with: the values of Submit's
// context (parent), no deadline and no cancellation of its own but Cancel's
// and Shutdown's. It lives inside the task, so starting an attempt allocates
// nothing (context.WithCancel would allocate twice per task), and it
// implements AfterFunc, so a context a module derives from it costs no
// goroutine (the context package uses AfterFunc to propagate cancellation).
type taskCtx struct {
	parent context.Context // Submit's ctx without its cancellation
	wg     *sync.WaitGroup // counts AfterFunc goroutines that cancel starts

	mu     sync.Mutex
	done   chan struct{} // made by the first Done
	err    error
	afters []*afterFunc
}

// afterFunc is one AfterFunc registration.
type afterFunc struct{ f func() }

var _ context.Context = (*taskCtx)(nil)

// Deadline reports no deadline: a task outlives its request.
func (c *taskCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns a channel closed when the task is cancelled.
func (c *taskCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

// Err returns context.Canceled once the task is cancelled, nil before.
func (c *taskCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value returns the value Submit's context has for key.
func (c *taskCtx) Value(key any) any { return c.parent.Value(key) }

// String names the context in debugging output.
func (c *taskCtx) String() string { return "apcore.taskContext" }

// AfterFunc runs f in its own goroutine once the task is cancelled (at once
// if it already is); stop unregisters f and reports whether it did so
// before f started. It has the semantics of context.AfterFunc.
func (c *taskCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.afters = append(c.afters, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.afters {
			if x == a {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel cancels the task's context; later calls do nothing.
func (c *taskCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	// cancel runs only while the task's worker runs, so the WaitGroup is
	// above zero here and Shutdown waits for these goroutines too.
	if c.wg != nil {
		c.wg.Add(len(afters))
	}
	for _, a := range afters {
		go func() {
			if c.wg != nil {
				defer c.wg.Done()
			}
			a.f()
		}()
	}
}

// scheduler is the FIFO of tasks waiting for a slot, and the slots.
type scheduler struct {
	mu         sync.Mutex
	sem        *semaphore.Weighted
	head, tail *task
	closed     bool // after Shutdown: nothing new starts
}

// enqueue queues t, or takes a free slot for it and reports that the caller
// must start a worker on it (start; the WaitGroup already counts it), so
// that the goroutine can be started after the caller's locks are released.
// ok is false, and nothing done, once the scheduler is closed.
func (s *scheduler) enqueue(m *TaskManager, t *task) (start, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, false
	}
	if s.sem.TryAcquire(1) { // a free slot means an empty queue: t is next
		m.wg.Add(1)
		return true, true
	}
	t.queued, t.prev = true, s.tail
	if s.tail == nil {
		s.head = t
	} else {
		s.tail.next = t
	}
	s.tail = t
	return false, true
}

// remove takes t out of the queue if it is there. t.mu is held.
func (s *scheduler) remove(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.queued {
		s.unlink(t)
	}
}

// unlink takes a queued t out of the list; s.mu is held.
func (s *scheduler) unlink(t *task) {
	if t.prev == nil {
		s.head = t.next
	} else {
		t.prev.next = t.next
	}
	if t.next == nil {
		s.tail = t.prev
	} else {
		t.next.prev = t.prev
	}
	t.prev, t.next, t.queued = nil, nil, false
}

// next hands the caller's slot to the first queued task, or releases the
// slot when there is none (or the scheduler is closed).
func (s *scheduler) next() *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.head; t != nil && !s.closed {
		s.unlink(t)
		return t
	}
	s.sem.Release(1)
	return nil
}

// close stops new starts: queued tasks stay queued for Shutdown to cancel.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// work runs t, then every task it takes from the queue, on one goroutine
// holding one slot.
func (m *TaskManager) work(t *task) {
	defer m.wg.Done()
	for t != nil {
		m.attempt(t)
		t = m.sched.next()
	}
}

// attempt runs one attempt of t: running, the module call, then completed,
// failed, or pending again for a retry. Its parts are separate functions so
// that a worker's stack stays within the first 2 KiB a goroutine gets.
func (m *TaskManager) attempt(t *task) {
	ctx, cancel, inputs, ok := m.begin(t)
	if !ok {
		return
	}
	result, err := m.call(ctx, t, inputs)
	timedOut := t.timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	m.complete(t, result, err, timedOut)
}

// begin makes t running and returns what the module call needs; ok is false
// when t was cancelled while it waited.
func (m *TaskManager) begin(t *task) (ctx context.Context, cancel context.CancelFunc, inputs map[string]any, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateQueued { // cancelled while it waited
		return nil, nil, nil, false
	}
	if t.startedAt.IsZero() {
		t.startedAt = now()
	}
	var info TaskInfo
	t.record(&info, StatusRunning)
	if !m.step(t, &info) {
		return nil, nil, nil, false
	}
	ctx, cancel = &t.ctx, func() {}
	if t.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, t.timeout)
	}
	t.state, t.cancel = stateRunning, cancel
	m.notify(&info)
	return ctx, cancel, t.inputs, true // inputs read now: a cancel may drop them
}

// complete settles an attempt once the module has returned.
func (m *TaskManager) complete(t *task, result any, err error, timedOut bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateRunning { // cancelled: Cancel has written the record
		return
	}
	t.cancel = nil
	switch {
	case timedOut:
		m.failed(t, t.timeoutError(err))
	case err != nil:
		m.failed(t, err)
	default:
		var info TaskInfo
		t.record(&info, StatusCompleted)
		info.CompletedAt, info.Result = now(), result
		m.finish(t, &info)
	}
}

// timeoutError is the error of an attempt that ran past its timeout.
func (t *task) timeoutError(cause error) error {
	return &Error{
		Code:    CodeModuleTimeout,
		Message: fmt.Sprintf("Module %s timed out after %v", t.moduleID, t.timeout),
		Cause:   cause,
	}
}

// logStoreFailure logs a transition the store could not record. (Apart from
// its callers to keep their stack frames small.)
func (m *TaskManager) logStoreFailure(level slog.Level, msg string, t *task, status TaskStatus, err error) {
	m.log.Log(context.Background(), level, msg, "task_id", t.id, "status", status, "error", err)
}

// failed handles a failed attempt: a retry if the policy allows, the failed
// state otherwise. t.mu is held.
func (m *TaskManager) failed(t *task, err error) {
	if t.retryCount < t.retry.MaxRetries && !isPermanent(err) {
		m.backoff(t, err)
		return
	}
	var info TaskInfo
	t.record(&info, StatusFailed)
	info.CompletedAt, info.Error = now(), err.Error()
	if info.Error == "" {
		info.Error = "module returned an error with an empty message"
	}
	m.log.Warn("apcore: task failed", "task_id", t.id, "module_id", t.moduleID, "retries", t.retryCount, "error", err)
	m.finish(t, &info)
}

// call runs the module, turning a panic into an error.
func (m *TaskManager) call(ctx context.Context, t *task, inputs map[string]any) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, m.panicked(t, r)
		}
	}()
	return m.exec.Call(ctx, t.moduleID, inputs)
}

// panicked logs a module's panic with its stack and returns the attempt's
// error.
func (m *TaskManager) panicked(t *task, r any) error {
	m.log.Error("apcore: module panicked", "task_id", t.id, "module_id", t.moduleID,
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return &Error{Code: CodeModuleExecuteError, Message: fmt.Sprintf("panic: %v", r)}
}

// backoff sends t back to pending and arms its retry timer. t.mu is held.
func (m *TaskManager) backoff(t *task, cause error) {
	delay := t.retry.ComputeDelay(t.retryCount)
	t.retryCount++
	var info TaskInfo
	t.record(&info, StatusPending)
	if !m.step(t, &info) {
		return
	}
	m.log.Debug("apcore: retrying task", "task_id", t.id, "module_id", t.moduleID,
		"retry", t.retryCount, "delay", delay, "error", cause)
	t.state = stateBackoff
	m.wg.Add(1) // done by the timer's function, or by whoever stops the timer
	t.timer = time.AfterFunc(delay, func() { m.retryDue(t) })
	m.notify(&info)
}

// retryDue queues t again when its backoff is over.
func (m *TaskManager) retryDue(t *task) {
	defer m.wg.Done()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateBackoff { // cancelled meanwhile
		return
	}
	t.state, t.timer = stateQueued, nil
	if start, _ := m.sched.enqueue(m, t); start { // refused after Shutdown, which then cancels t
		go m.work(t)
	}
}

// step writes a non-terminal transition. When the store shows the task
// already terminal (another manager cancelled it) or gone, t ends with that
// and step reports false. A failing store is logged and the task goes on:
// this manager's handle is the truth for its own tasks, and the terminal
// write will try the store again. t.mu is held.
func (m *TaskManager) step(t *task, info *TaskInfo) bool {
	saved, err := m.transition(t.ctx.parent, t.rec, info)
	if err != nil {
		m.logStoreFailure(slog.LevelWarn, "apcore: could not record a task transition", t, info.Status, err)
		return true
	}
	if !saved {
		m.end(t, info, false)
		return false
	}
	return true
}

// outcomeRetries are the pauses before writing a task's outcome again when
// the store failed to take it.
var outcomeRetries = []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// finish writes t's terminal record and ends it. A store that fails is tried
// again after each of outcomeRetries; if it still fails, the outcome is kept
// in memory (see keepUnsaved) and logged as an error. t.mu is held.
func (m *TaskManager) finish(t *task, info *TaskInfo) {
	_, err := m.transition(t.ctx.parent, t.rec, info)
	for _, pause := range outcomeRetries {
		if err == nil {
			break
		}
		time.Sleep(pause)
		_, err = m.transition(t.ctx.parent, t.rec, info)
	}
	if err != nil {
		m.logStoreFailure(slog.LevelError, "apcore: could not record a task's outcome; it is kept in memory", t, info.Status, err)
	}
	m.end(t, info, err != nil)
}

// end makes t terminal in memory, wakes its waiters and forgets it. The
// record stays on the handle for a Wait that holds it, or when the store
// could not take it (unsaved); otherwise a late Wait reads the store, and a
// finished task costs nothing here. t.mu is held.
func (m *TaskManager) end(t *task, info *TaskInfo, unsaved bool) {
	t.state = stateDone
	if t.done != nil || unsaved {
		final := *info
		t.final = &final
	}
	if unsaved {
		m.keepUnsaved(t.final)
	}
	if t.rec != nil {
		m.mem.release(t.rec)
	} else {
		m.tasks.delete(t.id)
	}
	t.inputs, t.cancel, t.timer, t.rec = nil, nil, nil, nil
	if t.done != nil {
		close(t.done)
	}
	m.notify(info)
}

// transition saves an active task's new record. With a ConditionalSaver the
// write happens only if the stored record is still active. When it is not,
// saved is false and *info becomes what the task ended as: the stored
// terminal record, or a cancelled one when the record has vanished. rec,
// when not nil, is the task's record in the memory store. Records go by
// pointer here, to keep the worker's stack small.
func (m *TaskManager) transition(ctx context.Context, rec *memRecord, info *TaskInfo) (saved bool, err error) {
	if rec == nil {
		return m.transitionStore(ctx, info)
	}
	if m.mem.saveIfRecord(rec, info, activeStatuses) {
		return true, nil
	}
	return false, m.settled(ctx, info)
}

// transitionStore is transition through the TaskStore interface.
func (m *TaskManager) transitionStore(ctx context.Context, info *TaskInfo) (saved bool, err error) {
	if m.cas == nil {
		if err := m.store.Save(ctx, *info); err != nil {
			return false, storeErr("save", err)
		}
		return true, nil
	}
	saved, err = m.cas.SaveIf(ctx, *info, activeStatuses...)
	if err != nil {
		return false, storeErr("save", err)
	}
	if saved {
		return true, nil
	}
	return false, m.settled(ctx, info)
}

// settled sets *info to what a task that could not be written ended as.
func (m *TaskManager) settled(ctx context.Context, info *TaskInfo) error {
	current, err := m.store.Get(ctx, info.TaskID)
	if err == nil && current.Status.IsTerminal() {
		*info = current
		return nil
	}
	if err != nil && !errors.Is(err, ErrTaskNotFound) {
		return storeErr("get", err)
	}
	// Gone, or active again in a way SaveIf refused: a record this manager
	// can no longer own. It ends cancelled.
	info.Status, info.Result, info.Error = StatusCancelled, nil, ""
	if info.CompletedAt.IsZero() {
		info.CompletedAt = now()
	}
	return nil
}

// keepUnsaved keeps a terminal record that the store refused, so that
// Status, Result, Wait and Cancel still report it; each of them, and
// Shutdown, tries to write it again.
func (m *TaskManager) keepUnsaved(info *TaskInfo) {
	m.unsaved.store(info.TaskID, info)
	m.nUnsaved.Add(1)
}

// unsavedOutcome returns the kept outcome of a task whose terminal record
// the store refused, after one more try at writing it.
func (m *TaskManager) unsavedOutcome(ctx context.Context, taskID string) (TaskInfo, bool) {
	if m.nUnsaved.Load() == 0 {
		return TaskInfo{}, false
	}
	kept, ok := m.unsaved.load(taskID)
	if !ok {
		return TaskInfo{}, false
	}
	info, _ := m.writeKept(ctx, kept)
	return info, true
}

// flushUnsaved tries once more to write every kept outcome and returns how
// many the store still refuses.
func (m *TaskManager) flushUnsaved(ctx context.Context) int {
	if m.nUnsaved.Load() == 0 {
		return 0
	}
	left := 0
	for _, kept := range m.unsaved.values() {
		if _, written := m.writeKept(ctx, kept); !written {
			left++
		}
	}
	return left
}

// writeKept tries once more to write a kept outcome, and forgets it once
// the store holds a terminal record. It returns what the task ended as (the
// store's record if another writer got there first) and whether the store
// now has it.
func (m *TaskManager) writeKept(ctx context.Context, kept *TaskInfo) (TaskInfo, bool) {
	info := kept.clone()
	if _, err := m.transitionStore(ctx, &info); err != nil {
		return kept.clone(), false
	}
	if m.unsaved.remove(kept.TaskID) {
		m.nUnsaved.Add(-1)
	}
	return info, true
}

// lookup returns this manager's handle on an active task.
func (m *TaskManager) lookup(taskID string) (*task, bool) {
	if m.mem != nil {
		return m.mem.handleOf(taskID, m)
	}
	return m.tasks.load(taskID)
}

// active returns this manager's handles on its active tasks.
func (m *TaskManager) active() []*task {
	if m.mem != nil {
		return m.mem.handles(m)
	}
	return m.tasks.values()
}

// cancelTask cancels one of this manager's tasks (see Cancel).
func (m *TaskManager) cancelTask(ctx context.Context, t *task) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case stateDone:
		return false, nil
	case stateQueued:
		m.sched.remove(t)
	case stateRunning:
		t.ctx.cancel()
		t.cancel() // the attempt's timeout context, at once rather than by propagation
	case stateBackoff:
		if t.timer.Stop() {
			m.wg.Done() // the timer's function will not run
		}
	}
	var info TaskInfo
	t.record(&info, StatusCancelled)
	info.CompletedAt = now()
	saved, err := m.transition(ctx, t.rec, &info)
	m.end(t, &info, err != nil)
	return saved, err
}

// notify hands a copy of info to the observer, if there is one.
func (m *TaskManager) notify(info *TaskInfo) {
	if m.observer != nil {
		m.observer(info.clone())
	}
}

// idPool hands out random bytes for task ids from a buffer refilled from
// crypto/rand, so an id costs one small copy instead of a system call.
var idPool struct {
	sync.Mutex
	buf [16 * 256]byte
	pos int
}

func init() { idPool.pos = len(idPool.buf) }

// newTaskID returns a random (version 4) UUID as a string.
func newTaskID() string {
	var u uuid.UUID
	idPool.Lock()
	if idPool.pos == len(idPool.buf) {
		_, _ = rand.Read(idPool.buf[:]) // never fails (crypto/rand.Read documents it)
		idPool.pos = 0
	}
	copy(u[:], idPool.buf[idPool.pos:])
	clear(idPool.buf[idPool.pos : idPool.pos+16])
	idPool.pos += 16
	idPool.Unlock()
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}
