package apcore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// This file is what a manager does beside its own tasks when its store is a
// SharedStore, so that replicas sharing the store behave as one manager.
// Four components, each a loop of its own (see loop.go), so that a store
// call that hangs in one never holds up another:
//
//   - the lease keeper (lease.go) holds a lease under an owner id, renewed
//     every third of the TTL. Its tasks are held by that id in the store,
//     and every write of theirs is conditional on still holding them, so
//     once the lease has lapsed and another manager recovered them, no late
//     write lands (fencing). When the lease can no longer be known to be
//     valid, the manager stops its modules and lets go of its tasks, then
//     takes a lease under a new id.
//   - the recoverer asks the store, every half TTL, to Recover what dead
//     managers held, so a crashed replica's tasks are recovered within about
//     two TTLs by whichever manager looks first.
//   - the watcher asks, every poll interval, which of its tasks it no
//     longer holds (Lost): a cancel through another manager, or a recovery,
//     shows up there, and the module is stopped within one interval.
//   - the claimer, while there are free slots and the manager is not
//     draining, claims resumable tasks of the modules its executor knows,
//     every poll interval and at once when a Submit or a free slot wakes it.

// pollInterval bounds how long a cancel through another manager takes to
// reach the module, and how soon a resumable task submitted elsewhere is
// claimed. It is shortened for short lease TTLs (see timing).
const pollInterval = 200 * time.Millisecond

// timing returns how often the lease is renewed, recovery runs, and the
// watcher and the claimer poll.
func timing(ttl time.Duration) (renew, recover, poll time.Duration) {
	return ttl / 3, ttl / 2, min(pollInterval, ttl/4)
}

// startServices starts the components of a manager with a SharedStore.
func (m *TaskManager) startServices() {
	id := newTaskID()
	m.owner.Store(&id)
	renew, recoverEvery, poll := timing(m.leaseTTL)
	m.lease = &leaseKeeper{m: m}
	m.services = []*loop{
		newLoop(renew, m.lease.runOnce),
		newLoop(recoverEvery, recoverer{m}.runOnce),
		newLoop(poll, watcher{m}.runOnce),
	}
	m.claims = newLoop(poll, claimer{m}.runOnce)
	m.services = append(m.services, m.claims)
	for _, l := range m.services {
		l.Start()
	}
	if n, ok := m.shared.(Notifier); ok {
		ctx, cancel := context.WithCancel(context.Background())
		m.notifyStop = cancel
		n.Notify(ctx, func() {
			m.mayClaim.Store(true)
			m.wakeClaimer()
		})
	}
}

// wakeClaimer asks the claimer to claim now.
func (m *TaskManager) wakeClaimer() {
	if m.claims != nil {
		m.claims.Wake()
	}
}

// recoverer is the component that recovers what dead managers held.
type recoverer struct{ m *TaskManager }

func (r recoverer) runOnce(ctx context.Context) {
	m := r.m
	call, cancel := context.WithTimeout(ctx, m.storeTimeout)
	defer cancel()
	n, err := m.shared.Recover(call, time.Now())
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Warn("apcore: could not recover the tasks of lapsed leases", "error", err)
	case n > 0:
		m.log.Info("apcore: recovered the tasks of lapsed leases", "records", n)
	}
}

// watcher is the component that stops the modules of the tasks this
// manager no longer holds in the store: cancelled through another manager,
// or recovered. It asks about the tasks that run or wait out a backoff (at
// most max_concurrent, plus those in backoff); a queued task finds out
// when its start is refused.
type watcher struct{ m *TaskManager }

func (w watcher) runOnce(ctx context.Context) {
	m := w.m
	if !m.leased.Load() {
		return
	}
	owner := m.ownerID()
	var ids []string
	for _, t := range m.sched.running() {
		if t.holder == owner {
			ids = append(ids, t.id)
		}
	}
	m.watch.each(func(t *task) {
		if t.holder == owner {
			ids = append(ids, t.id)
		}
	})
	if len(ids) == 0 {
		return
	}
	call, cancel := context.WithTimeout(ctx, m.storeTimeout)
	defer cancel()
	lost, err := m.shared.Lost(call, owner, ids)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("apcore: could not ask the store which tasks this manager still holds", "error", err)
		}
		return
	}
	for _, id := range lost {
		if t, ok := m.tasks.load(id); ok {
			m.lose(call, t)
		}
	}
}

