package apcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"time"
)

// This file is one task's life, step by step, with the store write each
// step makes. One verb a step:
//
//	start    pending -> running, once a worker holds a slot for the task
//	call     the module runs (a panic or runtime.Goexit becomes an error)
//	settle   the attempt is over: finish it, or retry it
//	retry    running -> pending, with a timer for the backoff; requeue when due
//	cancel   pending or running -> cancelled, from Cancel or Shutdown
//	finish   write the terminal record, then forget the handle
//
// Every write of a transition goes through write: Update while this manager
// holds the task, with a SharedStore; SaveIf(from pending, running) with a
// ConditionalSaver; so a terminal record written by anyone (another
// goroutine, another replica) is never overwritten, and a manager whose
// lease lapsed writes nothing. A task's mu is held across each step, store
// write included.

// work runs one attempt of t, from start to settle, then of every task it
// takes from the queue, on one goroutine holding one slot.
func (m *TaskManager) work(w *worker, t *task) {
	defer m.wg.Done()
	if w == nil {
		w = newWorker()
		m.sched.join(w)
	}
	for t != nil {
		if ctx, inputs, ok := m.start(t); ok {
			w.current.Store(t)
			t.worker = w
			result, err := m.call(ctx, t, inputs)
			w.current.Store(nil)
			m.settle(ctx, t, result, err)
		}
		next, idle := m.sched.next(w, true)
		if idle {
			if m.shared != nil && m.mayClaim.Load() {
				m.wakeKeeper() // a slot is free: claim a resumable task for it
			}
			next = w.await() // nil: retired, or the manager shuts down
		}
		t = next
	}
}

// start makes t running and returns what the module call needs; ok is false
// when t was cancelled while it waited, or the store shows it ended. A task
// claimed from a SharedStore is running there already: start only
// announces it.
func (m *TaskManager) start(t *task) (ctx context.Context, inputs map[string]any, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateQueued { // cancelled while it waited
		return nil, nil, false
	}
	if t.startedAt.IsZero() {
		t.startedAt = now()
	}
	if t.claimed {
		t.claimed = false
		m.announce(t, StatusRunning)
	} else if !m.advance(t, StatusRunning) {
		return nil, nil, false
	}
	ctx, t.cancel = &t.ctx, func() {}
	if t.timeout > 0 {
		ctx, t.cancel = context.WithTimeout(ctx, t.timeout)
	}
	t.state = stateRunning
	return ctx, t.inputs, true // inputs read now: a cancel may drop them
}

// call runs the module. A malformed or unknown module id fails at once,
// for good (the protocol's newest text: Submit accepts it, the task fails).
// A panic becomes the attempt's error. A module that calls runtime.Goexit
// (as testing's FailNow does) ends this worker's goroutine; goexited
// settles the attempt and hands the slot on before it goes.
func (m *TaskManager) call(ctx context.Context, t *task, inputs map[string]any) (result any, err error) {
	if err := ValidateModuleID(t.moduleID); err != nil {
		return nil, Permanent(err)
	}
	if m.resolver != nil && !m.resolver.HasModule(t.moduleID) {
		return nil, Permanent(newError(CodeModuleNotFound, "Module not found: %s", t.moduleID))
	}
	returned := false
	defer func() {
		if returned {
			return
		}
		if r := recover(); r != nil {
			result, err = nil, m.panicked(t, r)
			return
		}
		m.goexited(ctx, t)
	}()
	result, err = m.exec.Call(ctx, t.moduleID, inputs)
	returned = true
	return result, err
}

// panicked logs a module's panic with its stack and returns the attempt's
// error.
func (m *TaskManager) panicked(t *task, r any) error {
	m.log.Error("apcore: module panicked", "task_id", t.id, "module_id", t.moduleID,
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return &Error{Code: CodeModuleExecuteError, Message: fmt.Sprintf("panic: %v", r)}
}

// goexited settles an attempt whose module called runtime.Goexit, and
// starts a worker for the next queued task, since this worker's goroutine
// is ending.
func (m *TaskManager) goexited(ctx context.Context, t *task) {
	m.log.Error("apcore: module called runtime.Goexit", "task_id", t.id, "module_id", t.moduleID)
	m.settle(ctx, t, nil, &Error{
		Code:    CodeModuleExecuteError,
		Message: fmt.Sprintf("Module %s called runtime.Goexit instead of returning", t.moduleID),
	})
	w := t.worker
	w.current.Store(nil)
	if next, _ := m.sched.next(w, false); next != nil {
		m.sched.leave(w) // the slot goes on, on a goroutine of its own
		m.wg.Add(1)
		go m.work(nil, next)
	}
}

// settle ends an attempt once the module has returned: completed, failed,
// or a retry. ctx is the attempt's context.
//
// settle keeps one record on its frame and leaves the logging and the
// result check to helpers, to keep the worker's stack small: a worker's
// goroutine begins with a small stack, and the path down to a store's
// write grows it once. Growing it cost 5-7% of the manager's CPU in
// BenchmarkSubmitWait while every start had a new goroutine; that is also
// why workers wait idle for the next task instead (see scheduler).
func (m *TaskManager) settle(ctx context.Context, t *task, result any, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateRunning { // cancelled: the cancel wrote the record
		return
	}
	timedOut := t.timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded)
	t.cancel()
	t.cancel = nil
	if timedOut {
		err = t.timeoutError(err)
	}
	if err == nil && result != nil {
		result, err = m.keepable(t.moduleID, result)
	}
	if err != nil && t.retryCount < t.retry.MaxRetries && retryable(err) {
		m.retry(t, err)
		return
	}
	var info TaskInfo
	if err == nil {
		t.record(&info, StatusCompleted)
		info.Result = result
	} else {
		t.record(&info, StatusFailed)
		info.Error, info.ErrorCode = m.failure(t, err)
	}
	info.CompletedAt = now()
	m.finish(t, &info)
}

