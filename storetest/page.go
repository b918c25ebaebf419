package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// The checks of the Pager and Sweeper capabilities.

// pages reads every page of opts, following Next, and fails the check on an
// error or a run of pages that never ends.
func (r *run) pages(p apcore.Pager, opts apcore.ListOptions) [][]string {
	var out [][]string
	for i := 0; ; i++ {
		if i > 10_000 {
			r.fatalf("ListPage(%+v): more than 10,000 pages; a cursor that never moves?", opts)
		}
		page, err := p.ListPage(r.ctx, opts)
		if err != nil {
			r.fatalf("ListPage(%+v): %v", opts, err)
		}
		if len(page.Tasks) > opts.Limit {
			r.errorf("ListPage(%+v) returned %d records, more than the limit", opts, len(page.Tasks))
		}
		out = append(out, ids(page.Tasks))
		if page.Next == "" {
			return out
		}
		if len(page.Tasks) == 0 {
			r.fatalf("ListPage(%+v) returned an empty page with a Next cursor", opts)
		}
		opts.After = page.Next
	}
}

func flatten(pages [][]string) []string {
	var out []string
	for _, p := range pages {
		out = append(out, p...)
	}
	return out
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func checkPager(r *run) {
	p, ok := r.store.(apcore.Pager)
	if !ok {
		return
	}
	statuses := []apcore.TaskStatus{apcore.StatusCompleted, apcore.StatusRunning, apcore.StatusFailed, apcore.StatusPending, apcore.StatusCancelled}
	var all []string
	byStatus := map[apcore.TaskStatus][]string{}
	// Ids out of order, so that a store paging by id fails.
	for i := range 23 {
		st := statuses[i%len(statuses)]
		id := fmt.Sprintf("pg-%02d-%c", (i*7)%23, 'a'+rune(i))
		r.save(record(id, st, i))
		all = append(all, id)
		byStatus[st] = append(byStatus[st], id)
	}
	// An overwrite keeps its place.
	r.save(record(all[3], apcore.StatusCompleted, 3))
	byStatus[statuses[3]] = slices.DeleteFunc(byStatus[statuses[3]], func(s string) bool { return s == all[3] })
	byStatus[apcore.StatusCompleted] = nil
	for _, id := range all {
		if info := r.get(id); info.Status == apcore.StatusCompleted {
			byStatus[apcore.StatusCompleted] = append(byStatus[apcore.StatusCompleted], id)
		}
	}

	for _, limit := range []int{1, 5, 23, 1000} {
		pages := r.pages(p, apcore.ListOptions{Limit: limit})
		if got := flatten(pages); !reflect.DeepEqual(got, all) {
			r.errorf("pages of %d = %v, want insertion order %v", limit, got, all)
		}
		for i, pg := range pages[:len(pages)-1] {
			if len(pg) != limit {
				r.errorf("page %d of %d has %d records, want full pages before the last", i, limit, len(pg))
			}
		}
		if got := flatten(r.pages(p, apcore.ListOptions{Limit: limit, Newest: true})); !reflect.DeepEqual(got, reversed(all)) {
			r.errorf("newest-first pages of %d = %v, want %v", limit, got, reversed(all))
		}
		for _, st := range statuses {
			want := byStatus[st]
			if got := flatten(r.pages(p, apcore.ListOptions{Status: st, Limit: limit})); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
				r.errorf("pages of %d in %s = %v, want %v", limit, st, got, want)
			}
			if got := flatten(r.pages(p, apcore.ListOptions{Status: st, Limit: limit, Newest: true})); !reflect.DeepEqual(got, reversed(want)) && len(got)+len(want) > 0 {
				r.errorf("newest-first pages of %d in %s = %v, want %v", limit, st, got, reversed(want))
			}
		}
	}
	first, err := p.ListPage(r.ctx, apcore.ListOptions{Limit: 2})
	if err != nil {
		r.fatalf("ListPage: %v", err)
	}
	if len(first.Tasks) != 2 || first.Tasks[0].TaskID != all[0] || !reflect.DeepEqual(sameRecord(r.get(all[0]), first.Tasks[0]), []string(nil)) {
		r.errorf("the first page's first record is not the stored record %s: %+v", all[0], first.Tasks)
	}
	for _, bad := range []string{"not-a-cursor", "\x00\xff", "-1", "99999999999999999999999999"} {
		if _, err := p.ListPage(r.ctx, apcore.ListOptions{Limit: 10, After: bad}); !errors.Is(err, apcore.ErrInvalidInput) {
			r.errorf("ListPage with cursor %q returned %v, want an error matching ErrInvalidInput", bad, err)
		}
	}
	// A cursor is a place in the insertion order, whatever the filter.
	cancelled, err := p.ListPage(r.ctx, apcore.ListOptions{Status: apcore.StatusCancelled, Limit: 10, After: first.Next})
	if err != nil {
		r.errorf("ListPage in another state after a cursor: %v", err)
	} else if want := byStatus[apcore.StatusCancelled]; !reflect.DeepEqual(ids(cancelled.Tasks), want) {
		r.errorf("cancelled records after the second record = %v, want %v", ids(cancelled.Tasks), want)
	}
}

