package apcore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Blocks emptied by a sweep are dropped when the index grows, and pages,
// cursors made before, counts and sweeps stay right across it.
func TestMemoryIndexCompacts(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	old := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 10_000
	for i := range n {
		st := StatusCompleted
		if i%1000 == 999 {
			st = StatusRunning // one active record in every 1000: some blocks stay
		}
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("r%05d", i), ModuleID: "m", Status: st, SubmittedAt: old, CompletedAt: old}))
	}
	first, err := s.ListPage(ctx, ListOptions{Limit: 1})
	require.NoError(t, err)
	before := len(*s.index.blocks.Load())
	assert.Equal(t, (n+blockSize-1)/blockSize, before)

	swept := 0
	for {
		k, err := s.Sweep(ctx, SweepRequest{Before: old.Add(time.Second), Limit: 333})
		require.NoError(t, err)
		swept += k
		if k < 333 {
			break
		}
	}
	assert.Equal(t, n-n/1000, swept)
	// The next block appended compacts the list.
	for i := range blockSize + 1 {
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("new%02d", i), ModuleID: "m", Status: StatusPending, SubmittedAt: old}))
	}
	after := len(*s.index.blocks.Load())
	assert.Less(t, after, 20, "blocks after sweeping 99.9%% of %d records and adding 65 (%d before)", n, before)

	var want []string
	for i := 999; i < n; i += 1000 {
		want = append(want, fmt.Sprintf("r%05d", i))
	}
	for i := range blockSize + 1 {
		want = append(want, fmt.Sprintf("new%02d", i))
	}
	// A cursor made before the compaction.
	assert.Equal(t, want, allPages(t, s, ListOptions{Limit: 7, After: first.Next}))
	running, err := s.List(ctx, StatusRunning)
	require.NoError(t, err)
	assert.Equal(t, want[:n/1000], idsOf(running))
	c, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(want), c)
}

// allPages follows the pages of opts from its cursor to the end, and
// returns their ids.
func allPages(t *testing.T, p Pager, opts ListOptions) []string {
	t.Helper()
	var got []string
	for {
		page, err := p.ListPage(context.Background(), opts)
		require.NoError(t, err)
		got = append(got, idsOf(page.Tasks)...)
		if page.Next == "" {
			return got
		}
		opts.After = page.Next
	}
}

// Newest-first pages with a status filter walk back across blocks that
// hold no record in that state.
func TestMemoryIndexNewestSparse(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	var failed []string
	for i := range 5000 {
		st := StatusCompleted
		if i%777 == 5 {
			st = StatusFailed
			failed = append(failed, fmt.Sprintf("r%04d", i))
		}
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("r%04d", i), ModuleID: "m", Status: st}))
	}
	slices.Reverse(failed)
	assert.Equal(t, failed, allPages(t, s, ListOptions{Limit: 2, Newest: true, Status: StatusFailed}))
}

// A Claim reads only the queues of the modules it asks for, takes the
// oldest claimable task first across modules, and leaves a task that is
// not due yet for a later Claim.
func TestMemoryClaimQueues(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	_, err := s.Renew(ctx, LeaseRequest{Owner: "o", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	insert := func(id, module string, notBefore time.Time) {
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: id, ModuleID: module, Status: StatusPending, SubmittedAt: now}, Resumable: true, NotBefore: notBefore}, 1000)
		require.True(t, ok)
		require.NoError(t, err)
	}
	insert("a1", "a", time.Time{})
	insert("b1", "b", now.Add(time.Minute)) // not due
	insert("b2", "b", time.Time{})
	insert("a2", "a", time.Time{})
	insert("c1", "c", time.Time{})

	claim := func(limit int, modules []string, at time.Time) []string {
		out, err := s.Claim(ctx, ClaimRequest{Owner: "o", Limit: limit, Now: at, Modules: modules})
		require.NoError(t, err)
		var ids []string
		for _, st := range out {
			ids = append(ids, st.Info.TaskID)
		}
		return ids
	}
	assert.Equal(t, []string{"b2"}, claim(5, []string{"b"}, now), "only b's due task")
	assert.Equal(t, []string{"a1", "a2"}, claim(2, nil, now), "oldest first across modules")
	assert.Equal(t, []string{"c1"}, claim(5, nil, now))
	assert.Empty(t, claim(5, nil, now), "b1 is not due")
	assert.Equal(t, []string{"b1"}, claim(5, nil, now.Add(2*time.Minute)), "b1 once due")
	assert.Empty(t, s.claims.byModule, "empty queues are dropped")
}

