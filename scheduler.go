package apcore

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// scheduler hands this manager's concurrency slots to its queued tasks.
//
//   - A pending task waits as a node in a queue, not as a goroutine: in
//     submit order within a priority, higher priorities first. A
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
//   - A worker whose slot is given back stays a while as an idle goroutine,
//     and the next task that takes a slot goes to it rather than to a new
//     goroutine: a new one starts with a small stack that the path down to
//     the store's write outgrows, and growing it cost more than the rest
//     of the spawn (BenchmarkSubmitWait shows it). Idle workers that stay
//     idle for a whole idleTick end (see retire), so a burst leaves no
//     goroutines behind for long. Workers, busy and idle, never outnumber
//     the slots.
type scheduler struct {
	mu         sync.Mutex
	limit      int // max_concurrent
	busy       int // slots taken
	head, tail *task
	tails      *[MaxPriority - MinPriority + 1]*task // the last queued task of each priority; see insertByPriority
	closed     bool                                  // after Shutdown or Drain: nothing new starts
	wg         *sync.WaitGroup                       // counts workers; Shutdown waits on it

	// workers lists the goroutines holding a slot, so that the keeper can
	// find the tasks that run now (see running) without walking every task.
	workers *worker

	// idle lists the workers without a slot, newest first (linked by next);
	// ticks counts the retire timer's runs, which is armed while idle is
	// not empty, every tick (idleTick unless a test sets it).
	idle    *worker
	ticks   uint64
	tick    time.Duration
	retirer *time.Timer
	armed   bool
}

// idleTick is how often idle workers are looked at: one idle through a
// whole tick ends.
const idleTick = time.Second

// worker is one goroutine holding a slot, or idle and waiting for one.
type worker struct {
	current    atomic.Pointer[task] // the task whose attempt it runs, or nil
	prev, next *worker              // guarded by scheduler.mu
	wake       chan *task           // an idle worker's next task; nil ends it
	parked     uint64               // scheduler.ticks when it went idle; guarded by scheduler.mu
}

func newWorker() *worker { return &worker{wake: make(chan *task, 1)} }

// give hands t to w, a worker listed for a slot just taken for t (see
// scheduler.workerLocked): an idle one is woken with t, and nil returned;
// a new one is returned, for the caller to start on t.
func (w *worker) give(idle bool, t *task) *worker {
	if idle {
		w.wake <- t // never blocks: an idle worker's channel is empty, and only this sends
		return nil
	}
	return w
}

// spins is how many times an idle worker yields and looks for a task before
// it blocks: a task handed over meanwhile lands in the channel's buffer and
// costs no wake-up of a parked goroutine. BenchmarkSubmitWait at
// max_concurrent 100 is about 5% faster with 16 than with none (4 and 64
// do no better); a worker that finds nothing spends a few microseconds.
const spins = 16

// await returns an idle worker's next task, or nil when it is to end.
func (w *worker) await() *task {
	for range spins {
		runtime.Gosched()
		select {
		case t := <-w.wake:
			return t
		default:
		}
	}
	return <-w.wake
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
		return s.handLocked(t), true
	}
	if t.priority != 0 || s.tails != nil {
		s.insertByPriority(t)
		return nil, true
	}
	s.insertAfter(t, s.tail)
	return nil, true
}

// handLocked gives t a slot that was just taken for it: to an idle worker,
// woken with t (nil is returned), or to a new listed worker that the
// caller must start on t. s.mu is held.
func (s *scheduler) handLocked(t *task) *worker {
	w, idle := s.workerLocked()
	return w.give(idle, t)
}

// workerLocked lists a worker for a slot just taken: an idle one (idle
// true), whose wake channel is empty and will be sent its task, or a new
// one that the WaitGroup counts and the caller must start. s.mu is held.
func (s *scheduler) workerLocked() (w *worker, idle bool) {
	if w := s.idle; w != nil {
		s.idle, w.next = w.next, nil
		s.joinLocked(w)
		return w, true
	}
	s.wg.Add(1)
	w = newWorker()
	s.joinLocked(w)
	return w, false
}

