package apcore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/storetest"
)

// Run with: go test -run '^$' -bench MemoryStoreScale -benchtime 200x
//
// What a page, a listing of the active records, a recovery and a sweep cost
// on a MemoryStore keeping 10k and 1M records: the ns/op of the two sizes
// should be close (cost follows the work asked, not the records kept).

func scaleStore(b *testing.B, n int) *apcore.MemoryStore {
	b.Helper()
	ctx := context.Background()
	s := apcore.NewMemoryStore()
	at := time.Now()
	for i := range n {
		st := apcore.StatusCompleted
		switch {
		case i%10_000 == 5:
			st = apcore.StatusRunning
		case i%1000 == 7:
			st = apcore.StatusFailed
		}
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("t%08d", i), ModuleID: "scale.job", Status: st, SubmittedAt: at, CompletedAt: at}
		if !st.IsTerminal() {
			info.CompletedAt = time.Time{}
		}
		if err := s.Save(ctx, info); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func BenchmarkMemoryStoreScale(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{10_000, 1_000_000} {
		s := scaleStore(b, n)
		b.Run(fmt.Sprintf("ListPage100/records=%d", n), func(b *testing.B) {
			for b.Loop() {
				if p, err := s.ListPage(ctx, apcore.ListOptions{Limit: 100, Newest: true}); err != nil || len(p.Tasks) != 100 {
					b.Fatal(err, len(p.Tasks))
				}
			}
		})
		b.Run(fmt.Sprintf("ListPageFailed/records=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.ListPage(ctx, apcore.ListOptions{Limit: 100, Newest: true, Status: apcore.StatusFailed}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("ListRunning/records=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.List(ctx, apcore.StatusRunning); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Recover/records=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Recover(ctx, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("SweepNothingDue/records=%d", n), func(b *testing.B) {
			for b.Loop() {
				if k, err := s.Sweep(ctx, apcore.SweepRequest{Before: time.Unix(0, 0), Limit: 1000}); err != nil || k != 0 {
					b.Fatal(err, k)
				}
			}
		})
		b.Run(fmt.Sprintf("SweepAll/records=%d", n), func(b *testing.B) {
			// ns/op is per record swept.
			deleted := 0
			for b.Loop() {
				b.StopTimer()
				fresh := scaleStore(b, n)
				b.StartTimer()
				for {
					k, err := fresh.Sweep(ctx, apcore.SweepRequest{Before: time.Now().Add(time.Hour), Limit: 1000})
					if err != nil {
						b.Fatal(err)
					}
					deleted += k
					if k < 1000 {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(deleted), "ns/record")
		})
	}
}

// BenchmarkMemoryUniqueSubmit: Submit with and without a unique key on the
// MemoryStore, side by side.
func BenchmarkMemoryUniqueSubmit(b *testing.B) {
	storetest.BenchmarkUniqueSubmit(b, func() (apcore.TaskStore, error) { return apcore.NewMemoryStore(), nil })
}

// BenchmarkMemoryScheduledIdle: 100,000 tasks due in an hour cost no CPU
// while they wait; tasks due soon start on time.
func BenchmarkMemoryScheduledIdle(b *testing.B) {
	for _, waiting := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			storetest.BenchmarkScheduledIdle(b, func() (apcore.TaskStore, error) { return apcore.NewMemoryStore(), nil }, waiting)
		})
	}
}