// keepable returns the result as the store will give it back, or the
// error that fails the task, for good, when the result cannot be kept: one
// that holds itself or nests too deeply to be copied, or, for a store that
// keeps JSON, one that does not encode. A JSON store's result is the
// JSON-decoded form, so that every reader sees the same value and types.
func (m *TaskManager) keepable(moduleID string, result any) (any, error) {
	if _, err := cloneResult(result, 0); err != nil {
		return nil, Permanent(invalidf("Module %s returned a result that cannot be kept: %v", moduleID, err))
	}
	if !m.jsonResults {
		return result, nil
	}
	b, err := json.Marshal(result)
	if err == nil {
		var decoded any
		if err = json.Unmarshal(b, &decoded); err == nil {
			return decoded, nil
		}
	}
	return nil, Permanent(invalidf("Module %s returned a result that cannot be kept: the store keeps JSON, and it does not encode: %v", moduleID, err))
}

// retryable reports whether a failed attempt may be retried: not when its
// error is Permanent, nor when the module is unknown (the protocol says
// such a task is never retried).
func retryable(err error) bool {
	return !isPermanent(err) && CodeOf(err) != CodeModuleNotFound
}

// failure logs a task's final failure and returns its record's message and
// code: the code of the first *Error in err's chain, or
// MODULE_EXECUTE_ERROR for an error that carries none.
func (m *TaskManager) failure(t *task, err error) (string, ErrorCode) {
	m.log.Warn("apcore: task failed", "task_id", t.id, "module_id", t.moduleID, "retries", t.retryCount, "error", err)
	msg, code := err.Error(), CodeOf(err)
	if msg == "" {
		msg = "module returned an error with an empty message"
	}
	if code == "" {
		code = CodeModuleExecuteError
	}
	return msg, code
}

// retry sends t back to pending for another attempt. t.mu is held. A
// resumable task goes back to the store, held by no one and due when its
// backoff ends, for any manager to claim; any other waits out its backoff
// here, on a timer.
func (m *TaskManager) retry(t *task, cause error) {
	delay := t.retry.ComputeDelay(t.retryCount)
	t.retryCount++
	m.log.Debug("apcore: retrying task", "task_id", t.id, "module_id", t.moduleID,
		"retry", t.retryCount, "delay", delay, "error", cause)
	if t.resumable {
		m.handBack(t, delay)
		return
	}
	if !m.advance(t, StatusPending) {
		return
	}
	if m.shared != nil && !t.watched {
		t.watched = true
		m.watch.store(t.id, t)
	}
	t.state = stateBackoff
	m.wg.Add(1) // done by the timer's function, or by the cancel that stops the timer
	t.timer = time.AfterFunc(delay, func() { m.requeue(t) })
}

// requeue queues t again when its backoff is over.
func (m *TaskManager) requeue(t *task) {
	defer m.wg.Done()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateBackoff { // cancelled meanwhile
		return
	}
	t.state, t.timer = stateQueued, nil
	if w, _ := m.sched.enqueue(t); w != nil { // refused after Shutdown, which then cancels t
		go m.work(w, t)
	}
}

// handBack writes a resumable task back to the store as pending, held by no
// one and due after delay, for any manager to claim, and lets go of it
// here. A store that refuses leaves it to lease recovery. t.mu is held.
func (m *TaskManager) handBack(t *task, delay time.Duration) {
	var info TaskInfo
	t.record(&info, StatusPending)
	t.notBefore = now().Add(delay)
	switch res, err := m.write(t.ctx.parent, t, &info); {
	case err != nil:
		m.log.Warn("apcore: could not hand a resumable task back; lease recovery will", "task_id", t.id, "error", err)
		m.release(t)
	case res == written:
		m.notify(&info)
		m.release(t)
	default:
		m.settleWith(t, &info, res)
	}
}

