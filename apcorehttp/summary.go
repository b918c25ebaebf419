package apcorehttp

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// What GET /api/summary costs. Nothing here lists every record:
//
//   - the counts per state come from the store's Counter capability, one
//     Count per state (the memory store keeps counters; the SQL and Redis
//     stores count with one query each), shared by every request for a
//     second (cacheTTL);
//   - the chart is read from the newest records, newest first, a page at a
//     time, until the records are older than the chart's window by another
//     window, or chartBudget records have been read; shared for two
//     seconds (chartTTL);
//   - a refresh that took long is kept longer: for busyFactor times what it
//     took, when that is more than the above. A Count that grows with the
//     table (PostgreSQL's count of the completed records, say) thus takes
//     at most a twentieth of the time of the one connection it uses.
//   - the module ids are those of the records the chart read, and of the
//     pages GET /api/tasks served, kept since the handler started (at most
//     maxModules of them).
//
// A store without Counter (none of this repository's) is counted from one
// List of every record, at most every countsFallbackTTL.

const (
	// chartBudget is the most records one chart refresh reads.
	chartBudget = 5000
	// maxModules is the most module ids the handler remembers.
	maxModules = 256
	// countsFallbackTTL is how long counts made by listing every record
	// (a store without Counter) are kept.
	countsFallbackTTL = 10 * time.Second
	// busyFactor is how many times as long as a refresh took its result
	// is kept at least.
	busyFactor = 20
)

// states are the five states, in the order the page shows them.
var states = [...]apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}

// summaryCache keeps the counts and the chart for a short time, shared by
// every request.
type summaryCache struct {
	mgr      *apcore.TaskManager
	ttl      time.Duration // the counts'
	chartTTL time.Duration
	window   time.Duration // the chart's span
	bucket   time.Duration // the chart's resolution
	budget   int           // records one chart refresh reads at most

	// countMu is held while counting, chartMu while reading the chart:
	// one refresh of each at a time, and a request for the counts never
	// waits for the chart.
	countMu   sync.Mutex
	counts    map[string]int // never changed once made: replaced
	countsAt  time.Time
	countsFor time.Duration // how long the counts are kept

	chartMu  sync.Mutex
	chart    chart
	chartAt  time.Time
	chartFor time.Duration // how long the chart is kept

	modMu   sync.Mutex
	modules map[string]struct{}
}

// summary is GET /api/summary's answer.
type summary struct {
	GeneratedAt float64        `json:"generated_at"` // Unix seconds
	Counts      map[string]int `json:"counts"`       // per state, and "total"
	Modules     []string       `json:"modules"`      // sorted
	Chart       chart          `json:"chart"`
}

// chart is the series of the last minutes, oldest bucket first; the last
// bucket ends at End.
type chart struct {
	End           float64   `json:"end"`            // Unix seconds
	BucketSeconds float64   `json:"bucket_seconds"` // each bucket's length
	Finished      []int     `json:"finished"`       // tasks that ended in the bucket
	WaitAvg       []float64 `json:"wait_avg"`       // mean queue wait (s) of the tasks that started in it, from submission or from run_at when later
	WaitMax       []float64 `json:"wait_max"`       // longest queue wait (s)
	// Records is how many of the newest records the series were made from.
	Records int `json:"records"`
	// Partial is true when the read stopped at its budget before reaching
	// records older than the window: the series then count only the
	// tasks submitted since From.
	Partial bool    `json:"partial"`
	From    float64 `json:"from,omitempty"` // Unix seconds; set when Partial
}

func newSummaryCache(mgr *apcore.TaskManager, cfg config) *summaryCache {
	return &summaryCache{
		mgr: mgr, ttl: cfg.cacheTTL, chartTTL: cfg.chartTTL,
		window: cfg.chartWindow, bucket: cfg.chartBucket, budget: chartBudget,
		modules: map[string]struct{}{},
	}
}

// get returns the summary: counts at most ttl old, the chart at most
// chartTTL old.
func (c *summaryCache) get(ctx context.Context) (summary, error) {
	counts, err := c.getCounts(ctx)
	if err != nil {
		return summary{}, err
	}
	ch, err := c.getChart(ctx)
	if err != nil {
		return summary{}, err
	}
	return summary{GeneratedAt: unixSeconds(time.Now()), Counts: counts, Modules: c.moduleList(), Chart: ch}, nil
}

// getCounts returns the records per state and their "total", at most ttl
// old. The map is shared: do not change it.
func (c *summaryCache) getCounts(ctx context.Context) (map[string]int, error) {
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if c.counts != nil && time.Since(c.countsAt) < c.countsFor {
		return c.counts, nil
	}
	ttl := c.ttl
	counter, ok := c.mgr.Store().(apcore.Counter)
	if !ok {
		ttl = max(ttl, countsFallbackTTL)
	}
	start := time.Now()
	counts := make(map[string]int, len(states)+1)
	if ok {
		total := 0
		for _, st := range states {
			n, err := counter.Count(ctx, st)
			if err != nil {
				return nil, storeError("count", err)
			}
			counts[string(st)] = n
			total += n
		}
		counts["total"] = total
	} else {
		all, err := c.mgr.List(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, st := range states {
			counts[string(st)] = 0
		}
		for i := range all {
			counts[string(all[i].Status)]++
		}
		counts["total"] = len(all)
	}
	now := time.Now()
	c.counts, c.countsAt, c.countsFor = counts, now, max(ttl, busyFactor*now.Sub(start))
	return counts, nil
}

// storeError gives an error of a store called directly (not through the
// manager) a code: the store's own, or TASK_STORE_UNAVAILABLE.
func storeError(op string, err error) error {
	if apcore.CodeOf(err) != "" {
		return err
	}
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "apcorehttp: " + op + ": " + err.Error(), Cause: err}
}

