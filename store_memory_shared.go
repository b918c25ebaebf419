package apcore

import (
	"context"
	"maps"
	"slices"
	"time"
)

// The MemoryStore's SharedStore methods: managers sharing one MemoryStore in
// one process behave as replicas sharing a database do, and storetest
// checks the other stores against this.

// memShared is what a resumable record keeps beside it.
type memShared struct {
	resumable bool
	inputs    []byte
	retry     RetryConfig
	timeout   time.Duration
	notBefore time.Time
	trace     map[string]string
	// claim is the claim queue the record waits in when claimable: its
	// module and priority, which never change, kept here so that the
	// queues read them without the record's shard lock.
	claim claimKey
}

// stored returns r as a StoredTask; r's shard lock is held.
func (r *memRecord) stored() StoredTask {
	st := StoredTask{Info: r.info.clone(), Owner: r.ownerName()}
	if x := r.shared; x != nil {
		st.Resumable, st.Inputs, st.Retry, st.Timeout = x.resumable, slices.Clone(x.inputs), x.retry, x.timeout
		st.NotBefore, st.Trace = x.notBefore, cloneTrace(x.trace)
	}
	return st
}

func cloneTrace(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// claimableLocked reports whether a Claim may take r; r's shard lock is held.
func (r *memRecord) claimableLocked() bool {
	return r.shared != nil && r.shared.resumable && r.holder == nil && r.info.Status == StatusPending
}

// Insert saves a new record only while fewer than limit records are active,
// and, for a record with a UniqueKey, only while no pending, running or
// completed record holds the key (else false and a *DuplicateError). Every
// insert holds the store's one insert lock, and only inserts make a record
// active or take a key, so the count, the key and the insert are one step.
func (s *MemoryStore) Insert(ctx context.Context, task StoredTask, limit int) (bool, error) {
	if err := checkRecord(&task.Info); err != nil {
		return false, err
	}
	if !task.Info.Status.IsActive() {
		return false, invalidf("task store: Insert of task %s in state %s; a new task is pending or running", task.Info.TaskID, task.Info.Status)
	}
	r := &memRecord{info: task.Info.clone()}
	if task.Resumable || task.Inputs != nil || task.Trace != nil || task.Timeout != 0 || !task.NotBefore.IsZero() || task.Retry != (RetryConfig{}) {
		r.shared = &memShared{
			resumable: task.Resumable, inputs: slices.Clone(task.Inputs), retry: task.Retry,
			timeout: task.Timeout, notBefore: task.NotBefore, trace: cloneTrace(task.Trace),
			claim: claimKey{task.Info.ModuleID, task.Info.Priority},
		}
	}
	s.order.Lock()
	defer s.order.Unlock()
	key := r.info.UniqueKey
	if key != "" {
		if id, ok := s.keyHolder(key); ok {
			return false, &DuplicateError{TaskID: id, Key: key}
		}
	}
	if s.active.Load() >= int64(limit) {
		return false, nil
	}
	sh := s.records.shard(r.info.TaskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[r.info.TaskID]; ok { // never a fresh UUID, but Insert is public
		return false, invalidf("task store: task %s already exists", r.info.TaskID)
	}
	s.appendLocked(sh, r)
	s.held.setOwner(r, task.Owner)
	if r.claimableLocked() {
		s.claims.add(r, r.shared.notBefore)
	}
	if key != "" {
		s.uniqMu.Lock()
		s.uniq[key] = r
		s.uniqMu.Unlock()
	}
	return true, nil
}

// keyHolder returns the id of the stored record that holds key: one that
// Insert saved with it and that is pending, running or completed. s.order
// is held, so no Insert changes the map meanwhile.
func (s *MemoryStore) keyHolder(key string) (string, bool) {
	s.uniqMu.Lock()
	r := s.uniq[key]
	s.uniqMu.Unlock()
	if r == nil {
		return "", false
	}
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	st := r.info.Status
	if r.sh.m[r.info.TaskID] != r || st == StatusFailed || st == StatusCancelled {
		return "", false
	}
	return r.info.TaskID, true
}

// Update writes the record, its owner and NotBefore, if the stored record is
// active and held by holder.
func (s *MemoryStore) Update(ctx context.Context, task StoredTask, holder string) (bool, error) {
	if err := checkRecord(&task.Info); err != nil {
		return false, err
	}
	task.Info.Result = CloneResult(task.Info.Result)
	sh := s.records.shard(task.Info.TaskID)
	sh.mu.Lock()
	r, ok := sh.m[task.Info.TaskID]
	if !ok || !r.info.Status.IsActive() || r.ownerName() != holder {
		sh.mu.Unlock()
		return false, nil
	}
	s.overwrite(r, task.Info)
	s.held.setOwner(r, task.Owner)
	if r.shared != nil {
		r.shared.notBefore = task.NotBefore
	}
	requeue := r.claimableLocked()
	sh.mu.Unlock()
	if requeue {
		s.order.Lock()
		s.claims.add(r, task.NotBefore)
		s.order.Unlock()
	}
	return true, nil
}

// Claim hands req.Owner up to req.Limit due, claimable records of
// req.Modules (nil: any), oldest first.
func (s *MemoryStore) Claim(ctx context.Context, req ClaimRequest) ([]StoredTask, error) {
	owner, n, now := req.Owner, req.Limit, req.Now
	if owner == "" {
		return nil, invalidf("task store: Claim needs an owner")
	}
	s.order.Lock()
	defer s.order.Unlock()
	if end, ok := s.leases[owner]; !ok || end.Before(now) {
		return nil, nil // no live lease: its claims could not be fenced
	}
	s.claims.due(now)
	var out []StoredTask
	for len(out) < n {
		var best claimEntry
		var bestKey claimKey
		var bestQueue *claimQueue
		for key, mq := range s.claims.byModule {
			if req.Modules != nil && !slices.Contains(req.Modules, key.module) {
				continue
			}
			if bestQueue != nil && key.priority < bestKey.priority {
				continue // a front of a lower priority never wins
			}
			e, ok := s.claims.front(mq, now)
			if !ok {
				delete(s.claims.byModule, key)
				continue
			}
			if bestQueue == nil || key.priority > bestKey.priority || (key.priority == bestKey.priority && e.at < best.at) {
				best, bestKey, bestQueue = e, key, mq
			}
		}
		if bestQueue == nil {
			break
		}
		s.claims.pop(bestKey, bestQueue)
		r := best.r
		r.sh.mu.Lock()
		if r.claimableLocked() && r.sh.m[r.info.TaskID] == r { // front saw it so, under this lock
			info := r.info
			info.Status = StatusRunning
			if info.StartedAt.IsZero() {
				info.StartedAt = now
			}
			s.overwrite(r, info)
			s.held.setOwner(r, owner)
			out = append(out, r.stored())
		}
		r.sh.mu.Unlock()
	}
	return out, nil
}

// Renew sets req.Owner's lease to end at req.Expires.
func (s *MemoryStore) Renew(ctx context.Context, req LeaseRequest) (bool, error) {
	s.order.Lock()
	defer s.order.Unlock()
	if _, ok := s.leases[req.Owner]; !ok && !req.Create {
		return false, nil
	}
	s.leases[req.Owner] = req.Expires
	return true, nil
}

// Release ends owner's lease.
func (s *MemoryStore) Release(ctx context.Context, owner string) error {
	s.order.Lock()
	defer s.order.Unlock()
	delete(s.leases, owner)
	return nil
}

// Recover ends the leases that ended before now and what their owners held,
// and what is held by an owner with no lease. While no such owner holds an
// active record (the store counts each owner's, see heldCounts), it reads
// no record; otherwise it reads the blocks that hold an active record, and
// glances at the others.
func (s *MemoryStore) Recover(ctx context.Context, now time.Time) (int, error) {
	s.order.Lock()
	for owner, end := range s.leases {
		if end.Before(now) {
			delete(s.leases, owner)
		}
	}
	leases := maps.Clone(s.leases)
	s.order.Unlock()
	live := func(owner string) bool { _, ok := leases[owner]; return ok }
	if !s.held.anyDead(live) {
		return 0, nil // no walk over records that no dead owner holds
	}
	// Read without s.order, which inserts need, for the records of owners
	// with no lease; then, holding it, recover those that still are.
	var dead []*memRecord
	s.index.ascend(0, activeSet, func(r *memRecord) bool {
		r.sh.mu.Lock()
		if r.sh.m[r.info.TaskID] == r && r.holder != nil && !live(r.holder.owner) && r.info.Status.IsActive() {
			dead = append(dead, r)
		}
		r.sh.mu.Unlock()
		return true
	})
	if len(dead) == 0 {
		return 0, nil
	}
	s.order.Lock()
	defer s.order.Unlock()
	n := 0
	for _, r := range dead {
		r.sh.mu.Lock()
		if _, live := s.leases[r.ownerName()]; r.sh.m[r.info.TaskID] == r && r.holder != nil && !live && r.info.Status.IsActive() {
			n++
			info := r.info
			if r.shared != nil && r.shared.resumable {
				info.Status = StatusPending
				s.overwrite(r, info)
				s.held.setOwner(r, "")
				s.claims.push(r)
			} else {
				abandon(&info, now)
				s.overwrite(r, info)
			}
		}
		r.sh.mu.Unlock()
	}
	return n, nil
}

// abandon makes info the failed record of a task whose manager stopped.
func abandon(info *TaskInfo, now time.Time) {
	info.Status, info.CompletedAt, info.Result = StatusFailed, now, nil
	info.Error = "abandoned: the manager running it stopped (its lease lapsed) before it ended"
	info.ErrorCode = CodeTaskAbandoned
}

// Lost returns the ids among ids that owner no longer holds while active.
func (s *MemoryStore) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	var lost []string
	for _, id := range ids {
		sh := s.records.shard(id)
		sh.mu.Lock()
		r, ok := sh.m[id]
		if !ok || !r.info.Status.IsActive() || r.ownerName() != owner {
			lost = append(lost, id)
		}
		sh.mu.Unlock()
	}
	return lost, nil
}

// Orphans returns the active records no live manager holds. While another
// manager lives, those are the records of dead owners, and it reads no
// record unless one holds some (see Recover).
func (s *MemoryStore) Orphans(ctx context.Context, q OrphanQuery) ([]TaskInfo, error) {
	self, now := q.Self, q.Now
	if s.active.Load() == 0 {
		return nil, nil // no walk over the finished records
	}
	s.order.Lock()
	leases := maps.Clone(s.leases)
	s.order.Unlock()
	live := func(owner string) bool {
		end, ok := leases[owner]
		return ok && !end.Before(now)
	}
	others := false
	for owner := range leases {
		if owner != self && live(owner) {
			others = true
		}
	}
	if others && !s.held.anyDead(func(owner string) bool { return owner == self || live(owner) }) {
		return nil, nil // the unheld records wait for the live managers
	}
	var out []TaskInfo
	s.index.ascend(0, activeSet, func(r *memRecord) bool {
		r.sh.mu.Lock()
		owner := r.ownerName()
		waiting := owner == "" && r.shared != nil && r.shared.notBefore.After(now) // due later: not an orphan
		if r.sh.m[r.info.TaskID] == r && r.info.Status.IsActive() && (self == "" || owner != self) && ((owner == "" && !others && !waiting) || (owner != "" && !live(owner))) {
			out = append(out, r.info.clone())
		}
		r.sh.mu.Unlock()
		return true
	})
	return out, nil
}
