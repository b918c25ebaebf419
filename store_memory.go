package apcore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryStore is the default TaskStore: records in a sync.Map, so Get and
// SaveIf on different tasks never contend, plus an intrusive list that keeps
// insertion order and per-state counters that answer Count in O(1). It
// implements Counter and ConditionalSaver and is the reference the storetest
// checker is written against. Records do not survive the process.
//
// Results are deep-copied on the way in and out (see CloneResult), so
// callers never share maps or slices with the store. The zero value is not
// ready; use NewMemoryStore.
type MemoryStore struct {
	records sync.Map // task id -> *memRecord

	// order guards the insertion-order list; a record's mu is taken inside
	// it, never the other way round.
	order      sync.Mutex
	head, tail *memRecord

	counts [numStatuses]atomic.Int64
}

// memRecord is one stored task.
type memRecord struct {
	mu         sync.Mutex
	info       TaskInfo
	deleted    bool // set, under mu, when Delete unlinks the record
	prev, next *memRecord
}

var (
	_ TaskStore        = (*MemoryStore)(nil)
	_ Counter          = (*MemoryStore)(nil)
	_ ConditionalSaver = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty in-memory store. Its Name is
// "InMemoryTaskStore".
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

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

// Save creates or overwrites the record with task.TaskID.
func (s *MemoryStore) Save(ctx context.Context, task TaskInfo) error {
	_, err := s.save(task, nil)
	return err
}

// SaveIf overwrites the record only if its status is one of from; an absent
// record is not saved.
func (s *MemoryStore) SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error) {
	if from == nil {
		from = []TaskStatus{}
	}
	return s.save(task, from)
}

// save writes task. A nil from means unconditional (insert or overwrite);
// a non-nil from means overwrite only from those states.
func (s *MemoryStore) save(task TaskInfo, from []TaskStatus) (bool, error) {
	if err := checkRecord(&task); err != nil {
		return false, err
	}
	task = task.clone()
	for {
		if v, ok := s.records.Load(task.TaskID); ok {
			r := v.(*memRecord)
			r.mu.Lock()
			if r.deleted { // lost a race with Delete: look again
				r.mu.Unlock()
				continue
			}
			if from != nil && !hasStatus(from, r.info.Status) {
				r.mu.Unlock()
				return false, nil
			}
			s.move(r.info.Status, task.Status)
			r.info = task
			r.mu.Unlock()
			return true, nil
		}
		if from != nil {
			return false, nil
		}
		r := &memRecord{info: task}
		r.mu.Lock() // nobody may overwrite it before it is counted
		s.order.Lock()
		if _, loaded := s.records.LoadOrStore(task.TaskID, r); loaded {
			s.order.Unlock()
			continue // another Save inserted it first: overwrite that one
		}
		if s.tail == nil {
			s.head = r
		} else {
			s.tail.next, r.prev = r, s.tail
		}
		s.tail = r
		s.counts[statusIndex(task.Status)].Add(1)
		s.order.Unlock()
		r.mu.Unlock()
		return true, nil
	}
}

// move shifts one record's count from one state to another.
func (s *MemoryStore) move(from, to TaskStatus) {
	if from != to {
		s.counts[statusIndex(from)].Add(-1)
		s.counts[statusIndex(to)].Add(1)
	}
}

// Get returns a copy of the record, or ErrTaskNotFound.
func (s *MemoryStore) Get(ctx context.Context, taskID string) (TaskInfo, error) {
	v, ok := s.records.Load(taskID)
	if ok {
		r := v.(*memRecord)
		r.mu.Lock()
		info, deleted := r.info, r.deleted
		r.mu.Unlock()
		if !deleted {
			return info.clone(), nil
		}
	}
	return TaskInfo{}, taskNotFound(taskID)
}

// List returns copies of every record, or of those in status, in insertion
// order. An unknown status is GENERAL_INVALID_INPUT.
func (s *MemoryStore) List(ctx context.Context, status TaskStatus) ([]TaskInfo, error) {
	if status != "" && statusIndex(status) < 0 {
		return nil, invalidf("task store: unknown status %q", status)
	}
	return s.collect(func(t *TaskInfo) bool { return status == "" || t.Status == status })
}

// ListExpired returns copies of the terminal records whose CompletedAt is set
// and strictly before before, in insertion order.
func (s *MemoryStore) ListExpired(ctx context.Context, before time.Time) ([]TaskInfo, error) {
	return s.collect(func(t *TaskInfo) bool {
		return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
	})
}

// collect copies the records that keep accepts, walking the insertion order.
func (s *MemoryStore) collect(keep func(*TaskInfo) bool) ([]TaskInfo, error) {
	s.order.Lock()
	defer s.order.Unlock()
	out := make([]TaskInfo, 0, 16)
	for r := s.head; r != nil; r = r.next {
		r.mu.Lock()
		if keep(&r.info) {
			out = append(out, r.info.clone())
		}
		r.mu.Unlock()
	}
	return out, nil
}

// Delete removes the record; an absent id is a no-op.
func (s *MemoryStore) Delete(ctx context.Context, taskID string) error {
	s.order.Lock()
	defer s.order.Unlock()
	v, ok := s.records.LoadAndDelete(taskID)
	if !ok {
		return nil
	}
	r := v.(*memRecord)
	r.mu.Lock()
	r.deleted = true
	s.counts[statusIndex(r.info.Status)].Add(-1)
	r.info = TaskInfo{} // drop the result now, not when the last pointer goes
	r.mu.Unlock()
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

// Count returns how many records are in any of statuses (none = all), in O(1).
func (s *MemoryStore) Count(ctx context.Context, statuses ...TaskStatus) (int, error) {
	if len(statuses) == 0 {
		statuses = allStatuses[:]
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
