package apcore

import (
	"context"
	"time"
)

// The life of one of this manager's tasks, written down once. A task is in
// one state (taskState); seven transitions move it, each decided under the
// task's lock and each followed, outside the lock, by at most one store
// write and by the observer calls it queued:
//
//	state     transition  when                              next      store write
//	--------  ----------  --------------------------------  --------  -------------------------------
//	queued    start       a worker holds a slot for it      running   running, not waited for (none if claimed or saved running)
//	running   settle      the module returned: done         ending    completed or failed
//	running   settle      the attempt failed, retries left  backoff   pending (a timer holds it)
//	running   settle      the same, for a resumable task    ending    pending, held by no one (handed back)
//	backoff   requeue     the backoff (or run-at) is over   queued    none
//	active    cancel      Cancel, Shutdown                  ending    cancelled
//	active    release     lease lapsed, store shows another ending    none, or pending held by no one
//	                      holder, Drain hands it back                 (Drain, a closing manager)
//	active    adopt       the store shows it ended          ending    none (the stored record is final)
//	ending    end         the write is over (or kept)       done      (kept outcomes: see kept.go)
//
// The functions below carry the transitions' names (start, settle,
// requeue, cancel, release, adopt, end). A few helpers carry out part of
// one, and are named for that part: handBack is the decision of a release
// (or a settle's retry) that writes pending held by no one; halt stops an
// active task where it is (out of the queue, timer stopped, contexts
// cancelled, through interrupt); letGo is end without a record here;
// cancelNow is cancel followed by its write on the caller's goroutine. A
// task due later (WithRunAt) enters backoff at submit, on its timer, and
// leaves it by requeue, as a retry does.
//
// "active" is queued, running or backoff. A transition from a state not in
// its row does nothing: a task that ended is never started, retried or
// cancelled again. A task is done once its end is written (or its outcome
// is kept in memory when the store refuses it): it leaves the manager's
// table, and its waiters wake with its final record (nil when it was let
// go of: they read the store).
//
// Store writes. Every write of a transition goes through write: Update
// while this manager holds the task, with a SharedStore; SaveIf(from
// pending, running) with a ConditionalSaver; so a terminal record written
// by anyone (another goroutine, another replica) is never overwritten, and
// a manager whose lease lapsed writes nothing. Writes of one task are made
// one at a time (task.wmu) in the order their transitions were decided
// (task.seq); one that a later write overtook is skipped. A write made on
// the manager's own behalf is bounded by WithStoreTimeout; one a caller
// waits for (Cancel, Drain, Shutdown) runs on a goroutine of its own, so
// the caller returns by its context's end whatever the store does, and the
// write goes on until the store timeout; a terminal write that fails is
// kept and written later (kept.go).
//
// Lock order, for the whole package. A lock may be taken while holding
// only locks above it:
//
//  1. TaskManager.leaseMu (a context-aware lock: see ctxMutex)
//  2. TaskManager.admitMu (the same, without a SharedStore)
//  3. task.wmu
//  4. task.mu
//  5. scheduler.mu
//  6. taskCtx.mu
//  7. MemoryStore.order, then a shard's lock of MemoryStore or of a
//     shardedMap, then MemoryStore.uniqMu (leaves)
//
// Beside the list, each a leaf taken holding none of the above: the
// wake-up heap (wakeups.mu) and the schedules (scheduleSet.mu).
//
// No store call, sleep or user callback (module, observer, context
// carrier) is made holding task.mu, scheduler.mu or taskCtx.mu; only
// task.wmu and the two context-aware locks are held across a store call,
// and no caller ever blocks on them past its context.

// emit is how a transition announces its record (info) to the observers.
// t.mu is held. When no goroutine is making t's observer calls, the caller
// becomes the one: emit reports true, and the caller makes the call with
// deliver once it has unlocked t.mu. Otherwise the record is queued, and
// the goroutine making the calls makes this one too, in order.
func (m *TaskManager) emit(t *task, info *TaskInfo) bool {
	if m.observers.Load() == nil {
		return false
	}
	if !t.notifying {
		t.notifying = true
		return true
	}
	if t.events == nil {
		t.events = new(taskEvents)
	}
	t.events.queue = append(t.events.queue, *info)
	return false
}

