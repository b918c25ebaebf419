package apcore

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// BenchmarkSchedulerQueue is what the intrusive queue buys over
// container/list: each op queues 1,024 tasks, cancels every third while it
// waits (an O(1) unlink in both), and hands the rest their slot. The list
// allocates an element per queued task; the intrusive queue allocates
// nothing.
func BenchmarkSchedulerQueue(b *testing.B) {
	tasks := make([]*task, 1024)
	for i := range tasks {
		tasks[i] = &task{}
	}
	b.Run("intrusive", func(b *testing.B) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		for b.Loop() {
			s := scheduler{wg: &wg}
			for _, t := range tasks {
				s.enqueue(t)
			}
			for i := 0; i < len(tasks); i += 3 {
				s.remove(tasks[i])
			}
			w := &worker{}
			s.join(w)
			for t, _ := s.next(w, false); t != nil; t, _ = s.next(w, false) {
			}
		}
	})
	b.Run("container/list", func(b *testing.B) {
		b.ReportAllocs()
		var mu sync.Mutex
		elems := make([]*list.Element, len(tasks))
		for b.Loop() {
			q := list.New()
			for i, t := range tasks {
				mu.Lock()
				elems[i] = q.PushBack(t)
				mu.Unlock()
			}
			for i := 0; i < len(tasks); i += 3 {
				mu.Lock()
				q.Remove(elems[i])
				mu.Unlock()
			}
			for {
				mu.Lock()
				front := q.Front()
				if front != nil {
					q.Remove(front)
				}
				mu.Unlock()
				if front == nil {
					break
				}
			}
		}
	})
}

// A cancelled queued task never starts, and the queue keeps its order.
func TestSchedulerQueueOrder(t *testing.T) {
	var wg sync.WaitGroup
	s := scheduler{limit: 1, wg: &wg}
	tasks := make([]*task, 6)
	for i := range tasks {
		tasks[i] = &task{id: string(rune('a' + i))}
	}
	w0, ok := s.enqueue(tasks[0])
	if w0 == nil || !ok {
		t.Fatal("the first task takes the free slot")
	}
	for _, tk := range tasks[1:] {
		if w, ok := s.enqueue(tk); w != nil || !ok {
			t.Fatalf("task %s: with the slot taken it must queue", tk.id)
		}
	}
	s.remove(tasks[2])
	s.remove(tasks[5])
	var got string
	w := w0
	for tk, _ := s.next(w, false); tk != nil; tk, _ = s.next(w, false) {
		got += tk.id
	}
	if got != "bde" {
		t.Fatalf("queue handed out %q, want %q", got, "bde")
	}
	if s.busy != 0 || s.workers != nil {
		t.Fatalf("the slot was not given back: busy = %d, workers listed: %v", s.busy, s.workers != nil)
	}
	wg.Done() // the first enqueue counted a worker
	s.close()
	if _, ok := s.enqueue(tasks[1]); ok {
		t.Fatal("a closed scheduler must refuse")
	}
}

// A worker whose slot is given back waits idle, and the next task that
// takes a slot goes to it instead of to a new goroutine; one idle through a
// whole tick ends, and so does every idle one at close.
func TestSchedulerIdleWorkers(t *testing.T) {
	var wg sync.WaitGroup
	s := scheduler{limit: 2, wg: &wg, tick: time.Hour} // retire runs only when the test calls it
	first := &task{id: "a"}
	w, ok := s.enqueue(first)
	require.True(t, ok)
	require.NotNil(t, w, "no idle worker yet: the first task needs a goroutine")

	next, idle := s.next(w, true)
	require.Nil(t, next)
	require.True(t, idle, "with an empty queue, the worker goes idle")
	assert.Zero(t, s.busy, "an idle worker holds no slot")
	assert.Nil(t, s.workers, "an idle worker runs nothing, so is not listed")

	second := &task{id: "b"}
	again, ok := s.enqueue(second)
	require.True(t, ok)
	assert.Nil(t, again, "the idle worker takes the task: no new goroutine")
	assert.Same(t, second, <-w.wake)
	assert.Equal(t, 1, s.busy)
	assert.Same(t, w, s.workers)

	_, idle = s.next(w, true)
	require.True(t, idle)
	s.retire() // w went idle during this tick: it stays
	require.Same(t, w, s.idle)
	s.retire() // idle a whole tick: it ends
	assert.Nil(t, s.idle)
	assert.Nil(t, <-w.wake, "a retired worker is woken with nil, to end")
	assert.False(t, s.armed, "with no idle worker, the timer is not re-armed")

	w2, _ := s.enqueue(&task{id: "c"}) // no idle worker left: a new one
	require.NotNil(t, w2)
	_, idle = s.next(w2, true)
	require.True(t, idle)
	s.close()
	assert.Nil(t, <-w2.wake, "close ends the idle workers")
	_, idle = s.next(w, true)
	assert.False(t, idle, "after close, no worker goes idle")
}

