package sqlstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// The count of active records that admission reads, and the count of each
// state and of every record, follow every kind of write, including plain
// SQL that bypasses the store.
func TestActiveCountFollowsEveryWrite(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			check := func(step string) {
				t.Helper()
				checkCounts(t, s, step)
			}
			rec := func(id string, status apcore.TaskStatus) apcore.TaskInfo {
				return apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: status, SubmittedAt: time.Now()}
			}
			for i := range 5 {
				ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: rec(fmt.Sprint("i", i), apcore.StatusPending), Owner: "o", Resumable: i%2 == 0}, 100)
				require.NoError(t, err)
				require.True(t, ok)
			}
			check("Insert")
			require.NoError(t, s.Save(ctx(t), rec("s1", apcore.StatusRunning)))
			require.NoError(t, s.Save(ctx(t), rec("s2", apcore.StatusCompleted)))
			check("Save of new records")
			require.NoError(t, s.Save(ctx(t), rec("s1", apcore.StatusFailed)))
			require.NoError(t, s.Save(ctx(t), rec("s2", apcore.StatusPending)))
			check("Save over records")
			_, err := s.SaveIf(ctx(t), rec("i0", apcore.StatusCancelled), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			_, err = s.SaveIf(ctx(t), rec("s1", apcore.StatusPending), apcore.StatusFailed)
			require.NoError(t, err)
			check("SaveIf")
			ok, err := s.Update(ctx(t), apcore.StoredTask{Info: rec("i1", apcore.StatusCompleted), Owner: "o"}, "o")
			require.NoError(t, err)
			require.True(t, ok)
			check("Update")
			require.NoError(t, s.Delete(ctx(t), "i2"))
			_, err = s.Remove(ctx(t), "s2")
			require.NoError(t, err)
			check("Delete and Remove")
			n, err := s.Recover(ctx(t), time.Now())
			require.NoError(t, err)
			require.Positive(t, n)
			check("Recover")
			db := b.raw(t)
			_, err = db.Exec(fmt.Sprintf("UPDATE %s SET status = 'failed' WHERE task_id = 'i3'", s.Table()))
			require.NoError(t, err)
			_, err = db.Exec(fmt.Sprintf("DELETE FROM %s WHERE task_id = 's1'", s.Table()))
			require.NoError(t, err)
			// Statements of many records in several states at once.
			_, err = db.Exec(fmt.Sprintf(`INSERT INTO %s (task_id, module_id, status) VALUES ('m1', 'a.b', 'pending'),
	('m2', 'a.b', 'completed'), ('m3', 'a.b', 'cancelled'), ('m4', 'a.b', 'running'), ('m5', 'a.b', 'completed')`, s.Table()))
			require.NoError(t, err)
			check("an insert of many")
			_, err = db.Exec(fmt.Sprintf("DELETE FROM %s WHERE task_id IN ('m1', 'm2', 'm4', 'i3')", s.Table()))
			require.NoError(t, err)
			check("plain SQL")
			if b.dialect == sqlstore.PostgreSQL {
				_, err = db.Exec("TRUNCATE " + s.Table())
				require.NoError(t, err)
				check("TRUNCATE")
			}
		})
	}
}

// checkCounts fails unless Count of each state, of pending and running
// together, of the terminal states together and of every record equals the
// records that List returns.
func checkCounts(t *testing.T, s *sqlstore.Store, step string) {
	t.Helper()
	all, err := s.List(ctx(t), "")
	require.NoError(t, err)
	want := map[apcore.TaskStatus]int{}
	for _, info := range all {
		want[info.Status]++
	}
	sets := [][]apcore.TaskStatus{nil, {apcore.StatusPending, apcore.StatusRunning},
		{apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}, {apcore.StatusPending, apcore.StatusFailed}}
	for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled} {
		sets = append(sets, []apcore.TaskStatus{st})
	}
	for _, set := range sets {
		n := 0
		for _, st := range set {
			n += want[st]
		}
		if set == nil {
			n = len(all)
		}
		got, err := s.Count(ctx(t), set...)
		require.NoError(t, err)
		require.Equal(t, n, got, "Count(%v) after %s", set, step)
	}
}