// Records added and removed between pages never make a page repeat or skip
// another record: removing the record a cursor names included.
func checkPagerStable(r *run) {
	p, ok := r.store.(apcore.Pager)
	if !ok {
		return
	}
	var all []string
	for i := range 40 {
		id := fmt.Sprintf("ps-%02d", i)
		r.save(record(id, apcore.StatusCompleted, i))
		all = append(all, id)
	}
	for _, newest := range []bool{false, true} {
		order := all
		if newest {
			order = reversed(all)
		}
		seen := map[string]int{}
		removed := map[string]bool{}
		opts := apcore.ListOptions{Limit: 7, Newest: newest}
		for round := 0; ; round++ {
			page, err := p.ListPage(r.ctx, opts)
			if err != nil {
				r.fatalf("ListPage(%+v): %v", opts, err)
			}
			for _, t := range page.Tasks {
				seen[t.TaskID]++
			}
			if page.Next == "" {
				break
			}
			last := page.Tasks[len(page.Tasks)-1].TaskID
			// Between pages: remove the record the cursor names and the one
			// after it (in this direction), add one.
			i := slices.Index(order, last)
			for _, id := range order[i:min(i+2, len(order))] {
				if err := r.store.Delete(r.ctx, id); err != nil {
					r.fatalf("Delete(%s): %v", id, err)
				}
				if seen[id] == 0 {
					removed[id] = true
				}
			}
			r.save(record(fmt.Sprintf("ps-new-%v-%d", newest, round), apcore.StatusCompleted, 100+round))
			opts.After = page.Next
		}
		for _, id := range order {
			switch {
			case seen[id] > 1:
				r.errorf("newest=%v: %s appeared on %d pages", newest, id, seen[id])
			case seen[id] == 0 && !removed[id]:
				r.errorf("newest=%v: %s was skipped though it stayed in the store", newest, id)
			}
		}
		// Start again with what is left.
		left := r.list("")
		for _, t := range left {
			if err := r.store.Delete(r.ctx, t.TaskID); err != nil {
				r.fatalf("Delete(%s): %v", t.TaskID, err)
			}
		}
		all = all[:0]
		for i := range 40 {
			id := fmt.Sprintf("ps2-%v-%02d", newest, i)
			r.save(record(id, apcore.StatusCompleted, i))
			all = append(all, id)
		}
	}
}