// cancelTask cancels one of this manager's tasks (see Cancel) and writes
// the cancelled record with ctx.
func (m *TaskManager) cancelTask(ctx context.Context, t *task) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateDone {
		return false, nil
	}
	m.halt(t)
	var info TaskInfo
	t.record(&info, StatusCancelled)
	info.CompletedAt = now()
	res, err := m.write(ctx, t, &info)
	if err != nil {
		m.forget(t, &info, true)
		return false, err
	}
	m.settleWith(t, &info, res)
	return res == written, nil
}

// halt stops an active t where it is: out of the queue, its backoff timer
// stopped, its contexts cancelled (in every state: a helper of an earlier
// attempt may hold the task's context). t.mu is held.
func (m *TaskManager) halt(t *task) {
	switch t.state {
	case stateQueued:
		m.sched.remove(t)
	case stateBackoff:
		if t.timer.Stop() {
			m.wg.Done() // the timer's function will not run
		}
	}
	t.interrupt()
}

// advance writes a non-terminal transition (running, or pending for a
// retry) and announces it. When the store shows the task ended (another
// manager cancelled it) or held by another manager, t goes as that and
// advance reports false. A failing store is logged and the task goes on:
// this manager's handle is the truth for its own tasks, and the terminal
// write will try the store again. t.mu is held.
func (m *TaskManager) advance(t *task, status TaskStatus) bool {
	var info TaskInfo
	t.record(&info, status)
	res, err := m.write(t.ctx.parent, t, &info)
	switch {
	case err != nil:
		m.warnUnrecorded(t, status, err)
	case res != written:
		m.settleWith(t, &info, res)
		return false
	}
	m.notify(&info)
	return true
}

// announce tells the observers that t is now in status, with no write: a
// claimed task is running in the store already. (The record lives in this
// frame, not in start's; see settle on worker stacks.)
func (m *TaskManager) announce(t *task, status TaskStatus) {
	var info TaskInfo
	t.record(&info, status)
	m.notify(&info)
}

// warnUnrecorded logs a transition the store could not record.
func (m *TaskManager) warnUnrecorded(t *task, status TaskStatus, err error) {
	m.log.Warn("apcore: could not record a task transition", "task_id", t.id, "status", status, "error", err)
}

// settleWith ends t here after the store refused its write: as the stored
// outcome when the task ended (res == ended), or let go of when another
// manager holds it now (res == movedOn). t.mu is held.
func (m *TaskManager) settleWith(t *task, info *TaskInfo, res writeResult) {
	if res == movedOn {
		t.interrupt()
		m.release(t)
		return
	}
	m.forget(t, info, false)
}

// outcomeRetries are the pauses before writing a task's outcome again when
// the store failed to take it.
var outcomeRetries = []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// finish writes t's terminal record and forgets t. A store that fails is
// tried again after each of outcomeRetries; if it still fails, the outcome
// is kept in memory (see keep) and logged as an error, unless maxKept
// outcomes are kept already: then finish keeps trying, with backoff, until
// the store takes it or the manager shuts down. t.mu is held.
func (m *TaskManager) finish(t *task, info *TaskInfo) {
	res, err := m.write(t.ctx.parent, t, info)
	for _, pause := range outcomeRetries {
		if err == nil {
			break
		}
		time.Sleep(pause)
		res, err = m.write(t.ctx.parent, t, info)
	}
	for pause := writeBackFirst; err != nil && m.keptFull() && !m.isClosing(); pause = min(pause*2, writeBackMax) {
		time.Sleep(pause) // too many outcomes kept already: hold the slot instead
		res, err = m.write(t.ctx.parent, t, info)
	}
	if err != nil {
		m.log.Error("apcore: could not record a task's outcome; it is kept in memory", "task_id", t.id, "status", info.Status, "error", err)
		m.forget(t, info, true)
		return
	}
	m.settleWith(t, info, res)
}

// forget makes t terminal in memory, wakes its waiters and drops it from the
// manager's table. The record stays on the handle for a Wait that holds it,
// or when the store could not take it (unsaved); otherwise a late Wait reads
// the store, and a finished task costs nothing here. t.mu is held.
func (m *TaskManager) forget(t *task, info *TaskInfo, unsaved bool) {
	t.state = stateDone
	if t.done != nil || unsaved {
		final := *info
		t.final = &final
	}
	if unsaved {
		m.keep(t.final, t.holder)
	}
	m.drop(t)
	m.notify(info)
}

