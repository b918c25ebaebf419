package sqlstore_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pendingTask is a new record for Insert.
func pendingTask(id string) apcore.StoredTask {
	return apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending}, Owner: "o"}
}

// On PostgreSQL the count of active records is split over slots, each with
// its share of the cap. Concurrent inserts still admit exactly the limit,
// whatever slots their ids hash to; ends free room that the next inserts
// take; and a lower or higher limit is obeyed at once.
func TestSlotsKeepTheCapExact(t *testing.T) {
	db := postgres(t)
	db.SetMaxOpenConns(40)
	s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(t, db)))
	require.NoError(t, err)
	defer s.Close()

	insertAll := func(round string, n, limit int) (admitted []string) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		var failures atomic.Int32
		for i := range n {
			wg.Go(func() {
				id := fmt.Sprintf("%s-%d", round, i)
				ok, err := s.Insert(ctx(t), pendingTask(id), limit)
				if err != nil {
					failures.Add(1)
					t.Errorf("insert %s: %v", id, err)
					return
				}
				if ok {
					mu.Lock()
					admitted = append(admitted, id)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Zero(t, failures.Load())
		return admitted
	}
	active := func() int {
		t.Helper()
		n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
		require.NoError(t, err)
		return n
	}

	first := insertAll("a", 120, 50)
	assert.Len(t, first, 50, "120 racing inserts under a limit of 50")
	assert.Equal(t, 50, active())

	for _, id := range first[:20] { // 20 end
		ok, err := s.Update(ctx(t), apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusCompleted}, Owner: "o"}, "o")
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 30, active())
	assert.Len(t, insertAll("b", 60, 50), 20, "the room the ends freed, and no more")
	assert.Equal(t, 50, active())

	assert.Empty(t, insertAll("c", 10, 40), "a lower limit than the active count admits nothing")
	assert.Len(t, insertAll("d", 40, 70), 20, "a higher limit admits up to itself")
	assert.Equal(t, 70, active())
}

// A table that the previous version counted in one row (the _active table
// and its _count_ triggers) moves to the slots: the old triggers go, so
// nothing counts twice, and the count starts from the active records there.
func TestSlotsReplaceTheOneRowCount(t *testing.T) {
	db := postgres(t)
	table := freshTable(t, db)
	s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(table))
	require.NoError(t, err)
	for i := range 3 {
		ok, err := s.Insert(ctx(t), pendingTask(fmt.Sprint("old-", i)), 10)
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.NoError(t, s.Close())
	// Put the previous version's layout back: its count table and a
	// trigger under its name, and no slot triggers.
	for _, stmt := range []string{
		fmt.Sprintf("DROP TRIGGER %s_slot_insert ON %s", table, table),
		fmt.Sprintf("DROP TABLE %s_schema_version", table), // which the previous version had not
		fmt.Sprintf("CREATE TABLE %s_active (id INTEGER PRIMARY KEY CHECK (id = 1), active BIGINT NOT NULL)", table),
		fmt.Sprintf("INSERT INTO %s_active VALUES (1, 3)", table),
		fmt.Sprintf(`CREATE FUNCTION %s_count_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE %s_active SET active = active + 1 WHERE id = 1; RETURN NULL; END $$`, table, table),
		fmt.Sprintf("CREATE TRIGGER %s_count_insert AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s_count_active()", table, table, table),
		fmt.Sprintf("UPDATE %s SET slot = 0", table),
	} {
		_, err := db.Exec(stmt)
		require.NoError(t, err, stmt)
	}

	s, err = sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(table))
	require.NoError(t, err)
	defer s.Close()
	var old int
	require.NoError(t, db.QueryRow(fmt.Sprintf("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('%s') AND tgname LIKE '%%count%%'", table)).Scan(&old))
	assert.Zero(t, old, "the previous version's triggers are gone")
	n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	for i := range 10 {
		_, err := s.Insert(ctx(t), pendingTask(fmt.Sprint("new-", i)), 5)
		require.NoError(t, err)
	}
	n, err = s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	assert.Equal(t, 5, n, "3 old and 2 new active records fill a limit of 5")
}