func checkSweeper(r *run) {
	sw, ok := r.store.(apcore.Sweeper)
	if !ok {
		return
	}
	cut := at(100)
	seeded := []apcore.TaskInfo{
		withCompleted(record("sw-done-before", apcore.StatusCompleted, 0), cut.Add(-time.Microsecond)),
		withCompleted(record("sw-failed-before", apcore.StatusFailed, 0), cut.Add(-time.Hour)),
		withCompleted(record("sw-cancel-before", apcore.StatusCancelled, 0), cut.Add(-time.Second)),
		withCompleted(record("sw-at-cutoff", apcore.StatusCompleted, 0), cut),
		withCompleted(record("sw-after", apcore.StatusCompleted, 0), cut.Add(time.Microsecond)),
		// No CompletedAt: goes by SubmittedAt.
		withCompleted(record("sw-no-time-old", apcore.StatusFailed, 0), time.Time{}),
		withCompleted(record("sw-no-time-new", apcore.StatusFailed, 200), time.Time{}),
		withCompleted(record("sw-running-old", apcore.StatusRunning, 0), cut.Add(-time.Hour)),
		record("sw-pending-old", apcore.StatusPending, 0),
	}
	for _, t := range seeded {
		r.save(t)
	}
	want := []string{"sw-done-before", "sw-failed-before", "sw-cancel-before", "sw-no-time-old"}
	n, err := sw.Sweep(r.ctx, apcore.SweepRequest{Before: cut, Limit: 3})
	if err != nil {
		r.fatalf("Sweep: %v", err)
	}
	if n != 3 {
		r.errorf("Sweep with Limit 3 of 4 expired records deleted %d, want 3", n)
	}
	n2, err := sw.Sweep(r.ctx, apcore.SweepRequest{Before: cut, Limit: 3})
	if err != nil {
		r.fatalf("Sweep: %v", err)
	}
	if n2 != 1 {
		r.errorf("the second Sweep deleted %d, want the 1 left", n2)
	}
	if n3, err := sw.Sweep(r.ctx, apcore.SweepRequest{Before: cut, Limit: 3}); err != nil || n3 != 0 {
		r.errorf("a third Sweep = %d, %v; want 0, nil", n3, err)
	}
	var left []string
	for _, t := range seeded {
		_, err := r.store.Get(r.ctx, t.TaskID)
		switch {
		case errors.Is(err, apcore.ErrTaskNotFound):
			if !slices.Contains(want, t.TaskID) {
				r.errorf("Sweep deleted %s, which it must not", t.TaskID)
			}
		case err != nil:
			r.fatalf("Get(%s): %v", t.TaskID, err)
		default:
			left = append(left, t.TaskID)
			if slices.Contains(want, t.TaskID) {
				r.errorf("Sweep left %s, which expired", t.TaskID)
			}
		}
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, left) {
		r.errorf("List after Sweep = %v, want %v", got, left)
	}
	if c, ok := r.store.(apcore.Counter); ok {
		if n, err := c.Count(r.ctx); err != nil || n != len(left) {
			r.errorf("Count after Sweep = %d, %v; want %d", n, err, len(left))
		}
	}
}

// Sweepers racing over one set of expired records delete each once and
// count each once.
func checkSweeperRace(r *run) {
	sw, ok := r.store.(apcore.Sweeper)
	if !ok {
		return
	}
	const n = 500
	for i := range n {
		r.save(record(fmt.Sprintf("swr-%03d", i), apcore.StatusCompleted, 0))
	}
	r.save(record("swr-running", apcore.StatusRunning, 0))
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.recoverInto()
			for {
				k, err := sw.Sweep(r.ctx, apcore.SweepRequest{Before: at(1000), Limit: 37})
				if err != nil {
					r.errorf("Sweep: %v", err)
					return
				}
				mu.Lock()
				total += k
				mu.Unlock()
				if k == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if total != n {
		r.errorf("4 racing sweepers counted %d deletions of %d expired records", total, n)
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"swr-running"}) {
		r.errorf("after the race the store holds %v, want only the running record", got)
	}
}