// lose ends t here because the store no longer has it held by this
// manager: adopted as the stored outcome if it ended, let go of otherwise.
// The store is read without t's lock; the transition then checks that t
// is still active.
func (m *TaskManager) lose(ctx context.Context, t *task) {
	t.mu.Lock()
	if !t.state.active() {
		t.mu.Unlock()
		return
	}
	var info TaskInfo
	status := StatusPending
	if t.state == stateRunning {
		status = StatusRunning
	}
	t.record(&info, status)
	t.mu.Unlock()
	switch res, err := m.storedOutcome(ctx, t, &info); {
	case err != nil:
		// the next poll asks again
	case res == movedOn:
		m.release(t)
	case res == ended:
		m.adopt(t, &info)
	}
	// written: the store had lost it; it has it back, and the task goes on
}

// claimer is the component that claims resumable tasks for free slots.
type claimer struct{ m *TaskManager }

// runOnce takes as many resumable tasks from the store as this manager has
// free slots, of the modules its executor knows, and queues them.
func (c claimer) runOnce(ctx context.Context) {
	m := c.m
	if !m.leased.Load() || m.draining.Load() {
		return
	}
	free := m.sched.free()
	if free <= 0 {
		return
	}
	req := ClaimRequest{Owner: m.ownerID(), Limit: free, Now: now()}
	if m.lister != nil {
		req.Modules = m.lister.ModuleIDs()
	}
	call, cancel := context.WithTimeout(ctx, m.storeTimeout)
	defer cancel()
	claimed, err := m.shared.Claim(call, req)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("apcore: could not claim resumable tasks", "error", err)
		}
		return
	}
	// A full claim may have left more: then a slot that frees wakes the
	// claimer at once; otherwise the next poll is soon enough.
	m.mayClaim.Store(len(claimed) == free)
	for i := range claimed {
		st := &claimed[i]
		if m.resolver != nil && !m.resolver.HasModule(st.Info.ModuleID) {
			m.unclaim(call, st, req.Owner)
			continue
		}
		m.run(m.queueTask(context.Background(), st, true))
	}
}

// unclaim hands back, unstarted, a claimed task of a module this manager's
// executor does not know (it could not say which it knows before the
// claim), due a poll interval later, so that a replica that knows the
// module takes it.
func (m *TaskManager) unclaim(ctx context.Context, st *StoredTask, owner string) {
	_, _, poll := timing(m.leaseTTL)
	info := st.Info
	info.Status = StatusPending
	if _, err := m.shared.Update(ctx, StoredTask{Info: info, NotBefore: time.Now().Add(poll)}, owner); err != nil {
		m.log.Warn("apcore: could not hand back a task of an unknown module; lease recovery will", "task_id", info.TaskID, "module_id", info.ModuleID, "error", err)
	}
}

// newResumable makes the handle of a resumable task this manager holds:
// one it claimed (running in the store already), or one it submits while
// it has a free slot (pending, held by it from the insert; see
// submitResumable). Either way the module gets the inputs as the store
// keeps them, decoded from JSON, as it would on any other replica. parent
// is the module's context before the context carrier restores what it
// carries: none of Submit's values, wherever the task runs. The inputs
// that do not decode are returned as an error, with the handle.
func (m *TaskManager) newResumable(parent context.Context, st *StoredTask, claimed bool) (*task, error) {
	info := &st.Info
	t := &task{
		id: info.TaskID, moduleID: info.ModuleID,
		ctx:   taskCtx{parent: parent, wg: &m.wg, m: m},
		retry: st.Retry, timeout: st.Timeout, submittedAt: info.SubmittedAt,
		holder: st.Owner, resumable: true, claimed: claimed,
		startedAt: info.StartedAt, retryCount: info.RetryCount,
	}
	t.ctx.task = t
	t.priority = int8(info.Priority)
	if info.RunAt != nil || info.UniqueKey != "" {
		t.later = &taskLater{uniqueKey: info.UniqueKey}
		if info.RunAt != nil {
			t.later.runAt = *info.RunAt
		}
	}
	if m.carrier != nil && len(st.Trace) > 0 {
		t.ctx.parent = m.carrier.Extract(t.ctx.parent, st.Trace)
	}
	t.retry.MaxRetries = info.MaxRetries
	return t, json.Unmarshal(st.Inputs, &t.inputs)
}

