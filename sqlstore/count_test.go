package sqlstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// The count of active records that admission reads follows every kind of
// write, including plain SQL that bypasses the store.
func TestActiveCountFollowsEveryWrite(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			check := func(step string) {
				t.Helper()
				got, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
				require.NoError(t, err)
				all, err := s.List(ctx(t), "")
				require.NoError(t, err)
				want := 0
				for _, info := range all {
					if info.Status.IsActive() {
						want++
					}
				}
				require.Equal(t, want, got, "after %s", step)
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
			check("plain SQL")
			if b.dialect == sqlstore.PostgreSQL {
				_, err = db.Exec("TRUNCATE " + s.Table())
				require.NoError(t, err)
				check("TRUNCATE")
			}
		})
	}
}
