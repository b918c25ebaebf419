package apcorehttp

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// snapshotCache keeps one List of every record for a short time, shared by
// the requests that page through it, so that a page of 100,000 records
// costs one List a second however many browsers look.
type snapshotCache struct {
	mgr    *apcore.TaskManager
	ttl    time.Duration
	window time.Duration // the chart's span
	bucket time.Duration // the chart's resolution

	mu   sync.Mutex // held while listing: one List at a time
	snap *snapshot
}

// snapshot is every record at one moment, with what the page derives from
// it.
type snapshot struct {
	at      time.Time
	all     []apcore.TaskInfo // insertion order
	summary summary

	mu      sync.Mutex
	indexes map[filterKey][]int32 // positions in all of the matching records
}

type filterKey struct {
	status apcore.TaskStatus
	module string
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
	WaitAvg       []float64 `json:"wait_avg"`       // mean queue wait (s) of the tasks that started in it
	WaitMax       []float64 `json:"wait_max"`       // longest queue wait (s)
}

// get returns a snapshot at most ttl old.
func (c *snapshotCache) get(ctx context.Context) (*snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && time.Since(c.snap.at) < c.ttl {
		return c.snap, nil
	}
	all, err := c.mgr.List(ctx, "")
	if err != nil {
		return nil, err
	}
	c.snap = newSnapshot(time.Now(), all, c.window, c.bucket)
	return c.snap, nil
}

func newSnapshot(now time.Time, all []apcore.TaskInfo, window, bucket time.Duration) *snapshot {
	n := int(window / bucket)
	end := now.Truncate(bucket).Add(bucket)
	start := end.Add(-time.Duration(n) * bucket)
	s := &snapshot{at: now, all: all, indexes: map[filterKey][]int32{}}
	sum := summary{
		GeneratedAt: unixSeconds(now),
		Counts:      map[string]int{"total": len(all)},
		Chart: chart{
			End: unixSeconds(end), BucketSeconds: bucket.Seconds(),
			Finished: make([]int, n), WaitAvg: make([]float64, n), WaitMax: make([]float64, n),
		},
	}
	for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled} {
		sum.Counts[string(st)] = 0
	}
	started := make([]int, n)
	modules := map[string]struct{}{}
	for i := range all {
		t := &all[i]
		sum.Counts[string(t.Status)]++
		modules[t.ModuleID] = struct{}{}
		if t.Status.IsTerminal() && !t.CompletedAt.IsZero() && !t.CompletedAt.Before(start) && t.CompletedAt.Before(end) {
			sum.Chart.Finished[int(t.CompletedAt.Sub(start)/bucket)]++
		}
		if !t.StartedAt.IsZero() && !t.StartedAt.Before(start) && t.StartedAt.Before(end) {
			b := int(t.StartedAt.Sub(start) / bucket)
			w := max(t.StartedAt.Sub(t.SubmittedAt).Seconds(), 0)
			started[b]++
			sum.Chart.WaitAvg[b] += w
			sum.Chart.WaitMax[b] = max(sum.Chart.WaitMax[b], w)
		}
	}
	for b, k := range started {
		if k > 0 {
			sum.Chart.WaitAvg[b] /= float64(k)
		}
	}
	sum.Modules = make([]string, 0, len(modules))
	for m := range modules {
		sum.Modules = append(sum.Modules, m)
	}
	slices.Sort(sum.Modules)
	s.summary = sum
	return s
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

// page returns limit records from offset among those matching status and
// module ("" = any), newest first when desc, and how many match.
func (s *snapshot) page(status apcore.TaskStatus, module string, desc bool, offset, limit int) ([]apcore.TaskInfo, int) {
	var idx []int32
	all := status == "" && module == ""
	if !all {
		idx = s.index(filterKey{status, module})
	}
	total := len(s.all)
	if !all {
		total = len(idx)
	}
	out := []apcore.TaskInfo{}
	for i := offset; i < total && len(out) < limit; i++ {
		j := i
		if desc {
			j = total - 1 - i
		}
		if !all {
			j = int(idx[j])
		}
		out = append(out, s.all[j])
	}
	return out, total
}

// index returns the positions of the records matching k, computing them
// once per snapshot.
func (s *snapshot) index(k filterKey) []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx, ok := s.indexes[k]; ok {
		return idx
	}
	var idx []int32
	for i := range s.all {
		t := &s.all[i]
		if (k.status == "" || t.Status == k.status) && (k.module == "" || t.ModuleID == k.module) {
			idx = append(idx, int32(i))
		}
	}
	if len(s.indexes) < 64 {
		s.indexes[k] = idx
	}
	return idx
}
