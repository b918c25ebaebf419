package sqlstore_test

import (
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// TestInsertOnTx: insertOn in a caller's transaction saves the record when
// that transaction commits, and nothing when it rolls back.
func TestInsertOnTx(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			db := sqlstore.DBForTest(s)
			task := func(id string) apcore.StoredTask {
				return apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "m.x", Status: apcore.StatusPending, SubmittedAt: time.Now()}, Owner: "o"}
			}
			tx, err := db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			ok, err := sqlstore.InsertOnForTest(s, ctx(t), tx, task("rolled"), 10)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, tx.Rollback())
			_, err = s.Get(ctx(t), "rolled")
			require.ErrorIs(t, err, apcore.ErrTaskNotFound)

			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			ok, err = sqlstore.InsertOnForTest(s, ctx(t), tx, task("kept"), 10)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, tx.Commit())
			got, err := s.Get(ctx(t), "kept")
			require.NoError(t, err)
			require.Equal(t, apcore.StatusPending, got.Status)
			n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			require.Equal(t, 1, n)

			// the limit holds inside a transaction too
			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			ok, err = sqlstore.InsertOnForTest(s, ctx(t), tx, task("over"), 1)
			require.NoError(t, err)
			require.False(t, ok)
			require.NoError(t, tx.Rollback())
		})
	}
}
