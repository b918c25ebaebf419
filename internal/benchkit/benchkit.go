// Package benchkit holds the workloads that the benchmarks and the
// apcore-bench command measure side by side: the physical lower bound for
// tracked background tasks in Go, and the same work through a TaskManager.
package benchkit

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/apcore-go/apcore"
	"github.com/google/uuid"
	"golang.org/x/sync/semaphore"
)

// NoopModule is the module every workload runs: it returns at once.
const NoopModule = "bench.noop"

// TypedModule is the typed no-op module: it takes {"n": int} through
// apcore.Typed and returns n.
const TypedModule = "bench.typed"

// TypedIn is TypedModule's input.
type TypedIn struct {
	N int `json:"n"`
}

// Registry returns a registry holding the no-op module and the typed one.
func Registry() *apcore.Registry {
	r := apcore.NewRegistry()
	if err := r.Register(NoopModule, apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		panic(err)
	}
	if err := r.Register(TypedModule, apcore.Typed(func(_ context.Context, in TypedIn) (int, error) {
		return in.N, nil
	})); err != nil {
		panic(err)
	}
	return r
}

// lbRecord is the lower bound's whole record of a task: a status word and
// a channel closed when the task is done, so that each task can be waited
// for on its own.
type lbRecord struct {
	status atomic.Int32
	done   chan struct{}
}

// LowerBound runs the manager's workload the cheapest tracked way Go allows:
// for each of n no-op tasks a UUID, a sync.Map record and a goroutine,
// gated by a weighted semaphore of c; then it waits for each task by id, as
// the manager's workload does with Wait. It is the floor the manager is
// measured against.
func LowerBound(n, c int) {
	ctx := context.Background()
	sem := semaphore.NewWeighted(int64(c))
	var records sync.Map
	ids := make([]string, n)
	for i := range ids {
		rec := &lbRecord{done: make(chan struct{})}
		ids[i] = uuid.NewString()
		records.Store(ids[i], rec)
		go func() {
			if err := sem.Acquire(ctx, 1); err != nil {
				panic(err)
			}
			rec.status.Store(1)
			rec.status.Store(2)
			sem.Release(1)
			close(rec.done)
		}()
	}
	for _, id := range ids {
		v, _ := records.Load(id)
		<-v.(*lbRecord).done
	}
}

// LowerBoundWaitGroup is the cheaper floor the restructure issue names: a
// UUID, a sync.Map record (a status word) and a goroutine per task, gated by
// a weighted semaphore of c, and one WaitGroup for all n tasks. It cannot
// wait for one task by id, which is why LowerBound keeps a channel each.
func LowerBoundWaitGroup(n, c int) {
	ctx := context.Background()
	sem := semaphore.NewWeighted(int64(c))
	var records sync.Map
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		st := new(atomic.Int32)
		records.Store(uuid.NewString(), st)
		go func() {
			defer wg.Done()
			if err := sem.Acquire(ctx, 1); err != nil {
				panic(err)
			}
			st.Store(1)
			st.Store(2)
			sem.Release(1)
		}()
	}
	wg.Wait()
}

// NewManager returns a manager for the workload: no-op module, max_concurrent
// c, max_tasks n+10.
func NewManager(n, c int) *apcore.TaskManager {
	m, err := apcore.NewTaskManager(Registry(), apcore.WithMaxConcurrent(c), apcore.WithMaxTasks(n+10))
	if err != nil {
		panic(err)
	}
	return m
}

// Manager submits n no-op tasks to a fresh manager with max_concurrent c,
// then Waits for each, and shuts the manager down.
func Manager(n, c int) {
	m := NewManager(n, c)
	submitAndWait(m, n)
	if err := m.Shutdown(context.Background()); err != nil {
		panic(err)
	}
}

// ManagerTyped is Manager with the typed module, each task with inputs
// {"n": i}.
func ManagerTyped(n, c int) {
	m := NewManager(n, c)
	submitAndWaitTo(m, n, TypedModule)
	if err := m.Shutdown(context.Background()); err != nil {
		panic(err)
	}
}

// submitAndWait submits n no-op tasks to m, then waits for each to complete.
func submitAndWait(m *apcore.TaskManager, n int) { submitAndWaitTo(m, n, NoopModule) }

// submitAndWaitTo submits n tasks of module to m ({"n": i} for the typed
// one), then waits for each to complete.
func submitAndWaitTo(m *apcore.TaskManager, n int, module string) {
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		var inputs map[string]any
		if module == TypedModule {
			inputs = map[string]any{"n": i}
		}
		id, err := m.Submit(ctx, module, inputs)
		if err != nil {
			panic(err)
		}
		ids[i] = id
	}
	for _, id := range ids {
		info, err := m.Wait(ctx, id)
		if err != nil || info.Status != apcore.StatusCompleted {
			panic(fmt.Sprintf("task %s: %v %v", id, info.Status, err))
		}
	}
}

// heapAndStacks is the memory the runtime holds for live objects and
// goroutine stacks, after a full collection.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// BytesPerPendingTask submits n tasks to a manager that never starts one
// (max_concurrent 0) and returns the memory each pending task costs.
func BytesPerPendingTask(n int) float64 {
	ctx := context.Background()
	before := heapAndStacks()
	m, err := apcore.NewTaskManager(Registry(), apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(n+10))
	if err != nil {
		panic(err)
	}
	for i := 0; i < n; i++ {
		if _, err := m.Submit(ctx, NoopModule, nil); err != nil {
			panic(err)
		}
	}
	after := heapAndStacks()
	if err := m.Shutdown(ctx); err != nil {
		panic(err)
	}
	runtime.KeepAlive(m)
	return float64(after-before) / float64(n)
}

// BytesPerTerminalRecord runs n no-op tasks to completion and returns the
// memory each retained (completed) record costs.
func BytesPerTerminalRecord(n int) float64 {
	ctx := context.Background()
	before := heapAndStacks()
	m := NewManager(n, 100)
	submitAndWait(m, n)
	after := heapAndStacks()
	if err := m.Shutdown(ctx); err != nil {
		panic(err)
	}
	runtime.KeepAlive(m)
	return float64(after-before) / float64(n)
}
