// Command apcore-bench measures the task manager against the lower bound for
// tracked background tasks in Go, side by side in one process.
//
// The lower bound is the least a tracked task can cost: a UUID, a sync.Map
// record (a status word and a done channel) and a goroutine each, gated by a
// weighted semaphore, then a wait on each task by id. The manager runs the
// same workload: n no-op tasks, max_concurrent c, max_tasks n+10, submit
// all, then Wait for each. The two alternate (lower bound, manager,
// lower bound, ...) and the median of the runs is reported, so that noise
// from other processes hits both alike. The figure that matters is the
// ratio, not the absolute rate.
//
// A second, cheaper floor runs beside them: the same goroutines, semaphore,
// UUIDs and sync.Map records, but one WaitGroup for all tasks instead of a
// wait on each (it cannot wait for one task by id). The restructure issue
// states its bar against that one: at least 0.5x at 100,000 tasks.
//
//	go run ./cmd/apcore-bench            # n in {10k, 100k, 1M}, c in {10, 100}
//	go run ./cmd/apcore-bench -quick     # n in {10k, 100k} only
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/apcore-go/apcore/internal/benchkit"
)

func main() {
	runs := flag.Int("runs", 3, "runs of each workload; the median is reported")
	quick := flag.Bool("quick", false, "skip n = 1,000,000")
	memN := flag.Int("mem-n", 100_000, "tasks for the memory measurements")
	typed := flag.Bool("typed", false, "also run a typed module (apcore.Typed, inputs {\"n\": i}) and report its ratio")
	flag.Parse()

	sizes := []int{10_000, 100_000, 1_000_000}
	if *quick {
		sizes = sizes[:2]
	}
	concurrency := []int{10, 100}
	fmt.Fprintf(os.Stderr, "apcore-bench: %s, GOMAXPROCS=%d, %d runs per cell\n", runtime.Version(), runtime.GOMAXPROCS(0), *runs)

	type cell struct {
		n, c           int
		lower, manager time.Duration // median per run
		lowerWG        time.Duration // median of the one-WaitGroup bound
		typed          time.Duration // median of the typed module's runs (with -typed)
	}
	var cells []cell
	start := time.Now()
	for _, c := range concurrency {
		for _, n := range sizes {
			benchkit.Manager(min(n, 10_000), c) // warm up
			var lb, wg, mg, ty []time.Duration
			for r := 0; r < *runs; r++ {
				lb = append(lb, timed(func() { benchkit.LowerBound(n, c) }))
				mg = append(mg, timed(func() { benchkit.Manager(n, c) }))
				wg = append(wg, timed(func() { benchkit.LowerBoundWaitGroup(n, c) }))
				if *typed {
					ty = append(ty, timed(func() { benchkit.ManagerTyped(n, c) }))
				} else {
					ty = append(ty, 0)
				}
				fmt.Fprintf(os.Stderr, "  [%5.1fs] c=%-3d n=%-9d run %d/%d  lower bound %8.0f tasks/s  one-WaitGroup bound %8.0f tasks/s  manager %8.0f tasks/s\n",
					time.Since(start).Seconds(), c, n, r+1, *runs, rate(n, lb[r]), rate(n, wg[r]), rate(n, mg[r]))
			}
			cells = append(cells, cell{n: n, c: c, lower: median(lb), manager: median(mg), lowerWG: median(wg), typed: median(ty)})
		}
	}

	fmt.Fprintf(os.Stderr, "  measuring memory with %d tasks...\n", *memN)
	pending := benchkit.BytesPerPendingTask(*memN)
	terminal := benchkit.BytesPerTerminalRecord(*memN)

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "tasks\tmax_concurrent\tlower bound tasks/s\tone-WaitGroup bound tasks/s\tmanager tasks/s\tratio\tratio to one-WaitGroup\tmanager ns/task\tgrowth vs 100k\t")
	for _, x := range cells {
		growth := "-"
		for _, base := range cells {
			if base.c == x.c && base.n == 100_000 {
				growth = fmt.Sprintf("%.2fx", perTask(x.n, x.manager)/perTask(base.n, base.manager))
			}
		}
		fmt.Fprintf(w, "%d\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t\n",
			x.n, x.c, rate(x.n, x.lower), rate(x.n, x.lowerWG), rate(x.n, x.manager),
			rate(x.n, x.manager)/rate(x.n, x.lower), rate(x.n, x.manager)/rate(x.n, x.lowerWG),
			perTask(x.n, x.manager), growth)
	}
	_ = w.Flush()
	if *typed {
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "tasks\tmax_concurrent\ttyped module tasks/s\ttyped ns/task\tno-op ns/task\ttyped ratio to one-WaitGroup\t")
		for _, x := range cells {
			fmt.Fprintf(w, "%d\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t\n", x.n, x.c, rate(x.n, x.typed), perTask(x.n, x.typed),
				perTask(x.n, x.manager), rate(x.n, x.typed)/rate(x.n, x.lowerWG))
		}
		_ = w.Flush()
	}
	fmt.Printf("\nmemory (heap + stacks after GC, %d tasks): %.0f bytes per pending task, %.0f bytes per terminal record\n",
		*memN, pending, terminal)
	fmt.Fprintf(os.Stderr, "done in %.1fs\n", time.Since(start).Seconds())
}

func timed(f func()) time.Duration {
	runtime.GC()
	t := time.Now()
	f()
	return time.Since(t)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func perTask(n int, d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) }
