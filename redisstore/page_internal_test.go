package redisstore

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListingInSmallSteps lists with steps of a few entries, so that every
// listing takes several scripts and every path is taken: the order index
// walked for every record and for a large terminal state, a small terminal
// state's index read whole, the held index read by name in steps. Each
// list, each run of pages (both ways, several page sizes) and ListExpired
// must be what the records say.
func TestListingInSmallSteps(t *testing.T) {
	for _, layout := range []int{1, 2} {
		t.Run(fmt.Sprint("layout=", layout), func(t *testing.T) { listingInSmallSteps(t, layout) })
	}
}

func listingInSmallSteps(t *testing.T, layout int) {
	s, _ := internalStore(t, "steps", WithLayout(layout))
	s.steps = steps{walk: 3, gather: 4, held: 2, expired: 2, sweep: 2, buckets: 1}
	ctx := context.Background()
	base := time.Unix(1_700_000_000, 0)
	_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: "o", Expires: time.Now().Add(time.Hour), Create: true})
	require.NoError(t, err)

	// 10 completed (walked), 3 failed (read whole), 5 pending and 4
	// running (held by "o" or "p"), 2 cancelled, interleaved.
	kinds := []apcore.TaskStatus{"completed", "pending", "completed", "failed", "running", "completed", "pending", "cancelled"}
	var all []apcore.TaskInfo
	counts := map[apcore.TaskStatus]int{}
	for i := 0; len(all) < 24; i++ {
		st := kinds[i%len(kinds)]
		want := map[apcore.TaskStatus]int{"completed": 10, "failed": 3, "pending": 5, "running": 4, "cancelled": 2}[st]
		if counts[st] >= want {
			continue
		}
		counts[st]++
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("t%02d-%s", 50-len(all), st), ModuleID: "m", Status: st, SubmittedAt: base.Add(time.Duration(len(all)) * time.Second)}
		if st.IsTerminal() {
			info.CompletedAt = info.SubmittedAt.Add(time.Minute)
			require.NoError(t, s.Save(ctx, info))
		} else {
			owner := []string{"o", "p"}[len(all)%2]
			ok, err := s.Insert(ctx, apcore.StoredTask{Info: info, Owner: owner}, 100)
			require.NoError(t, err)
			require.True(t, ok)
		}
		all = append(all, info)
	}
	ids := func(ts []apcore.TaskInfo) []string {
		out := []string{}
		for _, t := range ts {
			out = append(out, t.TaskID)
		}
		return out
	}
	of := func(st apcore.TaskStatus) []string {
		out := []string{}
		for _, t := range all {
			if st == "" || t.Status == st {
				out = append(out, t.TaskID)
			}
		}
		return out
	}
	for _, st := range []apcore.TaskStatus{"", "pending", "running", "completed", "failed", "cancelled"} {
		got, err := s.List(ctx, st)
		require.NoError(t, err)
		assert.Equal(t, of(st), ids(got), "List(%q)", st)
		for _, limit := range []int{1, 2, 4, 7, 30} {
			for _, newest := range []bool{false, true} {
				want := of(st)
				if newest {
					slices.Reverse(want)
				}
				var pages []string
				opts := apcore.ListOptions{Status: st, Limit: limit, Newest: newest}
				for range 100 {
					page, err := s.ListPage(ctx, opts)
					require.NoError(t, err)
					require.LessOrEqual(t, len(page.Tasks), limit)
					pages = append(pages, ids(page.Tasks)...)
					if page.Next == "" {
						break
					}
					require.Len(t, page.Tasks, limit, "a page before the last is full (%+v)", opts)
					opts.After = page.Next
				}
				assert.Equal(t, want, pages, "pages of %+v", apcore.ListOptions{Status: st, Limit: limit, Newest: newest})
			}
		}
	}
	// The seventh record's completion is the bound: those before it expired.
	var expired []string
	for _, t := range all {
		if t.Status.IsTerminal() && t.CompletedAt.Before(all[7].SubmittedAt.Add(time.Minute)) {
			expired = append(expired, t.TaskID)
		}
	}
	require.NotEmpty(t, expired)
	got, err := s.ListExpired(ctx, all[7].SubmittedAt.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, expired, ids(got))

	// Sweep in steps of 2: a limit of 3 deletes 3, what is left next.
	n, err := s.Sweep(ctx, apcore.SweepRequest{Before: all[7].SubmittedAt.Add(time.Minute), Limit: 3})
	require.NoError(t, err)
	assert.Equal(t, min(3, len(expired)), n)
	n2, err := s.Sweep(ctx, apcore.SweepRequest{Before: all[7].SubmittedAt.Add(time.Minute), Limit: 100})
	require.NoError(t, err)
	assert.Equal(t, len(expired), n+n2)
	left, err := s.List(ctx, "")
	require.NoError(t, err)
	assert.Len(t, left, len(all)-len(expired))
	for _, id := range expired {
		assert.NotContains(t, ids(left), id)
	}
	count, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(left), count)
}

