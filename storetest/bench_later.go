package storetest

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// BenchmarkUniqueSubmit measures Submit with and without WithUniqueKey over
// a store, side by side: the sub-benchmarks "plain" and "unique" each
// submit b.N resumable tasks (a fresh key each) to a manager with no free
// slot, so only the inserts are measured. Their ns/op ratio is the unique
// key's cost (the bar: one more indexed lookup). newStore returns a
// fresh, empty store.
func BenchmarkUniqueSubmit(b *testing.B, newStore func() (apcore.TaskStore, error)) {
	for _, unique := range []bool{false, true} {
		name := "plain"
		if unique {
			name = "unique"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			m, stop := benchManager(b, newStore, 1)
			defer stop()
			block(b, m) // the one slot stays taken: the tasks wait in the store
			n := 0
			for b.Loop() {
				opts := []apcore.SubmitOption{apcore.WithResumable()}
				if unique {
					opts = append(opts, apcore.WithUniqueKey(fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), n)))
				}
				n++
				if _, err := m.Submit(ctx, "bench.noop", map[string]any{"n": n}, opts...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScheduledIdle measures what tasks due later cost while they
// wait and how late they start: it submits waiting resumable tasks due in
// an hour, then measures the process's CPU time over two idle seconds, in
// which the manager's recovery (its lease is of a second) runs four times
// (cpu-ms/s; compare with waiting=0), then submits 200 tasks due over the next
// second and reports how long after its RunAt each started (p50-ms,
// p99-ms).
func BenchmarkScheduledIdle(b *testing.B, newStore func() (apcore.TaskStore, error), waiting int) {
	ctx := context.Background()
	for b.Loop() {
		// A lease of a second: recovery runs every half second, four
		// times in the measured window.
		m, stop := benchManager(b, newStore, 16, apcore.WithLeaseTTL(time.Second))
		later := time.Now().Add(time.Hour)
		for i := range waiting {
			if _, err := m.Submit(ctx, "bench.noop", map[string]any{"n": i}, apcore.WithResumable(), apcore.WithRunAt(later)); err != nil {
				b.Fatal(err)
			}
		}
		// The submits' garbage, and the pages the runtime's scavenger
		// would hand back to the system meanwhile, are not the idle
		// manager's work.
		debug.FreeOSMemory()
		before := cpuTime()
		time.Sleep(2 * time.Second) // the idle seconds being measured
		b.ReportMetric(float64((cpuTime()-before).Microseconds())/2000, "cpu-ms/s")

		var mu sync.Mutex
		var lags []time.Duration
		due := time.Now().Add(200 * time.Millisecond)
		ids := make([]string, 200)
		for i := range ids {
			at := due.Add(time.Duration(i) * 5 * time.Millisecond)
			id, err := m.Submit(ctx, "bench.stamp", map[string]any{"at": at.UnixNano()}, apcore.WithResumable(), apcore.WithRunAt(at))
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = id
		}
		for _, id := range ids {
			info, err := m.Wait(ctx, id)
			if err != nil || info.Status != apcore.StatusCompleted {
				b.Fatalf("task %s: %s %v", id, info.Status, err)
			}
			lag := info.StartedAt.Sub(*info.RunAt)
			mu.Lock()
			lags = append(lags, lag)
			mu.Unlock()
		}
		stop()
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// benchManager is a manager over a fresh store with the benchmarks'
// modules, and its stop.
func benchManager(b *testing.B, newStore func() (apcore.TaskStore, error), slots int, opts ...apcore.Option) (*apcore.TaskManager, func()) {
	b.Helper()
	store, err := newStore()
	if err != nil {
		b.Fatal(err)
	}
	reg := apcore.NewRegistry()
	release := make(chan struct{})
	for id, fn := range map[string]apcore.ModuleFunc{
		"bench.noop":  func(context.Context, map[string]any) (any, error) { return nil, nil },
		"bench.stamp": func(context.Context, map[string]any) (any, error) { return nil, nil },
		"bench.block": func(ctx context.Context, _ map[string]any) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		},
	} {
		if err := reg.Register(id, fn); err != nil {
			b.Fatal(err)
		}
	}
	opts = append([]apcore.Option{apcore.WithStore(store), apcore.WithMaxConcurrent(slots), apcore.WithMaxTasks(10_000_000)}, opts...)
	m, err := apcore.NewTaskManager(reg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return m, func() {
		close(release)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			b.Error(err)
		}
	}
}

// block takes m's one slot with a task that runs until the benchmark ends.
func block(b *testing.B, m *apcore.TaskManager) {
	b.Helper()
	ctx := context.Background()
	id, err := m.Submit(ctx, "bench.block", nil)
	if err != nil {
		b.Fatal(err)
	}
	for {
		info, err := m.Status(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if info.Status == apcore.StatusRunning {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