// getChart returns the chart, at most chartTTL old.
func (c *summaryCache) getChart(ctx context.Context) (chart, error) {
	c.chartMu.Lock()
	defer c.chartMu.Unlock()
	if c.chart.Finished != nil && time.Since(c.chartAt) < c.chartFor {
		return c.chart, nil
	}
	now := time.Now()
	ch, err := c.readChart(ctx, now)
	if err != nil {
		return chart{}, err
	}
	c.chart, c.chartAt, c.chartFor = ch, now, max(c.chartTTL, busyFactor*time.Since(now))
	return ch, nil
}

// readChart reads the newest records, a page at a time, until they were
// submitted a whole window before the chart's start (so that a task that
// waited or ran up to a window long and ended inside the chart is still
// counted), or until the budget is spent, and makes the series from them.
func (c *summaryCache) readChart(ctx context.Context, now time.Time) (chart, error) {
	n := int(c.window / c.bucket)
	end := now.Truncate(c.bucket).Add(c.bucket)
	start := end.Add(-time.Duration(n) * c.bucket)
	horizon := start.Add(-c.window)
	ch := chart{
		End: unixSeconds(end), BucketSeconds: c.bucket.Seconds(),
		Finished: make([]int, n), WaitAvg: make([]float64, n), WaitMax: make([]float64, n),
	}
	started := make([]int, n)
	seen := map[string]struct{}{}
	var oldest time.Time
	after := ""
	for ch.Records < c.budget {
		page, err := c.mgr.ListPage(ctx, apcore.ListOptions{After: after, Limit: min(apcore.MaxPageLimit, c.budget-ch.Records), Newest: true})
		if err != nil {
			return chart{}, err
		}
		for i := range page.Tasks {
			t := &page.Tasks[i]
			seen[t.ModuleID] = struct{}{}
			if t.Status.IsTerminal() && !t.CompletedAt.IsZero() && !t.CompletedAt.Before(start) && t.CompletedAt.Before(end) {
				ch.Finished[int(t.CompletedAt.Sub(start)/c.bucket)]++
			}
			if !t.StartedAt.IsZero() && !t.StartedAt.Before(start) && t.StartedAt.Before(end) {
				b := int(t.StartedAt.Sub(start) / c.bucket)
				w := max(t.StartedAt.Sub(readyAt(t)).Seconds(), 0)
				started[b]++
				ch.WaitAvg[b] += w
				ch.WaitMax[b] = max(ch.WaitMax[b], w)
			}
			if oldest.IsZero() || t.SubmittedAt.Before(oldest) {
				oldest = t.SubmittedAt
			}
		}
		ch.Records += len(page.Tasks)
		if page.Next == "" || len(page.Tasks) == 0 || oldest.Before(horizon) {
			break
		}
		after = page.Next
		if ch.Records >= c.budget {
			ch.Partial, ch.From = true, unixSeconds(oldest)
		}
	}
	for b, k := range started {
		if k > 0 {
			ch.WaitAvg[b] /= float64(k)
		}
	}
	c.noteModules(seen)
	return ch, nil
}

// readyAt is when t could start: its submission, or its run_at when that
// is later. A scheduled task's wait for its time is no queue wait.
func readyAt(t *apcore.TaskInfo) time.Time {
	if t.RunAt != nil && t.RunAt.After(t.SubmittedAt) {
		return *t.RunAt
	}
	return t.SubmittedAt
}

// noteModules adds module ids to those the handler remembers.
func (c *summaryCache) noteModules(ids map[string]struct{}) {
	c.modMu.Lock()
	defer c.modMu.Unlock()
	for id := range ids {
		if len(c.modules) >= maxModules {
			return
		}
		c.modules[id] = struct{}{}
	}
}

// noteModulesOf adds the module ids of tasks to those the handler
// remembers.
func (c *summaryCache) noteModulesOf(tasks []apcore.TaskInfo) {
	c.modMu.Lock()
	defer c.modMu.Unlock()
	for i := range tasks {
		if len(c.modules) >= maxModules {
			return
		}
		c.modules[tasks[i].ModuleID] = struct{}{}
	}
}

// moduleList returns the module ids the handler remembers, sorted.
func (c *summaryCache) moduleList() []string {
	c.modMu.Lock()
	out := make([]string, 0, len(c.modules))
	for m := range c.modules {
		out = append(out, m)
	}
	c.modMu.Unlock()
	slices.Sort(out)
	return out
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }
