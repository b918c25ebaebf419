package apcore

import (
	"container/heap"
	"sync/atomic"
	"time"
)

// claimQueues are the MemoryStore's claimable records: one first-in,
// first-out queue per module and priority, so that a Claim limited to some
// modules reads only theirs and takes the highest priority first, and a
// heap of the records not yet due, so that a record waiting out its retry
// backoff is not read again by every Claim. An entry may have gone stale
// (its record claimed, ended or deleted since); a Claim drops those it
// meets, and compacts the heap once about half of it is stale, so that
// records deleted long before they were due do not stay in memory until
// then. All of it is guarded by MemoryStore.order, but stale.
type claimQueues struct {
	byModule map[claimKey]*claimQueue
	later    laterHeap
	arrivals uint64 // numbers the entries, in the order they were queued
	// stale counts the heap entries whose record has left them since the
	// last compaction (see left); it is written under shard locks only.
	stale atomic.Int64
}

// compactAtLeast is the fewest stale heap entries worth a compaction.
const compactAtLeast = 1024

// claimKey names one queue: a module's records of one priority.
type claimKey struct {
	module   string
	priority int
}

// claimQueue is one module's queue: items[head:] in arrival order.
type claimQueue struct {
	items []claimEntry
	head  int
}

type claimEntry struct {
	r  *memRecord
	at uint64 // arrival number
}

func (q *claimQueues) init() { q.byModule = make(map[claimKey]*claimQueue) }

// push queues r, a record that just became claimable (so r.shared is
// set); MemoryStore.order is held.
func (q *claimQueues) push(r *memRecord) {
	q.arrivals++
	key := r.shared.claim // not r.info, which writers change under the shard lock
	mq := q.byModule[key]
	if mq == nil {
		mq = &claimQueue{}
		q.byModule[key] = mq
	}
	if mq.head > 32 && mq.head >= len(mq.items)/2 {
		// Move what is left to the front, so that a queue that never empties
		// does not grow without bound.
		n := copy(mq.items, mq.items[mq.head:])
		clear(mq.items[n:])
		mq.items, mq.head = mq.items[:n], 0
	}
	mq.items = append(mq.items, claimEntry{r, q.arrivals})
}

// add queues r, a record that just became claimable (so r.shared is set),
// or, when it is not due yet by the wall clock (at, its notBefore read
// under its shard's lock), puts it in the heap at once, where a Claim does
// not read it until it is: a million tasks scheduled for later are not
// moved there by the Claims that meet them. MemoryStore.order is held.
func (q *claimQueues) add(r *memRecord, at time.Time) {
	if at.After(time.Now()) {
		heap.Push(&q.later, laterEntry{r: r, notBefore: at})
		return
	}
	q.push(r)
}

// front returns the queue's oldest entry that is still claimable and due,
// moving the stale ones out and the ones not due yet to the heap; ok is
// false when the queue has none.
func (q *claimQueues) front(mq *claimQueue, now time.Time) (claimEntry, bool) {
	for mq.head < len(mq.items) {
		e := mq.items[mq.head]
		r := e.r
		r.sh.mu.Lock()
		live := r.claimableLocked() && r.sh.m[r.info.TaskID] == r
		due := live && !r.shared.notBefore.After(now)
		notBefore := time.Time{}
		if live {
			notBefore = r.shared.notBefore
		}
		r.sh.mu.Unlock()
		if due {
			return e, true
		}
		mq.items[mq.head] = claimEntry{}
		mq.head++
		if live {
			heap.Push(&q.later, laterEntry{r: r, notBefore: notBefore})
		}
	}
	return claimEntry{}, false
}

// pop removes the queue's front entry, which front just returned.
func (q *claimQueues) pop(key claimKey, mq *claimQueue) {
	mq.items[mq.head] = claimEntry{}
	mq.head++
	if mq.head == len(mq.items) {
		delete(q.byModule, key)
	}
}

// left notes that r is about to change or go (r's shard lock is held):
// when it waits in the heap, its entry there goes stale.
func (q *claimQueues) left(r *memRecord) {
	if r.claimableLocked() && r.shared.notBefore.After(time.Now()) {
		q.stale.Add(1)
	}
}

// due moves the heap's records that are due by now back to their queues,
// after compacting the heap when about half of it is stale.
func (q *claimQueues) due(now time.Time) {
	if n := q.stale.Load(); n >= compactAtLeast && 2*n >= int64(len(q.later)) {
		q.compact()
	}
	for q.later.Len() > 0 && !q.later[0].notBefore.After(now) {
		e := heap.Pop(&q.later).(laterEntry)
		q.push(e.r) // a stale one is dropped when a Claim meets it
	}
}

// compact drops the heap's stale entries: records deleted, ended, held, or
// due at another time since they were pushed. It costs a pass over the
// heap, once per as many stale entries as half the heap. MemoryStore.order
// is held; each record's shard lock is taken in turn.
func (q *claimQueues) compact() {
	q.stale.Store(0) // a record that leaves during the pass counts for the next
	kept := q.later[:0]
	for _, e := range q.later {
		r := e.r
		r.sh.mu.Lock()
		live := r.claimableLocked() && r.sh.m[r.info.TaskID] == r && r.shared.notBefore.Equal(e.notBefore)
		r.sh.mu.Unlock()
		if live {
			kept = append(kept, e)
		}
	}
	clear(q.later[len(kept):])
	if cap(kept) > 2*len(kept)+compactAtLeast { // give the memory back
		kept = append(make(laterHeap, 0, len(kept)), kept...)
	}
	q.later = kept
	heap.Init(&q.later)
}

// laterHeap orders the claimable records not yet due by when they are.
type laterHeap []laterEntry

type laterEntry struct {
	r         *memRecord
	notBefore time.Time
}

func (h laterHeap) Len() int           { return len(h) }
func (h laterHeap) Less(i, j int) bool { return h[i].notBefore.Before(h[j].notBefore) }
func (h laterHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *laterHeap) Push(x any)        { *h = append(*h, x.(laterEntry)) }
func (h *laterHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = laterEntry{}
	*h = old[:len(old)-1]
	return e
}
