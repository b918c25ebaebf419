package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smallSteps makes every listing and sweep take many scripts, and a walk
// of layout 2 read two buckets a step.
var smallSteps = steps{walk: 5, gather: 4, held: 3, expired: 3, sweep: 7, buckets: 2}

// layoutBase is the time the records of fill are submitted around.
var layoutBase = time.Unix(1_700_000_000, 0).UTC()

// fill writes n records the same way into each of stores: ended ones by
// Save (completed after their insertion, in an order of their own; some
// cancelled without completed_at), active ones by Insert (resumable and
// waiting, scheduled, or running, held by "o"; some with a unique key);
// then it ends some of the running ones by Update and removes some.
func fill(t *testing.T, ctx context.Context, n int, stores ...*Store) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var running []apcore.StoredTask
	for i := range n {
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("r%05d", (i*7919)%100000), ModuleID: "m",
			SubmittedAt: layoutBase.Add(time.Duration(i) * time.Second)}
		done := layoutBase.Add(time.Duration(rng.IntN(2*n)) * time.Second)
		var st apcore.StoredTask
		switch i % 9 {
		case 0, 1, 2:
			info.Status, info.CompletedAt, info.Result = apcore.StatusCompleted, done, map[string]any{"i": float64(i)}
		case 3:
			info.Status, info.CompletedAt, info.Error = apcore.StatusFailed, done, "no"
		case 4:
			info.Status = apcore.StatusCancelled // no completed_at: scored by submitted_at
		case 5:
			info.Status, info.UniqueKey = apcore.StatusPending, fmt.Sprint("k", i)
			st = apcore.StoredTask{Info: info, Resumable: true, Inputs: []byte(`{"a":1}`)}
		case 6:
			info.Status = apcore.StatusPending
			st = apcore.StoredTask{Info: info, Resumable: true, NotBefore: time.Now().Add(time.Hour)}
		default:
			info.Status, info.StartedAt = apcore.StatusRunning, info.SubmittedAt
			st = apcore.StoredTask{Info: info, Owner: "o"}
		}
		for _, s := range stores {
			if info.Status.IsTerminal() {
				require.NoError(t, s.Save(ctx, info))
				continue
			}
			ok, err := s.Insert(ctx, st, 1<<30)
			require.NoError(t, err)
			require.True(t, ok)
		}
		if info.Status == apcore.StatusRunning {
			running = append(running, st)
		}
	}
	for i, st := range running {
		if i%2 == 0 {
			st.Info.Status, st.Info.CompletedAt = apcore.StatusCompleted, layoutBase.Add(time.Duration(rng.IntN(2*n))*time.Second)
			for _, s := range stores {
				ok, err := s.Update(ctx, st, "o")
				require.NoError(t, err)
				require.True(t, ok)
			}
		}
	}
	for i := 0; i < n; i += 13 {
		for _, s := range stores {
			_, err := s.Remove(ctx, fmt.Sprintf("r%05d", (i*7919)%100000))
			require.NoError(t, err)
		}
	}
}

// view is what a reader sees of s: every list, runs of pages both ways,
// the counts and the expired records before bound, as text.
func view(t *testing.T, ctx context.Context, s *Store, bound time.Time) string {
	t.Helper()
	var b strings.Builder
	ids := func(ts []apcore.TaskInfo) string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = t.TaskID + ":" + string(t.Status)
		}
		return strings.Join(out, ",")
	}
	all, err := s.List(ctx, "")
	require.NoError(t, err)
	for _, r := range all {
		fmt.Fprintf(&b, "record %+v\n", r)
	}
	for _, st := range []apcore.TaskStatus{"", "pending", "running", "completed", "failed", "cancelled"} {
		got, err := s.List(ctx, st)
		require.NoError(t, err)
		n, err := s.Count(ctx, st)
		if st == "" {
			n, err = s.Count(ctx)
		}
		require.NoError(t, err)
		fmt.Fprintf(&b, "list %q (%d): %s\n", st, n, ids(got))
		for _, opts := range []apcore.ListOptions{{Status: st, Limit: 7}, {Status: st, Limit: 5, Newest: true}} {
			fmt.Fprintf(&b, "pages %+v:", opts)
			for range 1000 {
				page, err := s.ListPage(ctx, opts)
				require.NoError(t, err)
				if len(page.Tasks) > 0 { // an empty last page after a full one, or none, is the same
					fmt.Fprintf(&b, " [%s]", ids(page.Tasks))
				}
				if page.Next == "" {
					break
				}
				opts.After = page.Next
			}
			b.WriteString("\n")
		}
	}
	exp, err := s.ListExpired(ctx, bound)
	require.NoError(t, err)
	fmt.Fprintf(&b, "expired: %s\n", ids(exp))
	return b.String()
}

