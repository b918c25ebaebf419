package apcore

import (
	"context"
	"encoding/json"
	"time"
)

// This file is what a manager does beside its own tasks when its store is a
// SharedStore, so that replicas sharing the store behave as one manager:
//
//   - It holds a lease under an owner id, renewed every third of the TTL by
//     the keeper goroutine. Its tasks are held by that id in the store, and
//     every write of theirs is conditional on still holding them, so once
//     the lease has lapsed and another manager recovered them, no late
//     write lands (fencing). When renewing fails for a whole TTL, or the
//     store says the lease is gone, the manager stops its modules and lets
//     go of its tasks, then takes a lease under a new id.
//   - Every half TTL the keeper asks the store to Recover what dead
//     managers held, so a crashed replica's tasks are recovered within about
//     two TTLs by whichever manager looks first.
//   - Every poll interval it asks which of its tasks it no longer holds
//     (Lost): a cancel through another manager, or a recovery, shows up
//     there, and the module is stopped within one interval.
//   - While it has free slots and is not draining, it claims resumable
//     tasks, on the same tick and at once when a Submit or a free slot
//     wakes it.

// pollInterval bounds how long a cancel through another manager takes to
// reach the module, and how soon a resumable task submitted elsewhere is
// claimed. It is shortened for short lease TTLs (see keeperTiming).
const pollInterval = 200 * time.Millisecond

// storeCallTimeout bounds each of the keeper's store calls.
const storeCallTimeout = 10 * time.Second

// ownerID is the id this manager holds its tasks under.
func (m *TaskManager) ownerID() string { return *m.owner.Load() }

// createLease makes this manager's lease, under a new owner id when the old
// one lapsed. It is called by the keeper, and by the first Submit if the
// keeper has not got there yet.
func (m *TaskManager) createLease(ctx context.Context) error {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	if m.leased.Load() {
		return nil
	}
	if _, err := m.shared.Renew(ctx, LeaseRequest{Owner: m.ownerID(), Expires: time.Now().Add(m.leaseTTL), Create: true}); err != nil {
		return storeErr("create lease", err)
	}
	m.leased.Store(true)
	return nil
}

// startKeeper starts the keeper goroutine; Shutdown stops it.
func (m *TaskManager) startKeeper() {
	id := newTaskID()
	m.owner.Store(&id)
	m.wake = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	m.keeperStop, m.keeperDone = cancel, make(chan struct{})
	go m.runKeeper(ctx)
}

// stopKeeper stops the keeper and waits for it to return.
func (m *TaskManager) stopKeeper() {
	if m.keeperStop == nil {
		return
	}
	m.keeperStop()
	<-m.keeperDone
}

// wakeKeeper asks the keeper to claim now.
func (m *TaskManager) wakeKeeper() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// keeperTiming returns how often the keeper renews, recovers and polls.
func (m *TaskManager) keeperTiming() (renew, recover, poll time.Duration) {
	return m.leaseTTL / 3, m.leaseTTL / 2, min(pollInterval, m.leaseTTL/4)
}

// runKeeper is the keeper goroutine's loop.
func (m *TaskManager) runKeeper(ctx context.Context) {
	defer close(m.keeperDone)
	renewEvery, recoverEvery, poll := m.keeperTiming()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	var nextRenew, nextRecover, renewed time.Time
	for {
		now := time.Now()
		if !now.Before(nextRenew) {
			if m.renew(ctx, now, renewed) {
				renewed = now
			}
			nextRenew = now.Add(renewEvery)
		}
		if !now.Before(nextRecover) {
			m.recover(ctx, now)
			nextRecover = now.Add(recoverEvery)
		}
		if m.leased.Load() {
			m.checkLost(ctx)
			m.claim(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-m.wake:
		}
	}
}

// renew renews the lease (or makes it), and reports whether it now holds
// one. A lease the store says is gone, or that could not be renewed for a
// whole TTL since the last renewal, has lapsed: the manager stops its
// modules, lets go of its tasks and takes a new owner id.
func (m *TaskManager) renew(ctx context.Context, now, renewed time.Time) bool {
	call, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	if !m.leased.Load() {
		if err := m.createLease(call); err != nil {
			m.log.Warn("apcore: could not take a lease in the shared store", "error", err)
			return false
		}
		return true
	}
	ok, err := m.shared.Renew(call, LeaseRequest{Owner: m.ownerID(), Expires: now.Add(m.leaseTTL)})
	switch {
	case err != nil && ctx.Err() != nil:
		return false // stopping
	case err != nil:
		m.log.Warn("apcore: could not renew the lease", "owner", m.ownerID(), "error", err)
		if !renewed.IsZero() && now.Sub(renewed) < m.leaseTTL {
			return false
		}
		m.lapse("the lease could not be renewed for a whole TTL")
	case !ok:
		m.lapse("the store says the lease lapsed and its tasks were recovered")
	default:
		return true
	}
	return false
}

// lapse stops every module of this manager and lets go of its tasks, whose
// records other managers recover; then it takes a new owner id, so that
// records still held by the old one are recovered too.
func (m *TaskManager) lapse(why string) {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	m.log.Error("apcore: lease lapsed; stopping this manager's tasks", "owner", m.ownerID(), "reason", why)
	for _, t := range m.tasks.values() {
		t.mu.Lock()
		if t.state != stateDone {
			m.letGo(t)
		}
		t.mu.Unlock()
	}
	id := newTaskID()
	m.owner.Store(&id)
	m.leased.Store(false)
}

// letGo stops t and releases it, without a write. t.mu is held.
func (m *TaskManager) letGo(t *task) {
	m.halt(t)
	m.release(t)
}

// recover asks the store to recover what dead managers held.
func (m *TaskManager) recover(ctx context.Context, now time.Time) {
	call, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	n, err := m.shared.Recover(call, now)
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Warn("apcore: could not recover the tasks of lapsed leases", "error", err)
	case n > 0:
		m.log.Info("apcore: recovered the tasks of lapsed leases", "records", n)
	}
}