// queueTask makes the handle of a claimed task and puts it in the table;
// a task whose stored inputs do not decode fails at once, for good.
func (m *TaskManager) queueTask(parent context.Context, st *StoredTask, claimed bool) *task {
	t, err := m.newResumable(parent, st, claimed)
	m.tasks.store(t.id, t)
	if err != nil {
		var failed TaskInfo
		t.mu.Lock()
		t.record(&failed, StatusFailed)
		failed.CompletedAt, failed.ErrorCode = now(), CodeInvalidInput
		failed.Error = "the stored inputs of this resumable task do not decode: " + err.Error()
		t.state, t.ending = stateEnding, codeOf(StatusFailed)
		seq := t.decided()
		t.mu.Unlock()
		m.finish(t, &failed, seq)
		return nil
	}
	return t
}

// run queues a resumable task this manager holds, whose handle is in the
// table. A closing manager hands it back instead: it stays pending for
// another manager.
func (m *TaskManager) run(t *task) {
	if t == nil {
		return
	}
	w, ok := m.sched.enqueue(t)
	switch {
	case !ok:
		if j, ok := m.handBackJob(t, false); ok {
			m.writeHandBack(t, &j.info, j.seq)
			m.wg.Done()
		}
	case w != nil:
		go m.work(w, t)
	}
}

// submitResumable is Submit for a task WithResumable: it is inserted with
// its inputs as JSON. When this manager has a free slot, the task is
// inserted held by it and queued here at once, as a claimed task would be,
// which saves the claim's round trip; if this manager dies, Recover puts
// it back to pending for the others. Otherwise it is inserted held by no
// one, and a claimer (this one or another manager's) claims it. The
// handle joins the table before the insert, so that a Drain or Shutdown
// that begins meanwhile finds it.
func (m *TaskManager) submitResumable(ctx context.Context, moduleID string, inputs map[string]any, sc *submitConfig) (string, error) {
	if m.shared == nil {
		return "", invalidf("Submit: WithResumable needs a store that implements apcore.SharedStore; %s does not", m.store.Name())
	}
	raw, err := json.Marshal(inputs)
	if err != nil {
		return "", &Error{Code: CodeInvalidInput, Message: "Submit: the inputs of a resumable task must encode as JSON", Cause: err}
	}
	st := resumableTask(moduleID, raw, sc)
	info := st.Info
	if m.carrier != nil {
		st.Trace = m.carrier.Inject(ctx)
	}
	later := st.NotBefore.After(info.SubmittedAt)
	if later || m.sched.free() == 0 || (m.resolver != nil && !m.resolver.HasModule(moduleID)) {
		// Due later, no slot here, or a module this manager does not know
		// (a rolling deploy): held by no one, for whichever manager has a
		// slot and the module when it is due.
		if err := m.admitUnheld(ctx, &st); err != nil {
			return duplicateOf(err), err
		}
		m.notify(&info)
		m.mayClaim.Store(true)
		if later {
			m.wakeAt(st.NotBefore)
		} else {
			m.wakeClaimer()
		}
		return info.TaskID, nil
	}
	t, _ := m.newResumable(context.Background(), &st, false) // they encoded just now
	owned := m.announceFirst(t, &info)
	w, err := m.admitFor(ctx, t, &st, owned, &info)
	if err != nil {
		return duplicateOf(err), err
	}
	if w != nil {
		go m.work(w, t)
	}
	return info.TaskID, nil
}

// resumableTask is the stored form of a new resumable task: pending, held
// by no one yet, due at its RunAt or at once.
func resumableTask(moduleID string, inputs json.RawMessage, sc *submitConfig) StoredTask {
	info := TaskInfo{
		TaskID: newTaskID(), ModuleID: moduleID, Status: StatusPending, SubmittedAt: now(),
		MaxRetries: sc.retry.MaxRetries, UniqueKey: sc.uniqueKey, Priority: sc.priority,
	}
	notBefore := info.SubmittedAt
	if !sc.runAt.IsZero() {
		at := sc.runAt
		info.RunAt = &at
		notBefore = at
	}
	return StoredTask{Info: info, Resumable: true, Inputs: inputs, Retry: sc.retry, Timeout: sc.timeout, NotBefore: notBefore}
}

// admitUnheld inserts a resumable task held by no one.
func (m *TaskManager) admitUnheld(ctx context.Context, st *StoredTask) error {
	if m.closed.Load() {
		return errClosed()
	}
	var ok bool
	var err error
	if m.nonBlocking || ctx.Done() == nil {
		ok, err = m.shared.Insert(ctx, *st, m.maxTasks)
	} else {
		ok, err = m.insertGuarded(ctx, *st)
	}
	if err != nil || !ok {
		return m.refused(err)
	}
	return nil
}

