package apcore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryStore is the default TaskStore: records in a sharded hash map, so
// Get and SaveIf on different tasks rarely contend, plus an intrusive list
// that keeps insertion order and per-state counters that answer Count in
// O(1). It implements Counter and ConditionalSaver and is the reference the
// storetest checker is written against. Records do not survive the process.
//
// Results are deep-copied on the way in and out (see CloneResult), so
// callers never share maps or slices with the store. The zero value is not
// ready; use NewMemoryStore.
type MemoryStore struct {
	// records maps task ids to records; a shard's lock also guards the
	// contents of the records in it.
	records shardedMap[*memRecord]

	// order guards the insertion-order list. Lock order: order, then a
	// shard's lock.
	order      sync.Mutex
	head, tail *memRecord

	// counts has a counter per state; active (pending + running) and total
	// are kept apart so that admission and Count() read one number, exact
	// at every instant, rather than a sum of counters read one by one.
	counts        [numStatuses]atomic.Int64
	active, total atomic.Int64
}

// memRecord is one stored task.
type memRecord struct {
	sh         *mapShard[*memRecord] // the shard holding it; never changes
	info       TaskInfo
	handle     *task      // the owning manager's handle while it runs the task
	deleted    bool       // set by Delete, under the shard's lock
	prev, next *memRecord // guarded by MemoryStore.order
}