// sameView fails t, showing the first line that differs, unless got is
// want.
func sameView(t *testing.T, want, got string, msg ...any) {
	t.Helper()
	if want == got {
		return
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			short := func(s string) string { return s[:min(len(s), 3000)] }
			t.Fatalf("%s: line %d differs:\nwant %s\ngot  %s", fmt.Sprint(msg...), i, short(w[i]), short(g[i]))
		}
	}
	t.Fatalf("%s: %d lines, want %d", fmt.Sprint(msg...), len(g), len(w))
}

// Both layouts show the same records the same way, through every
// listing, page and count, before and after sweeps; layout 2 keeps an
// ended record without a meta entry and its index entries in buckets that
// Redis encodes as listpacks.
func TestLayoutsAgree(t *testing.T) {
	ctx := context.Background()
	s1, _ := internalStore(t, "agree1")
	s2, c := internalStore(t, "agree2", WithLayout(2))
	s1.steps, s2.steps = smallSteps, smallSteps
	require.True(t, s2.v2.Load())
	const n = 700 // 6 buckets
	fill(t, ctx, n, s1, s2)
	bound := layoutBase.Add(n * time.Second / 2)
	want := view(t, ctx, s1, bound)
	sameView(t, want, view(t, ctx, s2, bound))

	idx := s2.base + indexTag
	for _, k := range []string{"order", "status:completed", "status:failed", "status:cancelled"} {
		assert.Zero(t, c.Exists(ctx, idx+k).Val(), "layout 2 has no %s", k)
	}
	active, err := s2.Count(ctx, apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	assert.EqualValues(t, active, c.HLen(ctx, idx+"meta").Val(), "a meta entry per active record only")
	buckets := c.ZRange(ctx, idx+"o", 0, -1).Val()
	assert.Equal(t, []string{"0", "1", "2", "3", "4", "5"}, buckets)
	for _, k := range []string{"o:0", "o:5", "d:completed:3"} {
		assert.Equal(t, "listpack", c.ObjectEncoding(ctx, idx+k).Val(), k)
	}
	// An ended record carries its sequence number, which Get leaves out.
	got, err := s2.List(ctx, apcore.StatusCompleted)
	require.NoError(t, err)
	raw := c.Get(ctx, s2.Key(got[0].TaskID)).Val()
	assert.Regexp(t, `,"_seq":\d+}$`, raw)
	one, err := s2.Get(ctx, got[0].TaskID)
	require.NoError(t, err)
	assert.Equal(t, got[0], one)

	// Sweeps delete the same records, a few at a time (which of the
	// expired records a sweep with a limit takes first is the layout's).
	for {
		k1, err := s1.Sweep(ctx, apcore.SweepRequest{Before: bound, Limit: 40})
		require.NoError(t, err)
		k2, err := s2.Sweep(ctx, apcore.SweepRequest{Before: bound, Limit: 40})
		require.NoError(t, err)
		require.Equal(t, k1, k2)
		if k1 == 0 {
			break
		}
		n1, err := s1.Count(ctx)
		require.NoError(t, err)
		n2, err := s2.Count(ctx)
		require.NoError(t, err)
		require.Equal(t, n1, n2)
	}
	sameView(t, view(t, ctx, s1, layoutBase.Add(time.Hour*24)), view(t, ctx, s2, layoutBase.Add(time.Hour*24)))
	// The counters agree with the buckets.
	sum := 0
	for _, b := range c.ZRange(ctx, idx+"o", 0, -1).Val() {
		sum += int(c.ZCard(ctx, idx+"o:"+b).Val())
	}
	assert.Equal(t, c.HGet(ctx, idx+"n", "all").Val(), fmt.Sprint(sum))
}

// New uses the layout a store has recorded, whatever WithLayout says; it
// gives WithLayout's only to a new store, and layout 1 to one that an
// earlier version made (records but no recorded layout).
func TestRecordedLayoutWins(t *testing.T) {
	ctx := context.Background()
	s2, c := internalStore(t, "wins2", WithLayout(2))
	again, err := New(c, WithPrefix(s2.base))
	require.NoError(t, err)
	assert.True(t, again.v2.Load(), "a store of layout 2 opened without the option")

	s1, _ := internalStore(t, "wins1")
	require.NoError(t, s1.Save(ctx, apcore.TaskInfo{TaskID: "a", ModuleID: "m", Status: apcore.StatusCompleted, SubmittedAt: layoutBase}))
	opened, err := New(c, WithPrefix(s1.base), WithLayout(2))
	require.NoError(t, err)
	assert.False(t, opened.v2.Load(), "a store of layout 1 stays so until Migrate")
	require.NoError(t, c.Del(ctx, s1.base+indexTag+"layout").Err()) // as an earlier version left it
	opened, err = New(c, WithPrefix(s1.base), WithLayout(2))
	require.NoError(t, err)
	assert.False(t, opened.v2.Load())
	assert.Equal(t, "1", c.Get(ctx, s1.base+indexTag+"layout").Val())

	_, err = New(c, WithPrefix(s1.base), WithLayout(3))
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
}

// Migrate moves a store of layout 1 to layout 2 a step at a time while a
// Store opened before it began (as a manager that runs on) reads and
// writes it: after every step both show what a store of layout 1 that
// saw the same writes shows. A Migrate stopped part way (its context
// ended, or the process gone between two steps) goes on where it
// stopped.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	s, c := internalStore(t, "migrate")
	ref, _ := internalStore(t, "migrateref")
	const n = 500
	fill(t, ctx, n, s, ref)
	running, err := ref.List(ctx, apcore.StatusRunning)
	require.NoError(t, err)
	completed, err := ref.List(ctx, apcore.StatusCompleted)
	require.NoError(t, err)
	old, err := New(c, WithPrefix(s.base)) // a manager's Store, of layout 1
	require.NoError(t, err)
	m, err := New(c, WithPrefix(s.base)) // Migrate's
	require.NoError(t, err)
	for _, x := range []*Store{s, ref, old, m} {
		x.steps = smallSteps
	}
	bound := layoutBase.Add(n * time.Second / 2)
	want := view(t, ctx, ref, bound)
	sameView(t, want, view(t, ctx, s, bound))

	// A Migrate whose context has ended changes nothing.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = m.migrate(cancelled, 37, 0)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, "1", c.Get(ctx, s.base+indexTag+"layout").Val())

	// Writes through the old Store part way: an end, a rewrite of an
	// ended record, a removal, a new record.
	writes := func(i int) {
		for _, x := range []*Store{old, ref} {
			st := apcore.StoredTask{Info: running[i], Owner: "o"}
			st.Info.Status, st.Info.CompletedAt = apcore.StatusFailed, layoutBase.Add(time.Duration(i)*time.Minute)
			ok, err := x.Update(ctx, st, "o")
			require.NoError(t, err)
			require.True(t, ok)
			rewritten := completed[i]
			rewritten.Status = apcore.StatusCancelled
			require.NoError(t, x.Save(ctx, rewritten))
			_, err = x.Remove(ctx, completed[len(completed)-1-i].TaskID)
			require.NoError(t, err)
			require.NoError(t, x.Save(ctx, apcore.TaskInfo{TaskID: fmt.Sprint("new", i), ModuleID: "m", Status: apcore.StatusCompleted,
				SubmittedAt: layoutBase, CompletedAt: layoutBase.Add(time.Duration(i) * time.Second)}))
		}
	}
	steps := 0
	for {
		done, err := m.migrate(ctx, 37, 1) // one step, as if the process stopped after it
		require.NoError(t, err)
		steps++
		if steps%4 == 1 {
			writes(steps / 4)
			want = view(t, ctx, ref, bound)
		}
		sameView(t, want, view(t, ctx, old, bound), "step ", steps)
		require.True(t, old.v2.Load(), "the old Store found the new layout")
		if done {
			break
		}
	}
	assert.Greater(t, steps, n/37, "a step at a time")
	idx := s.base + indexTag
	for _, k := range []string{"order", "status:completed", "status:failed", "status:cancelled", "migrating"} {
		assert.Zero(t, c.Exists(ctx, idx+k).Val(), "%s is gone", k)
	}
	active, err := s.Count(ctx, apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	assert.EqualValues(t, active, c.HLen(ctx, idx+"meta").Val(), "a meta entry per active record only")
	require.NoError(t, Migrate(ctx, c, WithPrefix(s.base)), "again: nothing to do")

	// The migrated store sweeps as layout 1 does.
	for _, x := range []*Store{s, ref} {
		_, err := x.Sweep(ctx, apcore.SweepRequest{Before: bound, Limit: 1000})
		require.NoError(t, err)
	}
	sameView(t, view(t, ctx, ref, bound), view(t, ctx, s, bound))
}