// reserve takes a free slot, and the worker for it (see workerLocked), for
// a task not saved yet, so that the task can be saved running (see
// TaskManager.admit); w is nil, and nothing is taken, when no slot is free
// or the scheduler is closed. The task then goes to w whatever happens:
// as the task to run, or, not saved, as a task that is no longer queued,
// so that w hands the slot on as after any task (see TaskManager.work).
func (s *scheduler) reserve() (w *worker, idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.busy >= s.limit {
		return nil, false
	}
	s.busy++
	return s.workerLocked()
}

// insertAfter links t into the queue after prev (at the head when prev is
// nil); s.mu is held.
func (s *scheduler) insertAfter(t, prev *task) {
	t.queued, t.prev = true, prev
	if prev == nil {
		t.next, s.head = s.head, t
	} else {
		t.next, prev.next = prev.next, t
	}
	if t.next == nil {
		s.tail = t
	} else {
		t.next.prev = t
	}
}

// insertByPriority queues t after every task of its priority or higher
// (WithPriority), so that the queue runs higher priorities first and each
// priority in submit order. The queue keeps the last task of each
// priority it holds (tails), made when the first task with a priority
// other than 0 is queued: until then every task has priority 0 and goes at
// the tail. s.mu is held.
func (s *scheduler) insertByPriority(t *task) {
	if s.tails == nil {
		s.tails = new([MaxPriority - MinPriority + 1]*task)
		s.tails[-MinPriority] = s.tail // every queued task has priority 0
	}
	p := int(t.priority) - MinPriority
	var prev *task
	for q := p; q < len(s.tails); q++ { // the lowest priority present at or above t's
		if s.tails[q] != nil {
			prev = s.tails[q]
			break
		}
	}
	s.insertAfter(t, prev)
	s.tails[p] = t
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
	if s.tails != nil {
		if p := int(t.priority) - MinPriority; s.tails[p] == t {
			s.tails[p] = nil
			if t.prev != nil && t.prev.priority == t.priority {
				s.tails[p] = t.prev
			}
		}
	}
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
// closed). Then, if park is true and the scheduler is open, w is idle:
// idle is true, and the caller waits on w.wake for its next task.
func (s *scheduler) next(w *worker, park bool) (t *task, idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.head; t != nil && !s.closed {
		s.unlink(t)
		return t, false
	}
	s.busy--
	s.leaveLocked(w)
	if !park || s.closed {
		return nil, false
	}
	w.next, w.parked, s.idle = s.idle, s.ticks, w
	if !s.armed {
		s.armed = true
		if s.tick == 0 {
			s.tick = idleTick
		}
		if s.retirer == nil {
			s.retirer = time.AfterFunc(s.tick, s.retire)
		} else {
			s.retirer.Reset(s.tick)
		}
	}
	return nil, true
}

// retire ends the idle workers that went idle before the previous tick, so
// have been idle a whole tick at least. The list is newest first, so they
// are its tail.
func (s *scheduler) retire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed {
		return // closed meanwhile
	}
	s.ticks++
	tail := &s.idle
	for *tail != nil && (*tail).parked+1 >= s.ticks {
		tail = &(*tail).next
	}
	endIdle(*tail)
	*tail = nil
	if s.idle == nil {
		s.armed = false
		return
	}
	s.retirer.Reset(s.tick)
}

// endIdle ends the idle workers listed from w on.
func endIdle(w *worker) {
	for w != nil {
		next := w.next
		w.next = nil
		w.wake <- nil
		w = next
	}
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

// busyNow returns how many slots are taken.
func (s *scheduler) busyNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy
}

// close stops new starts, and ends the idle workers: queued tasks stay
// queued for Shutdown to cancel. It returns how many slots were taken.
func (s *scheduler) close() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.armed {
		s.armed = false
		s.retirer.Stop()
	}
	endIdle(s.idle)
	s.idle = nil
	return s.busy
}
