package apcore

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryStore is the default TaskStore, and the reference that package
// storetest is written against. It keeps records in a sharded hash map, so
// that Get and SaveIf on different tasks rarely contend; the insertion
// order in blocks of sequence numbers, each with a mask of its records per
// state, so that a page, a listing of one state, a
// recovery and a sweep cost what they return; and counters per state that
// answer Count in O(1). It implements Counter, ConditionalSaver, Remover,
// Pager, Sweeper and SharedStore, and knows nothing of managers: several
// managers in one process may share one, as replicas share a database
// (leases, resumable tasks, remote cancel). Records do not survive the
// process.
//
// Results are deep-copied on the way in and out (see CloneResult), so
// callers never share maps or slices with the store. The zero value is not
// ready; use NewMemoryStore.
type MemoryStore struct {
	// records maps task ids to records; a shard's lock also guards the
	// contents of the records in it.
	records shardedMap[*memRecord]

	// order is taken by whatever adds a record (so that sequence numbers
	// follow the insertion order, and admission counts and inserts as one
	// step) and guards what SharedStore adds. Lock order (the package's list
	// is in lifecycle.go): order, then a shard's lock.
	order sync.Mutex
	index memIndex

	// active (pending + running) and total are the counts that admission
	// and Count() read, one number each, exact at every instant. The counts
	// by state are per shard (mapShard.tally): a count of one state sums
	// the shards, and a state change that keeps a record active touches no
	// shared counter at all. active, which every task's end lowers, has a
	// cache line of its own, so that those writes do not take the line of
	// order away from the goroutine that inserts.
	total  atomic.Int64
	_      [64]byte
	active atomic.Int64
	_      [56]byte

	// What SharedStore adds (see store_memory_shared.go), guarded by order.
	leases map[string]time.Time // owner -> end of its lease
	claims claimQueues          // resumable records that were pending and held by no one

	// uniq maps each unique key (WithUniqueKey) to the record Insert last
	// saved with it, which holds the key while it is pending, running or
	// completed. Only Insert adds to it, holding order; a removed record
	// takes its entry out. uniqMu is a leaf: taken under a shard's lock.
	uniqMu sync.Mutex
	uniq   map[string]*memRecord

	// held counts the active records each owner holds (see heldCounts).
	held heldCounts
}

// memRecord is one stored task.
type memRecord struct {
	sh     *mapShard[*memRecord] // the shard holding it; never changes
	info   TaskInfo
	holder *ownerHeld // SharedStore: the manager holding it, nil for none (see ownerName)
	shared *memShared // SharedStore: what a resumable task keeps beside it
	seq    uint64     // its place in the insertion order; never changes
	blk    *memBlock  // the block of seq
}