// deliver makes the observer call that emit handed to the caller (info),
// then those queued meanwhile, one at a time, holding no lock, so that an
// observer may call the manager about the same task. t.mu is not held.
func (m *TaskManager) deliver(t *task, info *TaskInfo) {
	m.notify(info)
	t.mu.Lock()
	for ev := t.events; ev != nil && len(ev.queue) > 0; {
		next := ev.queue[0]
		ev.queue[0] = TaskInfo{}
		ev.queue = ev.queue[1:]
		t.mu.Unlock()
		m.notify(&next)
		t.mu.Lock()
	}
	t.notifying = false
	t.mu.Unlock()
}

// decided numbers a transition just decided, for its write. t.mu is held.
func (t *task) decided() uint32 {
	t.seq++
	return t.seq
}

// commit writes the transition numbered seq, unless a later one of t has
// been written already (then it reports overtaken).
func (m *TaskManager) commit(ctx context.Context, t *task, info *TaskInfo, seq uint32) (writeResult, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	late := t.wrote > seq
	if !late {
		t.wrote = seq
	}
	t.mu.Unlock()
	if late {
		return overtaken, nil
	}
	return m.write(ctx, t, info)
}

// start: queued -> running. It returns what the module call needs; ok is
// false when t is no longer queued, or the store shows that it ended or
// that another manager holds it. A task claimed from a SharedStore, or
// saved running by its Submit (which found a slot free, see admit), is
// running there already: start only announces it.
func (m *TaskManager) start(t *task) (ctx context.Context, inputs map[string]any, ok bool) {
	t.mu.Lock()
	if t.state != stateQueued { // cancelled while it waited
		t.mu.Unlock()
		return nil, nil, false
	}
	if t.startedAt.IsZero() {
		t.startedAt = now()
	}
	ctx, t.cancel = &t.ctx, func() {}
	if t.timeout > 0 {
		ctx, t.cancel = context.WithTimeout(ctx, t.timeout)
	}
	t.state = stateRunning
	inputs = t.inputs // read now: a cancel may drop them
	claimed := t.claimed
	t.claimed = false
	var info TaskInfo
	t.record(&info, StatusRunning)
	seq := t.decided()
	announce := m.emit(t, &info)
	t.mu.Unlock()
	if !claimed {
		// The module does not wait for its start's write: that write joins
		// the store's batch on a goroutine of its own, and the task's end,
		// numbered after it, overtakes it when it comes first (commit
		// writes only the latest), so a short task under load makes one
		// write, not two. A store that shows the task ended or held by
		// another manager ends it here as that, interrupting the module.
		// A MemoryStore's write costs less than the goroutine, and has no
		// batch to join, so it is made here.
		if m.nonBlocking {
			m.recordStep(t, &info, seq)
		} else {
			step := info
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.recordStep(t, &step, seq)
			}()
		}
	}
	if announce {
		m.deliver(t, &info)
	}
	t.mu.Lock()
	ok = t.state == stateRunning
	t.mu.Unlock()
	return ctx, inputs, ok
}

// recordStep writes a non-terminal transition (running, or pending for a
// retry). When the store shows the task ended (another manager cancelled
// it) or held by another manager, t ends here as that. A failing store is
// logged and the task goes on: this manager's handle is the truth for its
// own tasks, and the terminal write will try the store again.
func (m *TaskManager) recordStep(t *task, info *TaskInfo, seq uint32) {
	m.recordRunning(t, info, seq, "apcore: could not record a task transition")
}

// recordRunning writes a record of an active t (a transition, or progress)
// and, when the store refuses it, ends t as the store says; a failing
// store is logged with msg.
func (m *TaskManager) recordRunning(t *task, info *TaskInfo, seq uint32, msg string) {
	switch res, err := m.commitOwn(t, info, seq); {
	case err != nil:
		m.log.Warn(msg, "task_id", t.id, "status", info.Status, "error", err)
	case res == ended:
		m.adopt(t, info)
	case res == movedOn:
		m.release(t)
	}
}