// release lets go of t without a terminal record here: another manager
// holds it now, or it waits in the store for one. Waiters fall back to
// reading the store. t.mu is held.
func (m *TaskManager) release(t *task) {
	t.state, t.final = stateDone, nil
	m.drop(t)
}

// drop takes an ended t out of the table, stops its timers and wakes its
// waiters. t.mu is held.
func (m *TaskManager) drop(t *task) {
	if t.watched {
		t.watched = false
		m.watch.delete(t.id)
	}
	m.tasks.delete(t.id)
	if t.progressTimer != nil && t.progressTimer.Stop() {
		m.wg.Done() // the progress write will not run
	}
	t.inputs, t.cancel, t.timer, t.progressTimer = nil, nil, nil, nil
	if t.done != nil {
		close(t.done)
	}
}

// writeResult is what became of a transition's write.
type writeResult uint8

const (
	written writeResult = iota // the store took it
	ended                      // the task had ended: the record is now the stored outcome
	movedOn                    // another manager holds the task now
)

// write saves a transition of t, or of a task of no manager here when t is
// nil (a cancel through another manager, FailStale). The store never lets
// a terminal record be overwritten: with a SharedStore, t's write happens
// only while this manager holds t (Update); otherwise with SaveIf(from
// pending, running) when the store has it. When the write is refused,
// *info becomes what the store says (see storedOutcome).
func (m *TaskManager) write(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	var ok bool
	var err error
	if m.shared != nil && t != nil {
		ok, err = m.update(ctx, t, info)
	} else {
		ok, err = m.overwrite(ctx, info)
	}
	if err != nil {
		return written, storeErr("save", err)
	}
	if ok {
		return written, nil
	}
	return m.storedOutcome(ctx, t, info)
}

// update is write's Update through a SharedStore: the record, held by this
// manager (or by no one, for a resumable task handed back). (Apart from
// write so that the worker's frames stay small; see settle.)
func (m *TaskManager) update(ctx context.Context, t *task, info *TaskInfo) (bool, error) {
	owner, notBefore := t.holder, time.Time{}
	if t.resumable && info.Status == StatusPending {
		owner, notBefore = "", t.notBefore
	}
	return m.shared.Update(ctx, StoredTask{Info: *info, Owner: owner, NotBefore: notBefore}, t.holder)
}

// overwrite is write without a SharedStore: SaveIf(from pending, running)
// with a ConditionalSaver, a plain Save otherwise. (Apart from write for
// its frame; see settle.)
func (m *TaskManager) overwrite(ctx context.Context, info *TaskInfo) (bool, error) {
	if m.cas != nil {
		return m.cas.SaveIf(ctx, *info, activeStatuses...)
	}
	if err := m.store.Save(ctx, *info); err != nil {
		return false, err
	}
	return true, nil
}

// storedOutcome reads what became of a task whose write the store refused:
// ended, with *info set to the stored terminal record; or movedOn when the
// record is active, which means another manager holds it. A record that is
// gone was lost by the store (a Redis that restarted empty, say; nothing
// else deletes an active record): for a task of this manager (t not nil)
// the manager writes back what it knows, so a known outcome never turns
// into another; for any other task (t nil) it ends cancelled here.
func (m *TaskManager) storedOutcome(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	current, err := m.store.Get(ctx, info.TaskID)
	switch {
	case err == nil && current.Status.IsTerminal():
		*info = current
		return ended, nil
	case err == nil:
		return movedOn, nil
	case !errors.Is(err, ErrTaskNotFound):
		return ended, storeErr("get", err)
	case t != nil:
		return m.restore(ctx, t, info)
	}
	info.Status, info.Result, info.Error, info.ErrorCode = StatusCancelled, nil, "", ""
	if info.CompletedAt.IsZero() {
		info.CompletedAt = now()
	}
	return ended, nil
}

// restore writes back the record of one of this manager's tasks that the
// store lost, as this manager knows it (*info, the write that was refused).
func (m *TaskManager) restore(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	m.log.Warn("apcore: the store lost the record of a task this manager holds; writing it back", "task_id", t.id, "status", info.Status)
	if m.shared == nil || info.Status.IsTerminal() {
		if err := m.store.Save(ctx, *info); err != nil {
			return ended, storeErr("write back", err)
		}
		return written, nil
	}
	st := StoredTask{Info: *info, Owner: t.holder, Resumable: t.resumable, Retry: t.retry, Timeout: t.timeout}
	if t.resumable {
		st.Inputs, _ = json.Marshal(t.inputs) // they encoded at Submit
		if info.Status == StatusPending {
			st.Owner, st.NotBefore = "", t.notBefore
		}
	}
	if _, err := m.shared.Insert(ctx, st, math.MaxInt); err != nil {
		return ended, storeErr("write back", err)
	}
	return written, nil
}
