package apcore

import (
	"sync"
	"sync/atomic"
)

// heldCounts count, per owner, the active records that owner holds, so that
// Recover knows without reading any record whether an owner with no live
// lease holds something: while none does, as in every steady state,
// recovery reads nothing however many records wait (a million scheduled
// tasks cost it nothing), and it walks the active records only after a
// manager died holding some.
//
// A record names its owner by the owner's entry here (memRecord.holder),
// and is counted in it while it is active. Counts go up under mu (a leaf
// lock, taken under a shard's lock), each time through the owner's entry
// in the map, so that an entry whose count is zero can be dropped from
// the map under mu: the records that still name it are not active, and
// one that becomes active again is counted in the map's entry. Counts go
// down without mu.
type heldCounts struct {
	mu sync.Mutex
	m  map[string]*ownerHeld
}

// ownerHeld is one owner's entry: its name and its count.
type ownerHeld struct {
	owner string
	n     atomic.Int64
}

func (h *heldCounts) init() { h.m = make(map[string]*ownerHeld) }

// ownerName returns the owner holding r, "" for none; r's shard lock is held.
func (r *memRecord) ownerName() string {
	if r.holder == nil {
		return ""
	}
	return r.holder.owner
}

// setOwner makes owner ("" for none) hold r, which is stored; r's shard
// lock is held.
func (h *heldCounts) setOwner(r *memRecord, owner string) {
	if r.ownerName() == owner {
		return
	}
	active := r.info.Status.IsActive()
	if r.holder != nil && active {
		r.holder.n.Add(-1)
	}
	r.holder = nil
	if owner != "" {
		r.holder = h.entry(owner, active)
	}
}

// moved counts r in or out after its state moved from from; r's shard lock
// is held.
func (h *heldCounts) moved(r *memRecord, from TaskStatus) {
	was, is := from.IsActive(), r.info.Status.IsActive()
	if r.holder == nil || was == is {
		return
	}
	if is {
		r.holder = h.entry(r.holder.owner, true)
	} else {
		r.holder.n.Add(-1)
	}
}

// removed takes r, which was just removed from the store, out of its
// count; r's shard lock is held.
func (h *heldCounts) removed(r *memRecord) {
	if r.holder != nil && r.info.Status.IsActive() {
		r.holder.n.Add(-1)
	}
}

// entry returns owner's entry in the map, made if missing, counting one
// more record in it when count is set.
func (h *heldCounts) entry(owner string, count bool) *ownerHeld {
	h.mu.Lock()
	e := h.m[owner]
	if e == nil {
		e = &ownerHeld{owner: owner}
		h.m[owner] = e
	}
	if count {
		e.n.Add(1)
	}
	h.mu.Unlock()
	return e
}

// anyDead reports whether an owner that live does not name holds an active
// record, and drops the entries of owners that hold none.
func (h *heldCounts) anyDead(live func(owner string) bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	dead := false
	for owner, e := range h.m {
		switch {
		case e.n.Load() == 0:
			delete(h.m, owner)
		case !live(owner):
			dead = true
		}
	}
	return dead
}

// counts returns the owners that hold active records, with how many each
// holds, as counted.
func (h *heldCounts) counts() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int64, len(h.m))
	for owner, e := range h.m {
		if n := e.n.Load(); n != 0 {
			out[owner] = n
		}
	}
	return out
}