// settle: running -> ending (completed or failed), backoff (a retry), or
// ending (a resumable task handed back for its retry). ctx is the attempt's
// context.
//
// settle keeps one record on its frame and leaves the logging and the
// result check to helpers, to keep the worker's stack small: a worker's
// goroutine begins with a small stack, and the path down to a store's
// write grows it once. Growing it cost 5-7% of the manager's CPU in
// BenchmarkSubmitWait while every start had a new goroutine; that is also
// why workers wait idle for the next task instead (see scheduler).
func (m *TaskManager) settle(ctx context.Context, t *task, result any, err error) {
	if err == nil && result != nil {
		result, err = m.keepable(t.moduleID, result)
	}
	t.mu.Lock()
	if t.state != stateRunning { // cancelled, adopted or let go of meanwhile
		t.mu.Unlock()
		return
	}
	if t.timeout > 0 && ctx.Err() == context.DeadlineExceeded {
		err = t.timeoutError(err)
		result = nil
	}
	t.cancel()
	t.cancel = nil
	if err != nil && t.retryCount < t.retry.MaxRetries && retryable(err) {
		m.retry(t, err) // unlocks t.mu
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
	t.state, t.ending = stateEnding, codeOf(info.Status)
	seq := t.decided()
	t.mu.Unlock()
	m.finish(t, &info, seq)
}

// retry sends t back to pending for another attempt; t.mu is held, and
// retry unlocks it. A resumable task goes back to the store, held by no
// one and due when its backoff ends, for any manager to claim; any other
// waits out its backoff here, on a timer.
func (m *TaskManager) retry(t *task, cause error) {
	delay := t.retry.ComputeDelay(t.retryCount)
	t.retryCount++
	m.log.Debug("apcore: retrying task", "task_id", t.id, "module_id", t.moduleID,
		"retry", t.retryCount, "delay", delay, "error", cause)
	if t.resumable {
		seq, info := m.handBack(t, delay)
		t.mu.Unlock()
		m.writeHandBack(t, &info, seq)
		return
	}
	var info TaskInfo
	t.record(&info, StatusPending)
	seq := t.decided()
	if m.shared != nil && !t.watched {
		t.watched = true
		m.watch.store(t.id, t)
	}
	t.state = stateBackoff
	m.wg.Add(1) // done by the timer's function, or by the cancel that stops the timer
	t.timer = time.AfterFunc(delay, func() { m.requeue(t) })
	announce := m.emit(t, &info)
	t.mu.Unlock()
	m.recordStep(t, &info, seq)
	if announce {
		m.deliver(t, &info)
	}
}

// requeue: backoff -> queued, when the backoff is over.
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

// handBack decides that an active t goes back to the store: pending, held
// by no one, due after delay, for any manager to claim. t.mu is held; the
// caller makes the write (writeHandBack) after unlocking.
func (m *TaskManager) handBack(t *task, delay time.Duration) (uint32, TaskInfo) {
	m.halt(t)
	var info TaskInfo
	t.record(&info, StatusPending)
	t.notBefore = now().Add(delay)
	t.state, t.ending = stateEnding, codeOf(StatusPending)
	return t.decided(), info
}

// writeHandBack writes a hand-back and lets go of t. A store that refuses
// leaves the task to lease recovery.
func (m *TaskManager) writeHandBack(t *task, info *TaskInfo, seq uint32) {
	switch res, err := m.commitOwn(t, info, seq); {
	case err != nil:
		m.log.Warn("apcore: could not hand a resumable task back; lease recovery will", "task_id", t.id, "error", err)
	case res == ended:
		m.end(t, info, false)
		return
	case res == written:
		t.mu.Lock()
		announce := m.emit(t, info) // in order after the task's earlier calls
		t.mu.Unlock()
		m.letGo(t)
		if announce {
			m.deliver(t, info)
		}
		return
	}
	m.letGo(t)
}

// writeJob is a cancel or a hand-back decided for a caller (Shutdown,
// Drain), whose write is still to be made; the WaitGroup counts it from
// its decision.
type writeJob struct {
	t    *task
	info TaskInfo
	seq  uint32
}

// handBackJob decides the hand-back of t for Drain or a closing manager,
// if t is active (and queued, when queuedOnly), and counts its write in
// the WaitGroup.
func (m *TaskManager) handBackJob(t *task, queuedOnly bool) (writeJob, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.state.active() || (queuedOnly && t.state != stateQueued) {
		return writeJob{}, false
	}
	seq, info := m.handBack(t, 0)
	m.wg.Add(1)
	return writeJob{t, info, seq}, true
}

// cancelNow cancels t and writes the cancel on the caller's goroutine;
// ok is false when t's end was decided already.
func (m *TaskManager) cancelNow(t *task) (res writeResult, ok bool, err error) {
	info, seq, ok := m.cancel(t)
	if !ok {
		return 0, false, nil
	}
	defer m.wg.Done() // counted by cancel
	res, err = m.finish(t, &info, seq)
	return res, true, err
}

// cancel: active -> ending (cancelled). It reports false when t's end was
// decided already. t.mu is not held. The write is the caller's to make
// (finish); the WaitGroup counts it from here, under t.mu, so that
// Shutdown's wait never starts before it is counted.
func (m *TaskManager) cancel(t *task) (info TaskInfo, seq uint32, ok bool) {
	return m.decideCancel(t, true)
}

// refuse cancels t, which its Submit saved only to find the manager closed
// (or its caller gone), and writes the cancel on the caller's goroutine,
// which waits for it. The WaitGroup does not count that write: Shutdown
// may have looked at the table before t joined it, and be waiting on a
// count that has reached zero, which must not rise again.
func (m *TaskManager) refuse(t *task) {
	if info, seq, ok := m.decideCancel(t, false); ok {
		m.finish(t, &info, seq)
	}
}

// decideCancel is cancel; counted says whether the WaitGroup counts the
// write.
func (m *TaskManager) decideCancel(t *task, counted bool) (info TaskInfo, seq uint32, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.state.active() {
		return info, 0, false
	}
	m.halt(t)
	t.record(&info, StatusCancelled)
	info.CompletedAt = now()
	t.state, t.ending = stateEnding, codeOf(StatusCancelled)
	if counted {
		m.wg.Add(1)
	}
	return info, t.decided(), true
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

// release: active (or ending, for a hand-back) -> done without a record
// here: another manager holds t now, or it waits in the store for one.
func (m *TaskManager) release(t *task) {
	t.mu.Lock()
	if t.state.active() {
		m.halt(t)
		t.state, t.ending = stateEnding, codeOf(StatusPending)
	}
	t.mu.Unlock()
	m.letGo(t)
}

// letGo is the end of a task let go of: done, with no record here.
func (m *TaskManager) letGo(t *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateDone {
		t.final = nil
		m.done(t)
	}
}

// adopt: active -> done as the record the store holds (info), which ended
// without this manager: a cancel through another replica, say.
func (m *TaskManager) adopt(t *task, info *TaskInfo) {
	t.mu.Lock()
	if !t.state.active() { // its end is decided here already
		t.mu.Unlock()
		return
	}
	m.halt(t)
	t.state, t.ending = stateEnding, codeOf(info.Status)
	t.mu.Unlock()
	m.end(t, info, false)
}

// outcomeRetries are the pauses before writing a task's outcome again when
// the store failed to take it.
var outcomeRetries = []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// finish writes an ending t's terminal record (numbered seq) and ends t:
// as written, or as the store's record when the task had ended there
// meanwhile. A store that fails is tried again after each of
// outcomeRetries; if it still fails, the outcome is kept in memory (see
// keep) and logged as an error, unless maxKept outcomes are kept already:
// then finish keeps trying, with backoff, until the store takes it or the
// manager shuts down. It returns the write's result and the store's error.
func (m *TaskManager) finish(t *task, info *TaskInfo, seq uint32) (writeResult, error) {
	res, err := m.commitOwn(t, info, seq)
	for _, pause := range outcomeRetries {
		if err == nil {
			break
		}
		time.Sleep(pause) // holding nothing but the slot
		res, err = m.commitOwn(t, info, seq)
	}
	for pause := writeBackFirst; err != nil && m.keptFull() && !m.isClosing(); pause = min(pause*2, writeBackMax) {
		time.Sleep(pause) // too many outcomes kept already: hold the slot instead
		res, err = m.commitOwn(t, info, seq)
	}
	switch {
	case err != nil:
		m.log.Error("apcore: could not record a task's outcome; it is kept in memory", "task_id", t.id, "status", info.Status, "error", err)
		m.end(t, info, true)
	case res == movedOn:
		m.letGo(t)
	default:
		m.end(t, info, false)
	}
	return res, err
}

// commitOwn is commit with a context of the store timeout.
func (m *TaskManager) commitOwn(t *task, info *TaskInfo, seq uint32) (writeResult, error) {
	ctx, cancel := m.ownCtx()
	defer cancel()
	return m.commit(ctx, t, info, seq)
}

// end: ending -> done, with info as the final record. The record stays on
// the handle for a Wait that holds it, or when the store could not take it
// (unsaved: it is kept, see keep); otherwise a late Wait reads the store,
// and a finished task costs nothing here.
func (m *TaskManager) end(t *task, info *TaskInfo, unsaved bool) {
	t.mu.Lock()
	if t.state == stateDone {
		t.mu.Unlock()
		return
	}
	if t.done != nil || unsaved {
		final := *info
		t.final = &final
	}
	if unsaved {
		m.keep(t.final, t.holder)
	}
	announce := m.emit(t, info)
	m.done(t)
	t.mu.Unlock()
	if announce {
		m.deliver(t, info)
	}
}

// done takes t out of the table, stops its timers and wakes its waiters.
// t.mu is held.
func (m *TaskManager) done(t *task) {
	t.state = stateDone
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
