package apcore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ListPage checks its options before it asks the store.
func TestListPageRefusesBadOptions(t *testing.T) {
	store := newHookStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store))
	ctx := testCtx(t)
	for _, opts := range []ListOptions{
		{Limit: -1},
		{Limit: MaxPageLimit + 1},
		{Status: "finished"},
		{After: "not-a-cursor"},
		{After: "m1.999999"}, // a place this store never gave out
		{After: string(make([]byte, 300))},
	} {
		_, err := m.ListPage(ctx, opts)
		assert.ErrorIs(t, err, ErrInvalidInput, "ListPage(%+v)", opts)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	_, err := m.ListPage(ended, ListOptions{})
	assert.Error(t, err, "an ended context")
}

// A Limit of 0 is 100; pages follow the insertion order, newest first on
// request, and a running task's page shows its latest progress.
func TestListPageDefaultsAndProgress(t *testing.T) {
	release := make(chan struct{})
	progressed := make(chan struct{})
	mods := map[string]Module{
		"a.quick": constModule(1),
		"a.slow": ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
			ReportProgress(ctx, 0.5, "half")
			close(progressed)
			<-release
			return nil, nil
		}),
	}
	m := newManager(t, registry(t, mods), WithMaxConcurrent(4))
	ctx := testCtx(t)
	var ids []string
	for range 150 {
		id, err := m.Submit(ctx, "a.quick", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for _, id := range ids {
		_, err := m.Wait(ctx, id)
		require.NoError(t, err)
	}
	slow, err := m.Submit(ctx, "a.slow", nil)
	require.NoError(t, err)
	<-progressed

	page, err := m.ListPage(ctx, ListOptions{})
	require.NoError(t, err)
	assert.Len(t, page.Tasks, DefaultPageLimit)
	assert.Equal(t, ids[:100], idsOf(page.Tasks))
	rest, err := m.ListPage(ctx, ListOptions{After: page.Next})
	require.NoError(t, err)
	assert.Equal(t, append(slices.Clone(ids[100:]), slow), idsOf(rest.Tasks))
	assert.Empty(t, rest.Next, "the last page has no Next")

	newest, err := m.ListPage(ctx, ListOptions{Limit: 1, Newest: true, Status: StatusRunning})
	require.NoError(t, err)
	require.Len(t, newest.Tasks, 1)
	assert.Equal(t, slow, newest.Tasks[0].TaskID)
	assert.Equal(t, 0.5, newest.Tasks[0].Progress, "the running task's latest progress")
	assert.Equal(t, "half", newest.Tasks[0].ProgressMessage)
	close(release)
	_, err = m.Wait(ctx, slow)
	require.NoError(t, err)
}

// A store without Pager is listed and cut into pages, with cursors that go
// on after a record removed between pages.
func TestListPageWithoutPager(t *testing.T) {
	inner := NewMemoryStore()
	store := plainStore{inner}
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store))
	ctx := testCtx(t)
	var ids []string
	for i := range 25 {
		id := fmt.Sprintf("p%02d", i)
		require.NoError(t, inner.Save(ctx, TaskInfo{TaskID: id, ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: now(), CompletedAt: now()}))
		ids = append(ids, id)
	}
	var got []string
	opts := ListOptions{Limit: 4}
	for {
		page, err := m.ListPage(ctx, opts)
		require.NoError(t, err)
		got = append(got, idsOf(page.Tasks)...)
		if page.Next == "" {
			break
		}
		// Remove the record the cursor names: the next page still starts
		// after it.
		require.NoError(t, inner.Delete(ctx, page.Tasks[len(page.Tasks)-1].TaskID))
		opts.After = page.Next
	}
	assert.Equal(t, ids, got)
	_, err := m.ListPage(ctx, ListOptions{After: "m1.3"})
	assert.ErrorIs(t, err, ErrInvalidInput, "another store's cursor")
}

// Reap and Cleanup sweep a batch per store call with a Sweeper, keep the
// protocol's rules (Cleanup by CompletedAt or else SubmittedAt, at least
// maxAge old; a negative age takes every terminal record; active records
// stay), and count what they deleted.
func TestSweepsInBatches(t *testing.T) {
	for _, sweeper := range []bool{true, false} {
		t.Run(fmt.Sprintf("sweeper=%v", sweeper), func(t *testing.T) {
			inner := newHookStore()
			var store TaskStore = inner
			if !sweeper {
				store = plainStore{inner.MemoryStore}
			}
			m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store))
			ctx := testCtx(t)
			old := now().Add(-2 * time.Hour)
			const n = 2500 // more than two batches
			for i := range n {
				require.NoError(t, inner.MemoryStore.Save(ctx, TaskInfo{TaskID: fmt.Sprintf("old%04d", i), ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old}))
			}
			seed(t, inner.MemoryStore,
				TaskInfo{TaskID: "no-completed-at", ModuleID: "a.b", Status: StatusFailed, SubmittedAt: old},
				TaskInfo{TaskID: "recent", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: now(), CompletedAt: now()},
				TaskInfo{TaskID: "active", ModuleID: "a.b", Status: StatusRunning, SubmittedAt: old},
			)
			got, err := m.Reap(ctx, now().Add(-time.Hour))
			require.NoError(t, err)
			want := n
			if sweeper {
				want++ // a Sweeper goes by SubmittedAt where CompletedAt is unset
			}
			assert.Equal(t, want, got)
			if sweeper {
				assert.GreaterOrEqual(t, len(inner.expiredCall), 3, "a batch per call")
			}
			got, err = m.Cleanup(ctx, time.Hour)
			require.NoError(t, err)
			assert.Equal(t, n+1-want, got, "Cleanup goes by SubmittedAt where CompletedAt is unset")
			got, err = m.Cleanup(ctx, -1)
			require.NoError(t, err)
			assert.Equal(t, 1, got, "a negative age takes every terminal record")
			left, err := inner.MemoryStore.List(ctx, "")
			require.NoError(t, err)
			assert.Equal(t, []string{"active"}, idsOf(left))
		})
	}
}