// TestSweepScoresOldEntriesAnew checks the terminal records that an
// earlier version scored +inf, having no completed_at: Sweep scores them
// by their submitted_at, deletes those that expired with their meta and
// order entries, and keeps the others.
func TestSweepScoresOldEntriesAnew(t *testing.T) {
	s, c := internalStore(t, "rescore")
	ctx := context.Background()
	old := time.Unix(1_600_000_000, 0)
	for i, at := range []time.Time{old, old.Add(48 * time.Hour), {}} {
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("inf-%d", i), ModuleID: "m", Status: apcore.StatusFailed, SubmittedAt: at}
		require.NoError(t, s.Save(ctx, info))
		// As an earlier version scored it.
		require.NoError(t, c.ZAdd(ctx, s.base+indexTag+"status:failed", redis.Z{Score: math.Inf(1), Member: info.TaskID}).Err())
	}
	require.NoError(t, s.Save(ctx, apcore.TaskInfo{TaskID: "new", ModuleID: "m", Status: apcore.StatusCompleted, SubmittedAt: old, CompletedAt: old.Add(time.Hour)}))
	// List reads a large terminal index by score, the +inf entries too.
	s.steps = steps{gather: 1, expired: 1}
	failed, err := s.List(ctx, apcore.StatusFailed)
	require.NoError(t, err)
	var ids []string
	for _, f := range failed {
		ids = append(ids, f.TaskID)
	}
	assert.Equal(t, []string{"inf-0", "inf-1", "inf-2"}, ids)
	n, err := s.Sweep(ctx, apcore.SweepRequest{Before: old.Add(24 * time.Hour), Limit: 10})
	require.NoError(t, err)
	assert.Equal(t, 3, n, "inf-0, inf-2 (zero submitted_at) and new")
	left, err := s.List(ctx, "")
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, "inf-1", left[0].TaskID)
	score, err := c.ZScore(ctx, s.base+indexTag+"status:failed", "inf-1").Result()
	require.NoError(t, err)
	assert.Equal(t, float64(old.Add(48*time.Hour).UnixMicro()), score)
	for key, want := range map[string]int64{"order": 1, "meta": 1, "status:failed": 1, "status:completed": 0} {
		k := s.base + indexTag + key
		var got int64
		if key == "meta" {
			got, err = c.HLen(ctx, k).Result()
		} else {
			got, err = c.ZCard(ctx, k).Result()
		}
		require.NoError(t, err)
		assert.Equal(t, want, got, key)
	}
}

// TestListExpiredGoesOnAfterARemovedMember removes, between two steps of
// ListExpired, the last member a step read: the next step goes on from its
// score, and neither repeats nor skips a record, among records that share
// their completed_at (ties in the index) too.
func TestListExpiredGoesOnAfterARemovedMember(t *testing.T) {
	s, _ := internalStore(t, "expired")
	ctx := context.Background()
	at := time.Unix(1_700_000_000, 0)
	var want []string
	for i := range 9 {
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("e%d", 9-i), ModuleID: "m", Status: apcore.StatusCompleted,
			SubmittedAt: at, CompletedAt: at.Add(time.Duration(i/4) * time.Second)} // ties of four
		require.NoError(t, s.Save(ctx, info))
		want = append(want, info.TaskID)
	}
	for _, step := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprint(step), func(t *testing.T) {
			removed := map[string]bool{}
			s.steps = steps{expired: step, between: func(last string) {
				if len(removed) < 3 && !removed[last] {
					removed[last] = true
					require.NoError(t, s.Delete(ctx, last))
				}
			}}
			got, err := s.ListExpired(ctx, at.Add(time.Hour))
			require.NoError(t, err)
			var left []string
			for _, id := range want {
				if !removed[id] {
					left = append(left, id)
				}
			}
			var ids []string
			for _, g := range got {
				ids = append(ids, g.TaskID)
			}
			assert.Equal(t, left, ids)
			assert.NotEmpty(t, removed)
			for id := range removed { // back for the next step size
				i := slices.Index(want, id)
				require.NoError(t, s.Save(ctx, apcore.TaskInfo{TaskID: id, ModuleID: "m", Status: apcore.StatusCompleted,
					SubmittedAt: at, CompletedAt: at.Add(time.Duration(i/4) * time.Second)}))
			}
			want = want[:0]
			all, err := s.List(ctx, "")
			require.NoError(t, err)
			for _, a := range all {
				want = append(want, a.TaskID)
			}
		})
	}
}

// TestListPageGoesOnPastAGonePage deletes every record of a page between
// the read of its index entries and that of its records: ListPage returns
// the page after it rather than an empty page with a next one.
func TestListPageGoesOnPastAGonePage(t *testing.T) {
	for _, layout := range []int{1, 2} {
		t.Run(fmt.Sprint("layout=", layout), func(t *testing.T) { listPageGoesOnPastAGonePage(t, layout) })
	}
}

func listPageGoesOnPastAGonePage(t *testing.T, layout int) {
	s, _ := internalStore(t, "gone", WithLayout(layout))
	ctx := context.Background()
	for i := range 5 {
		require.NoError(t, s.Save(ctx, apcore.TaskInfo{TaskID: fmt.Sprintf("g%d", i), ModuleID: "m", Status: apcore.StatusCompleted, SubmittedAt: time.Unix(int64(i), 0)}))
	}
	for _, st := range []apcore.TaskStatus{"", apcore.StatusCompleted} {
		deleted := false
		s.steps = steps{gather: 1, reading: func(ids []string) {
			if !deleted {
				deleted = true
				for _, id := range ids {
					require.NoError(t, s.Delete(ctx, id))
				}
			}
		}}
		page, err := s.ListPage(ctx, apcore.ListOptions{Status: st, Limit: 2})
		require.NoError(t, err)
		var ids []string
		for _, t := range page.Tasks {
			ids = append(ids, t.TaskID)
		}
		if st == "" {
			assert.Equal(t, []string{"g2", "g3"}, ids)
			assert.NotEmpty(t, page.Next)
		} else { // g0 and g1 went in the first round, g2 and g3 in this one
			assert.Equal(t, []string{"g4"}, ids)
			assert.Empty(t, page.Next)
		}
	}
}
