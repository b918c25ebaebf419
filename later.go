package apcore

import (
	"container/heap"
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Tasks due later, and tasks inserted in a caller's transaction.
//
// A task of this manager's own that is due later (WithRunAt, not
// resumable) waits on a runtime timer of its own, as a retry's backoff
// does (scheduleAt). A resumable one waits in the store, held by no one,
// due at its RunAt; the claimer takes it when it is due. So that an idle
// manager need not wait for its next poll, the manager that accepted it
// wakes its claimer at the due time: wakeups keeps those times in a heap
// under one timer, armed for the earliest, so a million waiting tasks cost
// one timer and no work until one is due. Another replica, or this one
// after a restart, finds such a task at its next poll.

// wakeups is the heap of times at which the claimer is to claim.
type wakeups struct {
	mu    sync.Mutex
	times wakeHeap
	timer *time.Timer
	next  int64 // when the timer fires (Unix ns), 0 when it is not armed
	stop  bool  // the manager closed: arm nothing more
}

// wakeAt asks for a claim at at.
func (m *TaskManager) wakeAt(at time.Time) {
	w := &m.wakeups
	ns := at.UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop {
		return
	}
	heap.Push(&w.times, ns)
	if w.next == 0 || ns < w.next {
		w.arm(ns, m)
	}
}

// arm sets the timer to fire at ns; w.mu is held.
func (w *wakeups) arm(ns int64, m *TaskManager) {
	w.next = ns
	d := time.Until(time.Unix(0, ns))
	if w.timer == nil {
		w.timer = time.AfterFunc(d, func() { m.wakeDue() })
		return
	}
	w.timer.Reset(d)
}

// wakeDue runs when the earliest wake time has come: it drops the times
// that are due, re-arms the timer for the next, and wakes the claimer.
func (m *TaskManager) wakeDue() {
	w := &m.wakeups
	w.mu.Lock()
	now := time.Now().UnixNano()
	for len(w.times) > 0 && w.times[0] <= now {
		heap.Pop(&w.times)
	}
	w.next = 0
	if len(w.times) > 0 && !w.stop {
		w.arm(w.times[0], m)
	}
	w.mu.Unlock()
	m.wakeClaimer()
}

// stopWakeups stops the timer, for Shutdown and Drain.
func (m *TaskManager) stopWakeups() {
	w := &m.wakeups
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stop = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.times, w.next = nil, 0
}

// wakeHeap is a min-heap of Unix nanoseconds.
type wakeHeap []int64

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h wakeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *wakeHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *wakeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// submitTx is Submit WithTx: the task is resumable and inserted, held by
// no one, in the caller's transaction, by the store's TxInserter. The
// manager keeps no handle: the task exists only once the transaction
// commits, and a claimer (this manager's, woken at once and at its due
// time, or another's) runs it then.
func (m *TaskManager) submitTx(ctx context.Context, moduleID string, inputs map[string]any, sc *submitConfig) (string, error) {
	txi, ok := m.store.(TxInserter)
	if !ok || m.shared == nil {
		return "", invalidf("Submit: WithTx needs a store that can insert in a *sql.Tx (apcore.TxInserter, such as sqlstore); %s cannot", m.store.Name())
	}
	raw, err := json.Marshal(inputs)
	if err != nil {
		return "", &Error{Code: CodeInvalidInput, Message: "Submit: the inputs of a task submitted WithTx must encode as JSON (it is resumable)", Cause: err}
	}
	if m.closed.Load() {
		return "", errClosed()
	}
	st := resumableTask(moduleID, raw, sc)
	if m.carrier != nil {
		st.Trace = m.carrier.Inject(ctx)
	}
	tx := sc.tx // the closure takes tx, not sc: sc must not leave Submit's stack
	ok, err = callFor(m, ctx, "Submit: save the new task in the transaction", func(ctx context.Context) (bool, error) {
		return txi.InsertTx(ctx, tx, st, m.maxTasks)
	})
	if err != nil || !ok {
		err = m.refused(err)
		return duplicateOf(err), err
	}
	// The observers hear of it now, though it exists only once the
	// transaction commits: the manager cannot know when that is.
	m.notify(&st.Info)
	m.mayClaim.Store(true)
	if st.NotBefore.After(st.Info.SubmittedAt) {
		m.wakeAt(st.NotBefore)
	}
	return st.Info.TaskID, nil
}

// Notifier is an optional SharedStore capability: the store tells a
// manager when claimable work may have appeared that the manager did not
// insert itself (a task committed in another process's transaction, say),
// so that an idle manager claims at once rather than at its next poll.
// sqlstore implements it on PostgreSQL with LISTEN/NOTIFY.
type Notifier interface {
	// Notify calls wake, from a goroutine of the store's, each time new
	// claimable work may exist, until ctx ends; then the goroutine ends.
	// It returns at once. A store that loses its channel may stay silent:
	// the manager's poll remains.
	Notify(ctx context.Context, wake func())
}