// checkLost stops the modules of the tasks this manager no longer holds in
// the store: cancelled through another manager, or recovered. It asks about
// the tasks that run or wait out a backoff (at most max_concurrent, plus
// those in backoff); a queued task finds out when its start is refused.
func (m *TaskManager) checkLost(ctx context.Context) {
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
	call, cancel := context.WithTimeout(ctx, storeCallTimeout)
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
// manager: as the stored outcome if it ended, let go of otherwise.
func (m *TaskManager) lose(ctx context.Context, t *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateDone {
		return
	}
	var info TaskInfo
	status := StatusPending
	if t.state == stateRunning {
		status = StatusRunning
	}
	t.record(&info, status)
	res, err := m.storedOutcome(ctx, t, &info)
	switch {
	case err != nil:
		return // the next poll asks again
	case res == movedOn:
		m.letGo(t)
		return
	case res == written:
		return // the store had lost it; it has it back, and the task goes on
	}
	m.halt(t)
	m.forget(t, &info, false)
}

// claim takes as many resumable tasks from the store as this manager has
// free slots, and queues them.
func (m *TaskManager) claim(ctx context.Context) {
	if m.draining.Load() {
		return
	}
	free := m.sched.free()
	if free <= 0 {
		return
	}
	call, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	claimed, err := m.shared.Claim(call, ClaimRequest{Owner: m.ownerID(), Limit: free, Now: now()})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("apcore: could not claim resumable tasks", "error", err)
		}
		return
	}
	// A full claim may have left more: then a slot that frees wakes the
	// keeper at once; otherwise the next poll is soon enough.
	m.mayClaim.Store(len(claimed) == free)
	for i := range claimed {
		m.run(context.Background(), &claimed[i], true)
	}
}

// run queues a resumable task this manager holds: one it claimed (running
// in the store already), or one it submitted while it had a free slot
// (pending, held by it from the insert; see submitResumable). Either way
// the module gets the inputs as the store keeps them, decoded from JSON,
// as it would on any other replica. parent is what the module's context
// carries: for a task submitted here, Submit's context without its
// cancellation; for a claimed one, nothing but what the context carrier
// restores.
func (m *TaskManager) run(parent context.Context, st *StoredTask, claimed bool) {
	info := &st.Info
	t := &task{
		id: info.TaskID, moduleID: info.ModuleID,
		ctx:   taskCtx{parent: parent, wg: &m.wg, m: m},
		retry: st.Retry, timeout: st.Timeout, submittedAt: info.SubmittedAt,
		holder: st.Owner, resumable: true, claimed: claimed,
		startedAt: info.StartedAt, retryCount: info.RetryCount,
	}
	t.ctx.task = t
	if claimed && m.carrier != nil && len(st.Trace) > 0 {
		t.ctx.parent = m.carrier.Extract(t.ctx.parent, st.Trace)
	}
	t.retry.MaxRetries = info.MaxRetries
	if err := json.Unmarshal(st.Inputs, &t.inputs); err != nil {
		t.state = stateRunning
		t.mu.Lock()
		var failed TaskInfo
		t.record(&failed, StatusFailed)
		failed.CompletedAt, failed.ErrorCode = now(), CodeInvalidInput
		failed.Error = "the stored inputs of this resumable task do not decode: " + err.Error()
		m.finish(t, &failed)
		t.mu.Unlock()
		return
	}
	m.tasks.store(t.id, t)
	if w, ok := m.sched.enqueue(t); !ok {
		t.mu.Lock()
		m.handBack(t, 0) // closing: the task stays pending for another manager
		t.mu.Unlock()
	} else if w != nil {
		go m.work(w, t)
	}
}

