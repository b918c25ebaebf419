package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// TestBatchedUpdatesFence: Updates made at the same time through two
// stores (two pools, as two processes), each record's end tried by its
// holder and by the other, land exactly once each, by the holder only,
// without a deadlock between the two stores' batches; a second end of a
// record through the same store is refused; and the count of active
// records follows every end (the count rows, locked by the batches).
func TestBatchedUpdatesFence(t *testing.T) {
	if os.Getenv("APCORE_TEST_POSTGRES") == "" {
		t.Skip("no PostgreSQL (APCORE_TEST_POSTGRES)")
	}
	table := freshTable(t, postgres(t))
	open := func() *sqlstore.Store {
		db, err := sql.Open("pgx", os.Getenv("APCORE_TEST_POSTGRES"))
		require.NoError(t, err)
		db.SetMaxOpenConns(4)
		t.Cleanup(func() { db.Close() })
		s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(table))
		require.NoError(t, err)
		return s
	}
	stores := []*sqlstore.Store{open(), open()}
	owners := []string{"owner-a", "owner-b"}
	const n = 300
	now := time.Now().UTC().Truncate(time.Microsecond)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("batch-%03d", i)
		ok, err := stores[0].Insert(ctx(t), apcore.StoredTask{
			Info:      apcore.TaskInfo{TaskID: ids[i], ModuleID: "m", Status: apcore.StatusRunning, SubmittedAt: now, StartedAt: now},
			Owner:     owners[i%2],
			Resumable: true, Inputs: []byte(`{}`),
		}, n+1)
		require.NoError(t, err)
		require.True(t, ok)
	}
	var taken [n]atomic.Int32
	var wrong atomic.Int32
	var wg sync.WaitGroup
	for i, id := range ids {
		for k, s := range stores {
			// each store ends each record twice, as its holder's store and
			// not; the holder's two ends race, and only one lands.
			for try := range 2 {
				wg.Go(func() {
					holder := owners[(i+k+try)%2]
					info := apcore.TaskInfo{TaskID: id, ModuleID: "m", Status: apcore.StatusCompleted, SubmittedAt: now, StartedAt: now,
						CompletedAt: now.Add(time.Duration(k) * time.Second), Result: map[string]any{"store": float64(k)}}
					ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: holder}, holder)
					if err != nil {
						t.Errorf("Update %s by %s through store %d: %v", id, holder, k, err)
						return
					}
					if ok {
						taken[i].Add(1)
						if holder != owners[i%2] {
							wrong.Add(1)
						}
					}
				})
			}
		}
	}
	wg.Wait()
	require.Zero(t, wrong.Load(), "an Update by a manager that does not hold the record landed")
	for i := range taken {
		require.EqualValues(t, 1, taken[i].Load(), "record %s: Updates that landed", ids[i])
	}
	for _, id := range ids {
		got, err := stores[1].Get(ctx(t), id)
		require.NoError(t, err)
		require.Equal(t, apcore.StatusCompleted, got.Status)
	}
	active, err := stores[1].Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	require.Zero(t, active)
	done, err := stores[0].Count(ctx(t), apcore.StatusCompleted)
	require.NoError(t, err)
	require.Equal(t, n, done)
}

// TestBatchedUpdateContext: an Update whose context has ended is not
// made, and says so.
func TestBatchedUpdateContext(t *testing.T) {
	if os.Getenv("APCORE_TEST_POSTGRES") == "" {
		t.Skip("no PostgreSQL (APCORE_TEST_POSTGRES)")
	}
	db := postgres(t)
	s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(t, db)))
	require.NoError(t, err)
	now := time.Now().UTC()
	st := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "t1", ModuleID: "m", Status: apcore.StatusRunning, SubmittedAt: now}, Owner: "o"}
	ok, err := s.Insert(ctx(t), st, 10)
	require.NoError(t, err)
	require.True(t, ok)
	dead, cancel := context.WithCancel(ctx(t))
	cancel()
	st.Info.Status, st.Info.CompletedAt = apcore.StatusCompleted, now
	_, err = s.Update(dead, st, "o")
	require.Error(t, err)
	got, err := s.Get(ctx(t), "t1")
	require.NoError(t, err)
	require.Equal(t, apcore.StatusRunning, got.Status)
}
