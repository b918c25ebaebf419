package apcore

import (
	"context"
	"sync"
	"time"
)

// minLeaseTTL is the shortest lease WithLeaseTTL accepts: the keeper renews
// every third of it and the watcher polls every quarter, so a shorter one
// would spend the machine on store calls.
const minLeaseTTL = 100 * time.Millisecond

// leaseMargin is how long before its end in the store a lease that could
// not be renewed is given up here, so that this manager's modules are
// stopped before any other manager may recover its tasks.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// leaseKeeper is the component that holds this manager's lease in a
// SharedStore: it makes it, renews it every third of the TTL, and gives it
// up (lapse) when the store says it is gone, or as soon as it can no longer
// be known to be valid: a TTL less a margin after the start of the last
// renewal that got through, whether or not a renewal call is still under
// way. So a manager cut off from its store (a hung connection, a frozen
// server) stops its modules before another manager recovers its tasks.
type leaseKeeper struct {
	m *TaskManager

	mu         sync.Mutex
	validUntil time.Time   // past it, the lease may have ended in the store
	watchdog   *time.Timer // fires at validUntil
	stopped    bool
}

// runOnce makes the lease when this manager holds none, or renews it.
func (k *leaseKeeper) runOnce(ctx context.Context) {
	m := k.m
	if !m.leased.Load() {
		call, cancel := context.WithTimeout(ctx, m.storeTimeout)
		defer cancel()
		if err := m.createLease(call); err != nil && ctx.Err() == nil {
			m.log.Warn("apcore: could not take a lease in the shared store", "error", err)
		}
		return
	}
	owner := m.ownerID()
	start := time.Now()
	deadline := start.Add(m.storeTimeout)
	k.mu.Lock()
	if k.validUntil.Before(deadline) {
		deadline = k.validUntil // no answer after that is worth waiting for
	}
	k.mu.Unlock()
	call, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ok, err := m.shared.Renew(call, LeaseRequest{Owner: owner, Expires: start.Add(m.leaseTTL)})
	switch {
	case err != nil && ctx.Err() != nil:
		// stopping
	case err != nil:
		m.log.Warn("apcore: could not renew the lease; it is given up here if no renewal gets through in time", "owner", owner, "error", err)
	case !ok:
		m.lapse(owner, "the store says the lease lapsed and its tasks were recovered")
	default:
		k.extend(owner, start)
	}
}

// extend records that owner's lease, renewed (or made) by a call that
// started at start, is valid here until start + TTL - margin, and arms the
// watchdog for then.
func (k *leaseKeeper) extend(owner string, start time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped || k.m.ownerID() != owner {
		return
	}
	k.validUntil = start.Add(k.m.leaseTTL - leaseMargin(k.m.leaseTTL))
	d := time.Until(k.validUntil)
	if k.watchdog == nil {
		k.watchdog = time.AfterFunc(d, k.expire)
	} else {
		k.watchdog.Reset(d)
	}
}

// expire is the watchdog: the lease is given up if no renewal has
// extended it meanwhile.
func (k *leaseKeeper) expire() {
	k.mu.Lock()
	owner := k.m.ownerID()
	late := !k.stopped && k.m.leased.Load() && !time.Now().Before(k.validUntil)
	k.mu.Unlock()
	if late {
		k.m.lapse(owner, "no renewal got through before the lease could have ended in the store")
	}
}

// stop disarms the watchdog for good.
func (k *leaseKeeper) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	if k.watchdog != nil {
		k.watchdog.Stop()
	}
}

// ownerID is the id this manager holds its tasks under.
func (m *TaskManager) ownerID() string { return *m.owner.Load() }

// createLease makes this manager's lease, under a new owner id when the old
// one lapsed. It is called by the keeper, and by a Submit that finds no
// lease (the keeper has not got there yet, or the lease lapsed); ctx
// bounds both the wait for another creation under way and the store call.
func (m *TaskManager) createLease(ctx context.Context) error {
	if err := m.leaseMu.Lock(ctx); err != nil {
		return err
	}
	defer m.leaseMu.Unlock()
	if m.leased.Load() {
		return nil
	}
	owner, start := m.ownerID(), time.Now()
	if _, err := m.shared.Renew(ctx, LeaseRequest{Owner: owner, Expires: start.Add(m.leaseTTL), Create: true}); err != nil {
		return err
	}
	m.leased.Store(true)
	m.lease.extend(owner, start)
	return nil
}

// lapse gives up owner's lease here: every module of the tasks it held is
// stopped, and the tasks are let go of without a write (other managers
// recover their records). Then the manager takes a new owner id, so that
// records still held by the old one are recovered too. It makes no store
// call, so it runs at once whatever the store does.
func (m *TaskManager) lapse(owner, why string) {
	p := m.owner.Load()
	if *p != owner {
		return // lapsed already
	}
	id := newTaskID()
	if !m.owner.CompareAndSwap(p, &id) {
		return
	}
	m.leased.Store(false)
	m.log.Error("apcore: lease lapsed; stopping this manager's tasks", "owner", owner, "reason", why)
	for _, t := range m.tasks.values() {
		if t.holder == owner {
			m.release(t)
		}
	}
}

// endLease ends this manager's lease once it has stopped. The store call
// is bounded by the store timeout, whatever ctx says: Shutdown records it
// even when its context has ended.
func (m *TaskManager) endLease() {
	if m.shared == nil {
		return
	}
	m.lease.stop()
	ctx, cancel := m.ownCtx()
	defer cancel()
	if err := m.leaseMu.Lock(ctx); err != nil {
		return
	}
	defer m.leaseMu.Unlock()
	if !m.leased.Load() {
		return
	}
	if err := m.shared.Release(ctx, m.ownerID()); err != nil {
		m.log.Warn("apcore: could not end the lease; it lapses on its own", "error", err)
		return
	}
	m.leased.Store(false)
}