// submitResumable is Submit for a task WithResumable: it is inserted with
// its inputs as JSON. When this manager has a free slot, the task is
// inserted held by it and queued here at once, as a claimed task would be,
// which saves the claim's round trip; if this manager dies, Recover puts
// it back to pending for the others. Otherwise it is inserted held by no
// one, and the keeper (this one or another manager's) claims it.
func (m *TaskManager) submitResumable(ctx context.Context, moduleID string, inputs map[string]any, sc *submitConfig) (string, error) {
	if m.shared == nil {
		return "", invalidf("Submit: WithResumable needs a store that implements apcore.SharedStore; %s does not", m.store.Name())
	}
	raw, err := json.Marshal(inputs)
	if err != nil {
		return "", &Error{Code: CodeInvalidInput, Message: "Submit: the inputs of a resumable task must encode as JSON", Cause: err}
	}
	info := TaskInfo{TaskID: newTaskID(), ModuleID: moduleID, Status: StatusPending, SubmittedAt: now(), MaxRetries: sc.retry.MaxRetries}
	st := StoredTask{Info: info, Resumable: true, Inputs: raw, Retry: sc.retry, Timeout: sc.timeout, NotBefore: info.SubmittedAt}
	if m.carrier != nil {
		st.Trace = m.carrier.Inject(ctx)
	}
	m.gate.RLock()
	err = m.checkOpen(ctx)
	var ok bool
	if err == nil {
		if m.sched.free() > 0 {
			st.Owner = m.ownerID()
		}
		ok, err = m.shared.Insert(ctx, st, m.maxTasks)
		if err != nil || !ok {
			err = m.refused(err)
		}
	}
	m.gate.RUnlock()
	if err != nil {
		return "", err
	}
	m.notify(&info)
	if st.Owner != "" {
		m.run(context.WithoutCancel(ctx), &st, false)
		return info.TaskID, nil
	}
	m.mayClaim.Store(true)
	m.wakeKeeper()
	return info.TaskID, nil
}

// cancelOrphans cancels the active records that no live manager holds, for
// Shutdown, and returns the store's refusals. It first ends this manager's
// lease (its own tasks are cancelled by then), so that a record it still
// holds without a handle (one it let go of when the store failed) counts as
// an orphan too.
func (m *TaskManager) cancelOrphans(ctx context.Context) []error {
	m.endLease(ctx)
	orphans, err := m.shared.Orphans(ctx, OrphanQuery{Now: time.Now()})
	if err != nil {
		return []error{storeErr("list orphans", err)}
	}
	var errs []error
	for i := range orphans {
		info := &orphans[i]
		info.Status, info.CompletedAt = StatusCancelled, now()
		info.Result, info.Error, info.ErrorCode = nil, "", ""
		if _, err := m.write(ctx, nil, info); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// endLease ends this manager's lease once it has stopped.
func (m *TaskManager) endLease(ctx context.Context) {
	if m.shared == nil || !m.leased.Load() {
		return
	}
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	if !m.leased.Load() {
		return
	}
	if err := m.shared.Release(context.WithoutCancel(ctx), m.ownerID()); err != nil {
		m.log.Warn("apcore: could not end the lease; it lapses on its own", "error", err)
		return
	}
	m.leased.Store(false)
}

// Drain is Shutdown for a rolling deploy: Submit is refused from the start;
// this manager stops taking resumable tasks from the store and hands back
// those it has not started (they stay pending for other replicas); running
// tasks and its own non-resumable pending tasks run to their end until ctx
// ends. Then whatever is left is handled as Shutdown does, except that
// resumable tasks are handed back (pending again, for another replica)
// instead of cancelled, and records that no live manager holds are left
// for the other replicas. Returns nil when nothing was cut short, and ctx's
// error otherwise.
func (m *TaskManager) Drain(ctx context.Context) error {
	if err := checkCtx(ctx, "Drain"); err != nil {
		return err
	}
	m.gate.Lock()
	m.close()
	m.gate.Unlock()
	m.draining.Store(true)
	for _, t := range m.tasks.values() {
		t.mu.Lock()
		if t.resumable && t.state == stateQueued {
			m.sched.remove(t)
			m.handBack(t, 0)
		}
		t.mu.Unlock()
	}
	var cut error
	for _, t := range m.tasks.values() {
		if _, _, err := t.wait(ctx); err != nil {
			cut = err
			break
		}
	}
	if cut != nil {
		for _, t := range m.tasks.values() {
			t.mu.Lock()
			if t.resumable && t.state != stateDone {
				if t.state == stateQueued {
					m.sched.remove(t)
				}
				t.interrupt()
				m.handBack(t, 0)
			}
			t.mu.Unlock()
		}
	}
	if err := m.shutdown(ctx, false); err != nil {
		return err
	}
	return cut
}