var (
	_ TaskStore        = (*MemoryStore)(nil)
	_ Counter          = (*MemoryStore)(nil)
	_ ConditionalSaver = (*MemoryStore)(nil)
	_ SharedStore      = (*MemoryStore)(nil)
	_ Remover          = (*MemoryStore)(nil)
	_ Pager            = (*MemoryStore)(nil)
	_ Sweeper          = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty in-memory store. Its Name is
// "InMemoryTaskStore".
func NewMemoryStore() *MemoryStore { return newMemoryStore(0) }

// newMemoryStore returns an empty store sized for about hint records.
func newMemoryStore(hint int) *MemoryStore {
	s := &MemoryStore{leases: make(map[string]time.Time), uniq: make(map[string]*memRecord)}
	s.records.init(hint)
	s.index.init()
	s.claims.init()
	s.held.init()
	return s
}

// Name returns "InMemoryTaskStore".
func (s *MemoryStore) Name() string { return "InMemoryTaskStore" }

// Save creates or overwrites the record with task.TaskID. An overwrite keeps
// the record's place in the insertion order.
func (s *MemoryStore) Save(ctx context.Context, task TaskInfo) error {
	if err := checkRecord(&task); err != nil {
		return err
	}
	task.Result = CloneResult(task.Result)
	sh := s.records.shard(task.TaskID)
	sh.mu.Lock()
	if r, ok := sh.m[task.TaskID]; ok {
		s.overwrite(r, task)
		sh.mu.Unlock()
		return nil
	}
	sh.mu.Unlock()
	s.order.Lock()
	defer s.order.Unlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.m[task.TaskID]; ok { // saved meanwhile
		s.overwrite(r, task)
		return nil
	}
	s.appendLocked(sh, &memRecord{info: task})
	return nil
}

// overwrite makes task r's record, moving it between the counts and the
// index's masks: every change of a stored record goes through it. r's shard
// lock is held.
func (s *MemoryStore) overwrite(r *memRecord, task TaskInfo) {
	s.claims.left(r)
	from := r.info.Status
	s.move(r.sh, from, task.Status)
	r.info = task
	s.index.moved(r, from)
	s.held.moved(r, from)
}

// appendLocked adds a new record at the end of the order; s.order and sh.mu
// are held.
func (s *MemoryStore) appendLocked(sh *mapShard[*memRecord], r *memRecord) {
	r.sh = sh
	sh.m[r.info.TaskID] = r
	s.index.add(r)
	s.counted(sh, r.info.Status, 1)
}

// SaveIf overwrites the record only if its status is one of from; an absent
// record is not saved.
func (s *MemoryStore) SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error) {
	if err := checkRecord(&task); err != nil {
		return false, err
	}
	task.Result = CloneResult(task.Result)
	sh := s.records.shard(task.TaskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.m[task.TaskID]
	if !ok || !slices.Contains(from, r.info.Status) {
		return false, nil
	}
	s.overwrite(r, task)
	return true, nil
}

// Get returns a copy of the record, or ErrTaskNotFound.
func (s *MemoryStore) Get(ctx context.Context, taskID string) (TaskInfo, error) {
	sh := s.records.shard(taskID)
	sh.mu.Lock()
	r, ok := sh.m[taskID]
	var info TaskInfo
	if ok {
		info = r.info
	}
	sh.mu.Unlock()
	if !ok {
		return TaskInfo{}, taskNotFound(taskID)
	}
	return info.clone(), nil
}

// read returns a copy of r's record if r is still stored and keep accepts
// it (keep may be nil), holding r's shard lock to read it.
func (r *memRecord) read(keep func(*TaskInfo) bool) (TaskInfo, bool) {
	r.sh.mu.Lock()
	stored := r.sh.m[r.info.TaskID] == r
	var info TaskInfo
	if stored && (keep == nil || keep(&r.info)) {
		info = r.info
	} else {
		stored = false
	}
	r.sh.mu.Unlock()
	return info, stored
}

// List returns copies of every record, or of those in status, in insertion
// order. An unknown status is GENERAL_INVALID_INPUT. It costs every record
// kept (status ""), or those in status and a glance at each block of 256.
func (s *MemoryStore) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if status == "" {
		return s.collect(int(s.total.Load()), everySet, nil), nil
	}
	if !status.Valid() {
		return nil, invalidf("task store: unknown status %q", status)
	}
	return s.collect(s.tally(status), setOf(status), func(t *TaskInfo) bool { return t.Status == status }), nil
}

// ListExpired returns copies of the terminal records whose CompletedAt is set
// and strictly before before, in insertion order. It reads the blocks that
// may hold one.
func (s *MemoryStore) ListExpired(ctx context.Context, before time.Time) ([]TaskInfo, error) {
	var out []TaskInfo
	s.index.eachBlock(func(b *memBlock) bool {
		if !b.mayExpire(before) {
			return true
		}
		b.each(terminalSet, func(r *memRecord) bool {
			if info, ok := r.read(func(t *TaskInfo) bool {
				return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
			}); ok {
				out = append(out, info)
			}
			return true
		})
		return true
	})
	for i := range out {
		out[i].Result = CloneResult(out[i].Result)
	}
	return out, nil
}

