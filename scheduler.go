package apcore

import (
	"sync"
	"sync/atomic"
)

// scheduler hands this manager's concurrency slots to its queued tasks.
//
//   - A pending task waits as a node in a FIFO, not as a goroutine. A
//     goroutine (a worker) exists only for a task that holds a slot; when
//     that task's attempt is over, the worker takes the next queued task
//     itself and gives the slot back only when the queue is empty.
//   - The queue is never non-empty while a slot is free: enqueue and the
//     release in next both happen under mu.
//   - The queue is intrusive (links live in the task), so Cancel takes a
//     queued task out in O(1) without allocating; BenchmarkSchedulerQueue
//     compares it with container/list.
//   - The slots are a counter, not a semaphore: the queue is already the
//     list of waiters, in order, and nobody ever blocks on a slot.
type scheduler struct {
	mu         sync.Mutex
	limit      int // max_concurrent
	busy       int // slots taken
	head, tail *task
	closed     bool            // after Shutdown or Drain: nothing new starts
	wg         *sync.WaitGroup // counts workers; Shutdown waits on it

	// workers lists the goroutines holding a slot, so that the keeper can
	// find the tasks that run now (see running) without walking every task.
	workers *worker
}

// worker is one goroutine holding a slot.
type worker struct {
	current    atomic.Pointer[task] // the task whose attempt it runs, or nil
	prev, next *worker              // guarded by scheduler.mu
}

// join lists w among the workers.
func (s *scheduler) join(w *worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.joinLocked(w)
}

// joinLocked lists w among the workers; s.mu is held.
func (s *scheduler) joinLocked(w *worker) {
	w.next = s.workers
	if s.workers != nil {
		s.workers.prev = w
	}
	s.workers = w
}

// leave takes w off the list; s.mu is held.
func (s *scheduler) leaveLocked(w *worker) {
	if w.prev == nil {
		s.workers = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
}

// leave takes w off the list, for a worker whose goroutine ends while its
// slot goes on with another (see goexited).
func (s *scheduler) leave(w *worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaveLocked(w)
}

// running returns the tasks whose attempts run now.
func (s *scheduler) running() []*task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*task
	for w := s.workers; w != nil; w = w.next {
		if t := w.current.Load(); t != nil {
			out = append(out, t)
		}
	}
	return out
}

// enqueue queues t, or takes a free slot for it and returns the listed
// worker the caller must start on it (the WaitGroup already counts it), so
// that the goroutine can be started after the caller's locks are released.
// ok is false, and nothing is done, once the scheduler is closed.
func (s *scheduler) enqueue(t *task) (w *worker, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	if s.busy < s.limit { // a free slot means an empty queue: t is next
		s.busy++
		s.wg.Add(1)
		w = &worker{}
		s.joinLocked(w)
		return w, true
	}
	t.queued, t.prev = true, s.tail
	if s.tail == nil {
		s.head = t
	} else {
		s.tail.next = t
	}
	s.tail = t
	return nil, true
}

// remove takes t out of the queue if it is there. t.mu is held.
func (s *scheduler) remove(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.queued {
		s.unlink(t)
	}
}

// unlink takes a queued t out of the list; s.mu is held.
func (s *scheduler) unlink(t *task) {
	if t.prev == nil {
		s.head = t.next
	} else {
		t.prev.next = t.next
	}
	if t.next == nil {
		s.tail = t.prev
	} else {
		t.next.prev = t.prev
	}
	t.prev, t.next, t.queued = nil, nil, false
}

// next hands worker w's slot to the first queued task, or gives the slot
// back, and takes w off the list, when there is none (or the scheduler is
// closed).
func (s *scheduler) next(w *worker) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.head; t != nil && !s.closed {
		s.unlink(t)
		return t
	}
	s.busy--
	s.leaveLocked(w)
	return nil
}

// free returns how many slots are free.
func (s *scheduler) free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	return s.limit - s.busy
}

// close stops new starts: queued tasks stay queued for Shutdown to cancel.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}
