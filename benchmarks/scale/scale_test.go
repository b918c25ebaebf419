package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestQuickMemory runs -quick against the memory store and checks that
// what it measures happened; it asserts no timing.
func TestQuickMemory(t *testing.T) {
	c := quickConfig()
	c.stores, c.progress = []string{"memory"}, io.Discard
	c.runs, c.calls, c.submits, c.rounds = 2, 3, 100, 1
	c.drains = [2]int{1_000, 3_000}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := run(ctx, &c)
	if rep.failed() {
		t.Fatalf("the run failed: %v %v", rep.stores[0].err, rep.drainE)
	}
	s := rep.stores[0]
	if len(s.sizes) != 2 {
		t.Fatalf("%d sizes measured, want 2", len(s.sizes))
	}
	for _, z := range s.sizes {
		if z.counted != z.n {
			t.Errorf("%d records: the store counted %d", z.n, z.counted)
		}
		if z.pageBytes == 0 || len(z.pageCalls) < 5 {
			t.Errorf("%d records: the first page read %d bytes in %d calls (%v)", z.n, z.pageBytes, len(z.pageCalls), z.pageCalls)
		}
		if len(z.lists) != len(listKinds) {
			t.Fatalf("%d records: %d kinds of ListPage, want %d", z.n, len(z.lists), len(listKinds))
		}
		for k, l := range z.lists {
			if want := wantPage(k, z.n); l.tasks != want {
				t.Errorf("%d records, %s: %d records on a page, want %d", z.n, l.name, l.tasks, want)
			}
		}
		if z.lists[0].tasks != 100 {
			t.Errorf("%d records: the first page holds %d records, want 100", z.n, z.lists[0].tasks)
		}
		if z.submits != c.submits || z.events == 0 || z.submitP99 <= 0 {
			t.Errorf("%d records: %d submits, p99 %v, %d events", z.n, z.submits, z.submitP99, z.events)
		}
		if want := z.n - pendingCount(z.n) + c.submits + c.warmup(); z.reaped != want {
			t.Errorf("%d records: Reap deleted %d, want %d", z.n, z.reaped, want)
		}
	}
	if len(rep.drains) != 2 {
		t.Fatalf("%d drains, want 2", len(rep.drains))
	}
	for _, d := range rep.drains {
		if d.timedOut || d.done != d.n {
			t.Errorf("backlog of %d: %d ended (timed out: %v)", d.n, d.done, d.timedOut)
		}
	}
	var out strings.Builder
	printTables(&out, rep)
	for _, want := range []string{"first dashboard page, time", "Submit p99", "Reap", "backlog drain per task"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, out.String())
		}
	}
}

func TestPair(t *testing.T) {
	if p, err := pair("10000,1000000", 1); err != nil || p != [2]int{10_000, 1_000_000} {
		t.Errorf("pair = %v, %v", p, err)
	}
	if p, err := pair("0,0", 0); err != nil || p != [2]int{} {
		t.Errorf("pair(0,0) = %v, %v", p, err)
	}
	for _, bad := range []string{"", "5", "5,5", "6,5", "0,5", "a,b"} {
		if _, err := pair(bad, 1); err == nil {
			t.Errorf("pair(%q) took it", bad)
		}
	}
}

func TestRecordsLayout(t *testing.T) {
	now := time.Now()
	const n = 10_000
	counts := map[string]int{}
	for i := range n {
		r := record(i, n, now)
		counts[string(r.Status)]++
		if r.Status.IsTerminal() && !r.CompletedAt.Before(now.Add(-time.Hour)) {
			t.Fatalf("record %d ended at %v, not an hour before the fill", i, r.CompletedAt)
		}
	}
	if counts["pending"] != pendingCount(n) || counts["failed"] < n/failedEvery-1 || counts["cancelled"] < n/failedEvery-1 {
		t.Errorf("statuses: %v", counts)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{10_000: "10k", 1_000_000: "1M", 1_234: "1,234", 1_234_567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
