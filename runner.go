package apcore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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
//   - The queue is never non-empty while a slot is free: push and the
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
	stateDone                     // terminal; final holds the record
)

// task is the manager's handle on one of its active tasks.
type task struct {
	owner        *TaskManager
	id, moduleID string
	inputs       map[string]any
	ctx          context.Context // Submit's ctx without its cancellation
	retry        RetryConfig
	timeout      time.Duration
	submittedAt  time.Time

	mu         sync.Mutex
	state      taskState
	startedAt  time.Time
	retryCount int
	cancel     context.CancelFunc // set while running
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

// record builds the task's record in status from what the handle knows.
func (t *task) record(status TaskStatus) TaskInfo {
	return TaskInfo{
		TaskID:      t.id,
		ModuleID:    t.moduleID,
		Status:      status,
		SubmittedAt: t.submittedAt,
		StartedAt:   t.startedAt,
		RetryCount:  t.retryCount,
		MaxRetries:  t.retry.MaxRetries,
	}
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

// scheduler is the FIFO of tasks waiting for a slot, and the slots.
type scheduler struct {
	mu         sync.Mutex
	sem        *semaphore.Weighted
	head, tail *task
	closed     bool // after Shutdown: nothing new starts
}

// push starts t on a new goroutine if a slot is free, and queues it
// otherwise. It reports false, doing nothing, once the scheduler is closed.
// t.mu is held by the caller.
func (s *scheduler) push(m *TaskManager, t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.sem.TryAcquire(1) { // a free slot means an empty queue: t is next
		m.wg.Add(1)
		go m.work(t)
		return true
	}
	t.queued, t.prev = true, s.tail
	if s.tail == nil {
		s.head = t
	} else {
		s.tail.next = t
	}
	s.tail = t
	return true
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
// failed, or pending again for a retry.
func (m *TaskManager) attempt(t *task) {
	t.mu.Lock()
	if t.state != stateQueued { // cancelled while it waited
		t.mu.Unlock()
		return
	}
	if t.startedAt.IsZero() {
		t.startedAt = now()
	}
	info := t.record(StatusRunning)
	if !m.step(t, &info) {
		t.mu.Unlock()
		return
	}
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	if t.timeout > 0 {
		ctx, cancel = context.WithTimeout(t.ctx, t.timeout)
	} else {
		ctx, cancel = context.WithCancel(t.ctx)
	}
	t.state, t.cancel = stateRunning, cancel
	inputs := t.inputs // a cancel may drop t.inputs while the module runs
	m.notify(&info)
	t.mu.Unlock()

	result, err := m.call(ctx, t, inputs)
	timedOut := t.timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateRunning { // cancelled: Cancel has written the record
		return
	}
	t.cancel = nil
	if timedOut {
		result, err = nil, &Error{
			Code:    CodeModuleTimeout,
			Message: fmt.Sprintf("Module %s timed out after %v", t.moduleID, t.timeout),
			Cause:   err,
		}
	}
	if err == nil {
		info = t.record(StatusCompleted)
		info.CompletedAt, info.Result = now(), result
		m.finish(t, &info)
		return
	}
	if t.retryCount < t.retry.MaxRetries && !isPermanent(err) {
		m.backoff(t, err)
		return
	}
	info = t.record(StatusFailed)
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
			m.log.Error("apcore: module panicked", "task_id", t.id, "module_id", t.moduleID,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			result, err = nil, &Error{Code: CodeModuleExecuteError, Message: fmt.Sprintf("panic: %v", r)}
		}
	}()
	return m.exec.Call(ctx, t.moduleID, inputs)
}

// backoff sends t back to pending and arms its retry timer. t.mu is held.
func (m *TaskManager) backoff(t *task, cause error) {
	delay := t.retry.ComputeDelay(t.retryCount)
	t.retryCount++
	info := t.record(StatusPending)
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
	m.sched.push(m, t) // refused after Shutdown, which then cancels t
}

// step writes a non-terminal transition. When the store shows the task
// already terminal (another manager cancelled it) or gone, t ends with that
// and step reports false. A failing store is logged and the task goes on:
// this manager's handle is the truth for its own tasks, and the terminal
// write will try the store again. t.mu is held.
func (m *TaskManager) step(t *task, info *TaskInfo) bool {
	saved, err := m.transition(t.ctx, t.rec, info)
	if err != nil {
		m.log.Warn("apcore: could not record a task transition", "task_id", t.id, "status", info.Status, "error", err)
		return true
	}
	if !saved {
		m.end(t, info, false)
		return false
	}
	return true
}

// finish writes t's terminal record and ends it. t.mu is held.
func (m *TaskManager) finish(t *task, info *TaskInfo) {
	_, err := m.transition(t.ctx, t.rec, info)
	if err != nil {
		m.log.Error("apcore: could not record a task's outcome", "task_id", t.id, "status", info.Status, "error", err)
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
	if t.rec != nil {
		m.mem.release(t.rec)
	} else {
		m.tasks.delete(t.id)
	}
	t.inputs, t.ctx, t.cancel, t.timer, t.rec = nil, nil, nil, nil, nil
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
	switch {
	case rec != nil:
		if m.mem.saveIfRecord(rec, info, activeStatuses) {
			return true, nil
		}
	case m.cas == nil:
		if err := m.store.Save(ctx, *info); err != nil {
			return false, storeErr("save", err)
		}
		return true, nil
	default:
		saved, err = m.cas.SaveIf(ctx, *info, activeStatuses...)
		if err != nil {
			return false, storeErr("save", err)
		}
		if saved {
			return true, nil
		}
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
		t.cancel()
	case stateBackoff:
		if t.timer.Stop() {
			m.wg.Done() // the timer's function will not run
		}
	}
	info := t.record(StatusCancelled)
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