// Racing Claims, Updates that hand tasks back and Sweeps never hand one
// task to two owners nor lose a claimable one.
func TestMemoryClaimRace(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	const n = 2000
	for _, o := range []string{"o1", "o2", "o3"} {
		_, err := s.Renew(ctx, LeaseRequest{Owner: o, Expires: now.Add(time.Hour), Create: true})
		require.NoError(t, err)
	}
	for i := range n {
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("t%04d", i), ModuleID: fmt.Sprintf("m%d", i%5), Status: StatusPending, SubmittedAt: now}, Resumable: true}, n)
		require.True(t, ok)
		require.NoError(t, err)
	}
	var mu sync.Mutex
	taken := map[string]string{}
	var wg sync.WaitGroup
	for _, o := range []string{"o1", "o2", "o3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			handedBack := 0
			for {
				out, err := s.Claim(ctx, ClaimRequest{Owner: o, Limit: 7, Now: now})
				if !assert.NoError(t, err) || len(out) == 0 {
					return
				}
				for _, st := range out {
					if handedBack < 20 { // hand some back: they must be claimable again
						handedBack++
						st.Info.Status, st.Owner = StatusPending, ""
						ok, err := s.Update(ctx, st, o)
						assert.True(t, ok)
						assert.NoError(t, err)
						continue
					}
					mu.Lock()
					if prev, ok := taken[st.Info.TaskID]; ok {
						t.Errorf("%s claimed by %s and %s", st.Info.TaskID, prev, o)
					}
					taken[st.Info.TaskID] = o
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	assert.Len(t, taken, n, "every task claimed once")
}

// A claim queue that never empties (tasks arrive as fast as they are
// claimed) keeps its size bounded by what waits in it.
func TestMemoryClaimQueueStaysBounded(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	_, err := s.Renew(ctx, LeaseRequest{Owner: "o", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	next := 0
	insert := func() {
		next++
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("t%06d", next), ModuleID: "m", Status: StatusPending, SubmittedAt: now}, Resumable: true}, 1<<30)
		require.True(t, ok)
		require.NoError(t, err)
	}
	for range 10 {
		insert()
	}
	for range 10_000 {
		insert()
		out, err := s.Claim(ctx, ClaimRequest{Owner: "o", Limit: 1, Now: now})
		require.NoError(t, err)
		require.Len(t, out, 1)
	}
	mq := s.claims.byModule[claimKey{module: "m"}]
	require.NotNil(t, mq)
	assert.Equal(t, 10, len(mq.items)-mq.head, "ten wait")
	assert.Less(t, cap(mq.items), 200, "the queue's array stays near what waits in it")
}

// A group of blocks whose flag says it may hold a state it no longer holds
// is tidied by a listing that glanced at all its blocks, and set again by
// the next record that enters that state.
func TestMemoryGroupsFollowTheirStates(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	n := 3 * groupSize * blockSize // three groups
	for i := range n {
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("r%06d", i), ModuleID: "m", Status: StatusPending}))
	}
	first := (*s.index.blocks.Load())[0].group
	pendingBit := uint32(1) << statusIndex(StatusPending)
	require.NotZero(t, first.flags.Load()&pendingBit)
	for i := range groupSize * blockSize { // the first group's records end
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("r%06d", i), ModuleID: "m", Status: StatusCompleted}))
	}
	got, err := s.List(ctx, StatusPending)
	require.NoError(t, err)
	assert.Len(t, got, n-groupSize*blockSize)
	assert.Zero(t, first.flags.Load()&pendingBit, "tidied: the first group holds no pending record")
	require.NoError(t, s.Save(ctx, TaskInfo{TaskID: "r000007", ModuleID: "m", Status: StatusPending}))
	assert.NotZero(t, first.flags.Load()&pendingBit, "set again")
	page, err := s.ListPage(ctx, ListOptions{Status: StatusPending, Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 1)
	assert.Equal(t, "r000007", page.Tasks[0].TaskID)
}

// Listings racing writers that move other records in and out of a state,
// and tidying groups as they go, always find the records that stay in it.
func TestMemoryGroupsUnderRacingWrites(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	n := 3 * groupSize * blockSize
	stable := map[string]bool{}
	for i := range n {
		st := StatusCompleted
		id := fmt.Sprintf("r%06d", i)
		if i%(groupSize*blockSize) == 77 { // one record that stays pending in each group
			st = StatusPending
			stable[id] = true
		}
		require.NoError(t, s.Save(ctx, TaskInfo{TaskID: id, ModuleID: "m", Status: st}))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (k*7919 + w*104729) % n
				id := fmt.Sprintf("r%06d", i)
				if stable[id] {
					continue
				}
				st := StatusPending
				if k%2 == 1 {
					st = StatusCompleted
				}
				_, _ = s.SaveIf(ctx, TaskInfo{TaskID: id, ModuleID: "m", Status: st}, StatusPending, StatusCompleted)
			}
		}()
	}
	for range 25 {
		got, err := s.List(ctx, StatusPending)
		require.NoError(t, err)
		seen := 0
		for _, info := range got {
			if stable[info.TaskID] {
				seen++
			}
		}
		if !assert.Equal(t, len(stable), seen, "every record that stays pending is listed") {
			break
		}
	}
	close(stop)
	wg.Wait()
}