var (
	_ TaskStore        = (*MemoryStore)(nil)
	_ Counter          = (*MemoryStore)(nil)
	_ ConditionalSaver = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty in-memory store. Its Name is
// "InMemoryTaskStore".
func NewMemoryStore() *MemoryStore {
	s := &MemoryStore{}
	s.records.init()
	return s
}

// Name returns "InMemoryTaskStore".
func (s *MemoryStore) Name() string { return "InMemoryTaskStore" }

// checkRecord rejects what no store should keep.
func checkRecord(task *TaskInfo) error {
	if task.TaskID == "" {
		return invalidf("task store: record has an empty task id")
	}
	if statusIndex(task.Status) < 0 {
		return invalidf("task store: record %s has unknown status %q", task.TaskID, task.Status)
	}
	return nil
}

// Save creates or overwrites the record with task.TaskID. An overwrite keeps
// the record's place in the insertion order.
func (s *MemoryStore) Save(ctx context.Context, task TaskInfo) error {
	if err := checkRecord(&task); err != nil {
		return err
	}
	task = task.clone()
	s.order.Lock()
	defer s.order.Unlock()
	sh := s.records.shard(task.TaskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.m[task.TaskID]; ok {
		s.move(r.info.Status, task.Status)
		r.info = task
		return nil
	}
	s.appendLocked(sh, &memRecord{info: task})
	return nil
}

// appendLocked adds a new record at the end of the order; s.order and sh.mu
// are held.
func (s *MemoryStore) appendLocked(sh *mapShard[*memRecord], r *memRecord) {
	r.sh = sh
	sh.m[r.info.TaskID] = r
	r.prev = s.tail
	if s.tail == nil {
		s.head = r
	} else {
		s.tail.next = r
	}
	s.tail = r
	s.counted(r.info.Status, 1)
}

// insert is the manager's fast path for a new task: it adds the record
// without the lookup Save makes first (a fresh UUID is never present; if it
// were, the old record is put back and insert fails), and returns the record
// so later transitions need no lookup either (see saveIfRecord).
//
// The record also carries the manager's handle until the task ends, so the
// manager finds its own tasks with the same lookup that finds the record,
// instead of keeping a map of its own.
func (s *MemoryStore) insert(task TaskInfo, h *task) (*memRecord, error) {
	if err := checkRecord(&task); err != nil {
		return nil, err
	}
	task = task.clone()
	r := &memRecord{info: task, handle: h}
	s.order.Lock()
	defer s.order.Unlock()
	sh := s.records.shard(task.TaskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	before := len(sh.m)
	s.appendLocked(sh, r)
	if len(sh.m) == before { // the id was taken: undo
		s.counted(task.Status, -1)
		s.tail, s.tail.prev.next = r.prev, nil
		for old := s.head; old != nil; old = old.next {
			if old.info.TaskID == task.TaskID {
				sh.m[task.TaskID] = old
				break
			}
		}
		return nil, invalidf("task store: task %s already exists", task.TaskID)
	}
	return r, nil
}

// handleOf returns owner's handle on the task, if owner runs it.
func (s *MemoryStore) handleOf(taskID string, owner *TaskManager) (*task, bool) {
	sh := s.records.shard(taskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.m[taskID]; ok && r.handle != nil && r.handle.owner == owner {
		return r.handle, true
	}
	return nil, false
}

// handleOrRecord returns owner's handle on the task if owner runs it, and a
// copy of the record otherwise.
func (s *MemoryStore) handleOrRecord(taskID string, owner *TaskManager) (*task, TaskInfo, error) {
	sh := s.records.shard(taskID)
	sh.mu.Lock()
	r, ok := sh.m[taskID]
	if !ok {
		sh.mu.Unlock()
		return nil, TaskInfo{}, taskNotFound(taskID)
	}
	if h := r.handle; h != nil && h.owner == owner {
		sh.mu.Unlock()
		return h, TaskInfo{}, nil
	}
	info := r.info
	sh.mu.Unlock()
	return nil, info.clone(), nil
}

// release drops the handle from a record whose task has ended.
func (s *MemoryStore) release(r *memRecord) {
	r.sh.mu.Lock()
	r.handle = nil
	r.sh.mu.Unlock()
}

// handles returns owner's handles on its running tasks, walking every record.
func (s *MemoryStore) handles(owner *TaskManager) []*task {
	s.order.Lock()
	defer s.order.Unlock()
	var out []*task
	for r := s.head; r != nil; r = r.next {
		sh := r.sh
		sh.mu.Lock()
		if r.handle != nil && r.handle.owner == owner {
			out = append(out, r.handle)
		}
		sh.mu.Unlock()
	}
	return out
}

// saveIfRecord is SaveIf for a record insert returned: no lookup.
func (s *MemoryStore) saveIfRecord(r *memRecord, task *TaskInfo, from []TaskStatus) bool {
	result := CloneResult(task.Result)
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	if r.deleted || !hasStatus(from, r.info.Status) {
		return false
	}
	s.move(r.info.Status, task.Status)
	r.info = *task
	r.info.Result = result
	return true
}

// SaveIf overwrites the record only if its status is one of from; an absent
// record is not saved.
func (s *MemoryStore) SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error) {
	if err := checkRecord(&task); err != nil {
		return false, err
	}
	task = task.clone()
	sh := s.records.shard(task.TaskID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.m[task.TaskID]
	if !ok || !hasStatus(from, r.info.Status) {
		return false, nil
	}
	s.move(r.info.Status, task.Status)
	r.info = task
	return true, nil
}

// counted adds delta records in status to the counters.
func (s *MemoryStore) counted(status TaskStatus, delta int64) {
	s.counts[statusIndex(status)].Add(delta)
	s.total.Add(delta)
	if status.IsActive() {
		s.active.Add(delta)
	}
}

// move shifts one record's count from one state to another.
func (s *MemoryStore) move(from, to TaskStatus) {
	if from != to {
		s.counts[statusIndex(from)].Add(-1)
		s.counts[statusIndex(to)].Add(1)
		if from.IsActive() != to.IsActive() {
			if to.IsActive() {
				s.active.Add(1)
			} else {
				s.active.Add(-1)
			}
		}
	}
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

// List returns copies of every record, or of those in status, in insertion
// order. An unknown status is GENERAL_INVALID_INPUT.
func (s *MemoryStore) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if status != "" && statusIndex(status) < 0 {
		return nil, invalidf("task store: unknown status %q", status)
	}
	var size int64
	if status == "" {
		for i := range s.counts {
			size += s.counts[i].Load()
		}
	} else {
		size = s.counts[statusIndex(status)].Load()
	}
	return s.collect(int(size), func(t *TaskInfo) bool { return status == "" || t.Status == status })
}

// ListExpired returns copies of the terminal records whose CompletedAt is set
// and strictly before before, in insertion order.
func (s *MemoryStore) ListExpired(ctx context.Context, before time.Time) ([]TaskInfo, error) {
	return s.collect(0, func(t *TaskInfo) bool {
		return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
	})
}

// collect copies the records that keep accepts, walking the insertion
// order; size is a capacity hint.
func (s *MemoryStore) collect(size int, keep func(*TaskInfo) bool) ([]TaskInfo, error) {
	s.order.Lock()
	defer s.order.Unlock()
	out := make([]TaskInfo, 0, max(size, 0))
	for r := s.head; r != nil; r = r.next {
		sh := r.sh
		sh.mu.Lock()
		if keep(&r.info) {
			out = append(out, r.info)
		}
		sh.mu.Unlock()
	}
	for i := range out {
		out[i].Result = CloneResult(out[i].Result)
	}
	return out, nil
}

// Delete removes the record; an absent id is a no-op.
func (s *MemoryStore) Delete(ctx context.Context, taskID string) error {
	s.order.Lock()
	defer s.order.Unlock()
	sh := s.records.shard(taskID)
	sh.mu.Lock()
	r, ok := sh.m[taskID]
	if ok {
		delete(sh.m, taskID)
		r.deleted = true
		s.counted(r.info.Status, -1)
	}
	sh.mu.Unlock()
	if !ok {
		return nil
	}
	if r.prev == nil {
		s.head = r.next
	} else {
		r.prev.next = r.next
	}
	if r.next == nil {
		s.tail = r.prev
	} else {
		r.next.prev = r.prev
	}
	r.prev, r.next = nil, nil
	return nil
}

// Count returns how many records are in any of statuses (none = all), in
// O(1). Count() and Count(pending, running) read one counter each and are
// exact; other sets of states add counters read one after another.
func (s *MemoryStore) Count(ctx context.Context, statuses ...TaskStatus) (int, error) {
	switch {
	case len(statuses) == 0:
		return int(s.total.Load()), nil
	case len(statuses) == 2 && statuses[0] != statuses[1] && statuses[0].IsActive() && statuses[1].IsActive():
		return int(s.active.Load()), nil
	}
	var n int64
	for i, st := range statuses {
		idx := statusIndex(st)
		if idx < 0 {
			return 0, invalidf("task store: unknown status %q", st)
		}
		if hasStatus(statuses[:i], st) {
			continue // count each state once
		}
		n += s.counts[idx].Load()
	}
	return int(n), nil
}

// shardedMap is a string-keyed map split into shards with a lock each:
// lookups of different keys seldom contend, keys are not boxed, and the
// cost of a lookup does not grow with the number of entries.
type shardedMap[V any] struct {
	shards [numShards]mapShard[V]
}

const numShards = 64

type mapShard[V any] struct {
	mu sync.Mutex
	m  map[string]V
	_  [64 - 8 - 8]byte // keep each shard on its own cache line
}

func (s *shardedMap[V]) init() {
	for i := range s.shards {
		s.shards[i].m = make(map[string]V)
	}
}

// shard returns the shard that holds key. It hashes at most the last eight
// bytes (FNV-1a): task ids are random UUIDs, whose tails spread well, and
// the map inside the shard hashes the whole key anyway.
func (s *shardedMap[V]) shard(key string) *mapShard[V] {
	h := uint32(2166136261)
	for i := max(len(key)-8, 0); i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &s.shards[h%numShards]
}

func (s *shardedMap[V]) load(key string) (V, bool) {
	sh := s.shard(key)
	sh.mu.Lock()
	v, ok := sh.m[key]
	sh.mu.Unlock()
	return v, ok
}

func (s *shardedMap[V]) store(key string, v V) {
	sh := s.shard(key)
	sh.mu.Lock()
	sh.m[key] = v
	sh.mu.Unlock()
}

func (s *shardedMap[V]) delete(key string) {
	sh := s.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
}

// remove deletes key and reports whether it was there.
func (s *shardedMap[V]) remove(key string) bool {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[key]
	delete(sh.m, key)
	return ok
}

// values returns a snapshot of every value.
func (s *shardedMap[V]) values() []V {
	var out []V
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, v := range sh.m {
			out = append(out, v)
		}
		sh.mu.Unlock()
	}
	return out
}

// hasStatus reports whether s is in list.
func hasStatus(list []TaskStatus, s TaskStatus) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// taskNotFound is the protocol's "Task not found: <id>" error.
func taskNotFound(taskID string) error {
	return newError(CodeTaskNotFound, "Task not found: %s", taskID)
}