// insertGuarded is admitUnheld's Insert for a context that may end: it
// runs on a goroutine of its own, and the caller returns by ctx's end. If
// the store then saves the record after all, the record is cancelled: the
// caller was told that Submit failed, and no handle here would ever end
// it (a resumable task due later is no orphan for Shutdown either).
func (m *TaskManager) insertGuarded(ctx context.Context, st StoredTask) (bool, error) {
	type result struct {
		ok  bool
		err error
	}
	r, ok := handOff(ctx, func() result {
		ok, err := m.shared.Insert(ctx, st, m.maxTasks)
		return result{ok, err}
	}, func(r result) {
		if r.err != nil || !r.ok {
			return
		}
		m.log.Warn("apcore: the store saved a task after its Submit gave up; cancelling it", "task_id", st.Info.TaskID)
		info := st.Info
		info.Status, info.CompletedAt = StatusCancelled, now()
		wctx, cancel := m.ownCtx()
		defer cancel()
		if _, err := m.write(wctx, nil, &info); err != nil {
			m.log.Warn("apcore: could not cancel a task saved after its Submit gave up", "task_id", info.TaskID, "error", err)
		}
	})
	if !ok {
		return false, gaveUp(ctx, "Submit: save the new task")
	}
	return r.ok, r.err
}

// cancelOrphans cancels the active records that no live manager holds, for
// Shutdown, and returns the store's refusals. It first ends this manager's
// lease (its own tasks are cancelled by then), so that a record it still
// holds without a handle (one it let go of when the store failed) counts as
// an orphan too. Each store call is bounded by the store timeout.
func (m *TaskManager) cancelOrphans() []error {
	m.endLease()
	ctx, cancel := m.ownCtx()
	orphans, err := m.shared.Orphans(ctx, OrphanQuery{Now: time.Now()})
	cancel()
	if err != nil {
		return []error{storeErr("Shutdown: list the tasks that no live manager holds", err)}
	}
	var errs []error
	for i := range orphans {
		info := &orphans[i]
		info.Status, info.CompletedAt = StatusCancelled, now()
		info.Result, info.Error, info.ErrorCode = nil, "", ""
		ctx, cancel := m.ownCtx()
		if _, err := m.write(ctx, nil, info); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errs
}

// Drain is Shutdown for a rolling deploy: Submit is refused from the start;
// this manager stops taking resumable tasks from the store and hands back
// those it has not started (they stay pending for other replicas); running
// tasks and its own non-resumable pending tasks run to their end until ctx
// ends. Then whatever is left is handled as Shutdown does, except that
// resumable tasks are handed back (pending again, for another replica)
// instead of cancelled, and records that no live manager holds are left
// for the other replicas. It returns nil when nothing was cut short;
// otherwise an error that matches ctx's error (errors.Is) and says how many
// tasks it cut short, and which.
func (m *TaskManager) Drain(ctx context.Context) error {
	if err := checkCtx(ctx, "Drain"); err != nil {
		return err
	}
	m.markClosed()
	m.draining.Store(true)
	var backs []writeJob
	for _, t := range m.tasks.values() {
		if t.resumable {
			if j, ok := m.handBackJob(t, true); ok {
				backs = append(backs, j)
			}
		}
	}
	m.handBackAll(backs)
	var cut []*task
	for _, t := range m.tasks.values() {
		if _, _, err := t.wait(ctx); err != nil {
			cut = m.tasks.values()
			break
		}
	}
	var late []writeJob // a new slice: the first goroutine may still read backs
	for _, t := range cut {
		if t.resumable {
			if j, ok := m.handBackJob(t, false); ok {
				late = append(late, j)
			}
		}
	}
	m.handBackAll(late)
	err := m.shutdown(ctx, false)
	if len(cut) > 0 {
		ids := make([]string, 0, min(len(cut), 10))
		for _, t := range cut[:min(len(cut), 10)] {
			ids = append(ids, t.id)
		}
		return fmt.Errorf("apcore: Drain ran out of time with %d task(s) unfinished: resumable ones were handed back to the other replicas, the others cancelled (first ids: %v): %w", len(cut), ids, context.Cause(ctx))
	}
	return err
}

// handBackAll makes the writes of Drain's hand-backs on a goroutine, so
// that Drain does not wait for the store; the WaitGroup counts each job
// from its decision, so Shutdown waits for the writes.
func (m *TaskManager) handBackAll(jobs []writeJob) {
	if len(jobs) == 0 {
		return
	}
	go func() {
		for i := range jobs {
			j := &jobs[i]
			m.writeHandBack(j.t, &j.info, j.seq)
			m.wg.Done()
		}
	}()
}