// A goroutine that must end (its module called runtime.Goexit) never goes
// idle.
func TestSchedulerNextWithoutParking(t *testing.T) {
	var wg sync.WaitGroup
	s := scheduler{limit: 1, wg: &wg, tick: time.Hour}
	w, _ := s.enqueue(&task{id: "a"})
	next, idle := s.next(w, false)
	assert.Nil(t, next)
	assert.False(t, idle)
	assert.Nil(t, s.idle)
	assert.Zero(t, s.busy)
}

func TestMaxConcurrentBoundsRunningModules(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(3))
	var ids []string
	for i := 0; i < 12; i++ {
		id, err := m.Submit(ctx, "slow.job", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for i := 0; i < 3; i++ {
		g.waitStart(t)
	}
	running, err := m.List(ctx, StatusRunning)
	require.NoError(t, err)
	assert.Len(t, running, 3)
	pending, err := m.List(ctx, StatusPending)
	require.NoError(t, err)
	assert.Len(t, pending, 9)
	g.open()
	for _, id := range ids {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
	}
	assert.EqualValues(t, 3, g.peak.Load())
	assert.EqualValues(t, 12, g.calls.Load())
}

func TestStartsAreFIFO(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(1))
	var ids []string
	for i := 0; i < 20; i++ {
		id, err := m.Submit(ctx, "slow.job", map[string]any{"name": fmt.Sprint(i)})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	g.open()
	for i := 0; i < 20; i++ {
		assert.Equal(t, fmt.Sprint(i), g.waitStart(t))
	}
	for _, id := range ids {
		_, err := m.Wait(ctx, id)
		require.NoError(t, err)
	}
}

func TestMaxConcurrentZeroKeepsTasksPending(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m, err := NewTaskManager(registry(t, map[string]Module{"slow.job": g}), WithMaxConcurrent(0))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
	require.NoError(t, m.Shutdown(ctx))
	info, err = m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.True(t, info.StartedAt.IsZero())
	assert.Zero(t, g.calls.Load(), "with no slot, nothing ever starts")
}

func TestCancelledPendingTaskNeverRuns(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	var laterCalls atomic.Int32
	later := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		laterCalls.Add(1)
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"slow.job": g, "later.job": later}), WithMaxConcurrent(1))
	first, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	queued, err := m.Submit(ctx, "later.job", nil)
	require.NoError(t, err)
	ok, err := m.Cancel(ctx, queued)
	require.NoError(t, err)
	require.True(t, ok)
	info, err := m.Status(ctx, queued)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.False(t, info.CompletedAt.IsZero())

	after, err := m.Submit(ctx, "later.job", nil) // proves the queue moved on
	require.NoError(t, err)
	g.open()
	_, err = m.Wait(ctx, first)
	require.NoError(t, err)
	_, err = m.Wait(ctx, after)
	require.NoError(t, err)
	assert.EqualValues(t, 1, laterCalls.Load(), "only the task that was not cancelled ran")
}

// ---- 6. cancel ------------------------------------------------------------------

func TestCancelledRunningTaskHoldsItsSlotUntilItReturns(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(false) // ignores ctx
	m := newManager(t, registry(t, map[string]Module{"slow.job": g, "a.b": constModule(1)}), WithMaxConcurrent(1))
	id, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	next, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err := m.Status(ctx, next)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status, "the cancelled module still holds the only slot")
	g.open()
	info, err = m.Wait(ctx, next)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

func TestBackoffHoldsNoSlot(t *testing.T) {
	ctx := testCtx(t)
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"always.fails": failModule("boom", nil), "a.b": constModule(1)}),
		WithMaxConcurrent(1), WithObserver(obs.observe))
	flaky, err := m.Submit(ctx, "always.fails", nil, WithRetry(RetryConfig{MaxRetries: 1, RetryDelay: time.Hour}))
	require.NoError(t, err)
	obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == flaky && i.RetryCount == 1 })
	info, err := m.Status(ctx, flaky)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status)
	assert.Equal(t, 1, info.RetryCount)

	other, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err = m.Wait(ctx, other)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "the only slot is free while the other task backs off")
	ok, err := m.Cancel(ctx, flaky)
	require.NoError(t, err)
	assert.True(t, ok)
}
