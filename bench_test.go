package apcore_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/internal/benchkit"
)

// Run with: go test -run '^$' -bench . -benchmem
//
// BenchmarkSubmitWait and BenchmarkLowerBound run the same workload (n no-op
// tasks, max_concurrent 100) so their ns/op compare directly; the
// apcore-bench command prints the ratio and the memory per task.

var sizes = []int{10_000, 100_000}

func BenchmarkLowerBound(b *testing.B) { perTask(b, benchkit.LowerBound) }

func BenchmarkSubmitWait(b *testing.B) { perTask(b, benchkit.Manager) }

// perTask runs a workload of n tasks (max_concurrent 100) for each size and
// reports its cost per task.
func perTask(b *testing.B, workload func(n, c int)) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				workload(n, 100)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
		})
	}
}

// filled returns a manager holding n records (pending, never started) and
// their ids.
func filled(b *testing.B, n int) (*apcore.TaskManager, []string) {
	b.Helper()
	ctx := context.Background()
	m, err := apcore.NewTaskManager(benchkit.Registry(), apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(math.MaxInt))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Shutdown(ctx) })
	ids := make([]string, n)
	for i := range ids {
		if ids[i], err = m.Submit(ctx, benchkit.NoopModule, nil); err != nil {
			b.Fatal(err)
		}
	}
	return m, ids
}

// withRecords runs bench against managers holding 1,000 and 100,000
// records, to show its cost does not grow with the store.
func withRecords(b *testing.B, bench func(b *testing.B, m *apcore.TaskManager, ids []string)) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			m, ids := filled(b, n)
			b.ReportAllocs()
			bench(b, m, ids)
		})
	}
}

func BenchmarkStatus(b *testing.B) {
	withRecords(b, func(b *testing.B, m *apcore.TaskManager, ids []string) {
		ctx := context.Background()
		i := 0
		for b.Loop() {
			if _, err := m.Status(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkList(b *testing.B) {
	withRecords(b, func(b *testing.B, m *apcore.TaskManager, ids []string) {
		ctx := context.Background()
		for b.Loop() {
			all, err := m.List(ctx, "")
			if err != nil || len(all) != len(ids) {
				b.Fatal(len(all), err)
			}
		}
	})
}

// BenchmarkCancel cancels pending tasks. It submits them 10,000 at a time
// with the timer stopped: stopping it for each task would cost more than
// the cancel (StopTimer reads the memory statistics).
func BenchmarkCancel(b *testing.B) {
	withRecords(b, func(b *testing.B, m *apcore.TaskManager, _ []string) {
		ctx := context.Background()
		var pending []string
		for b.Loop() {
			if len(pending) == 0 {
				b.StopTimer()
				for range 10_000 {
					id, err := m.Submit(ctx, benchkit.NoopModule, nil)
					if err != nil {
						b.Fatal(err)
					}
					pending = append(pending, id)
				}
				b.StartTimer()
			}
			id := pending[len(pending)-1]
			pending = pending[:len(pending)-1]
			if ok, err := m.Cancel(ctx, id); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

func BenchmarkSubmit(b *testing.B) {
	withRecords(b, func(b *testing.B, m *apcore.TaskManager, _ []string) {
		ctx := context.Background()
		for b.Loop() {
			if _, err := m.Submit(ctx, benchkit.NoopModule, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkShutdown: Shutdown of a manager holding 100,000 pending tasks.
// Filling each manager is untimed setup of about a fifth of a second per
// op, so this benchmark takes about ten seconds of wall time for one second
// of measured Shutdowns.
func BenchmarkShutdown(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		m, err := apcore.NewTaskManager(benchkit.Registry(), apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(n))
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if _, err := m.Submit(ctx, benchkit.NoopModule, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := m.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