// collect copies the records in a state of set that keep accepts (nil:
// all), in insertion order; size is a capacity hint.
func (s *MemoryStore) collect(size int, set statusSet, keep func(*TaskInfo) bool) []TaskInfo {
	out := make([]TaskInfo, 0, max(size, 0))
	s.index.ascend(0, set, func(r *memRecord) bool {
		if info, ok := r.read(keep); ok {
			out = append(out, info)
		}
		return true
	})
	for i := range out {
		out[i].Result = CloneResult(out[i].Result)
	}
	return out
}

// Delete removes the record; an absent id is a no-op.
func (s *MemoryStore) Delete(ctx context.Context, taskID string) error {
	_, err := s.Remove(ctx, taskID)
	return err
}

// Remove removes the record and reports whether it was there.
func (s *MemoryStore) Remove(ctx context.Context, taskID string) (bool, error) {
	sh := s.records.shard(taskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.m[taskID]
	if ok {
		s.removeLocked(r)
	}
	return ok, nil
}

// removeLocked removes r, which is stored; its shard lock is held.
func (s *MemoryStore) removeLocked(r *memRecord) {
	s.claims.left(r)
	delete(r.sh.m, r.info.TaskID)
	s.counted(r.sh, r.info.Status, -1)
	s.index.removed(r)
	s.held.removed(r)
	if key := r.info.UniqueKey; key != "" {
		s.uniqMu.Lock()
		if s.uniq[key] == r {
			delete(s.uniq, key)
		}
		s.uniqMu.Unlock()
	}
}

// Count returns how many records are in any of statuses (none = all).
// Count() and Count(pending, running) read one counter each and are exact
// at every instant; other sets of states sum the shards' counts, one shard
// after another.
func (s *MemoryStore) Count(ctx context.Context, statuses ...TaskStatus) (int, error) {
	switch {
	case len(statuses) == 0:
		return int(s.total.Load()), nil
	case len(statuses) == 2 && statuses[0] != statuses[1] && statuses[0].IsActive() && statuses[1].IsActive():
		return int(s.active.Load()), nil
	}
	n := 0
	for i, st := range statuses {
		if !st.Valid() {
			return 0, invalidf("task store: unknown status %q", st)
		}
		if slices.Contains(statuses[:i], st) {
			continue // count each state once
		}
		n += s.tally(st)
	}
	return n, nil
}

// tally sums the shards' counts of records in status.
func (s *MemoryStore) tally(status TaskStatus) int {
	var n int64
	i := statusIndex(status)
	for k := range s.records.shards {
		sh := &s.records.shards[k]
		sh.mu.Lock()
		n += sh.tally[i]
		sh.mu.Unlock()
	}
	return int(n)
}

// counted adds delta records in status to the counters; sh.mu is held.
func (s *MemoryStore) counted(sh *mapShard[*memRecord], status TaskStatus, delta int64) {
	sh.tally[statusIndex(status)] += delta
	s.total.Add(delta)
	if status.IsActive() {
		s.active.Add(delta)
	}
}

// move shifts one record of shard sh from one state to another in the
// counters; sh.mu is held.
func (s *MemoryStore) move(sh *mapShard[*memRecord], from, to TaskStatus) {
	if from == to {
		return
	}
	sh.tally[statusIndex(from)]--
	sh.tally[statusIndex(to)]++
	switch {
	case to.IsActive() && !from.IsActive():
		s.active.Add(1)
	case from.IsActive() && !to.IsActive():
		s.active.Add(-1)
	}
}

// statusIndex is the counter of a valid state.
func statusIndex(s TaskStatus) int {
	switch s {
	case StatusPending:
		return 0
	case StatusRunning:
		return 1
	case StatusCompleted:
		return 2
	case StatusFailed:
		return 3
	}
	return 4
}
