package sqlstore_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A table made by the previous version (ten columns, a JSONB result on
// PostgreSQL) is upgraded in place: the new columns are added, the count
// of active records starts from the records already there, and the old
// records read back as they were.
func TestMigratesAnOlderTable(t *testing.T) {
	run := func(t *testing.T, db *sql.DB, dialect sqlstore.Dialect, table string) {
		seq, result, ph := "seq INTEGER PRIMARY KEY AUTOINCREMENT", "result TEXT", "?"
		if dialect == sqlstore.PostgreSQL {
			seq, result = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "result JSONB"
		}
		_, err := db.Exec(fmt.Sprintf(`CREATE TABLE %s (%s, task_id TEXT NOT NULL UNIQUE, module_id TEXT NOT NULL,
status TEXT NOT NULL, submitted_at BIGINT, started_at BIGINT, completed_at BIGINT, %s, error TEXT,
retry_count INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL DEFAULT 0)`, table, seq, result))
		require.NoError(t, err)
		for i, status := range []string{"pending", "running", "completed", "failed", "pending"} {
			res := "NULL"
			if status == "completed" {
				res = `'{"n": 1}'`
			}
			q := fmt.Sprintf("INSERT INTO %s (task_id, module_id, status, submitted_at, result) VALUES (%s, 'a.b', '%s', 1000000, %s)", table, ph, status, res)
			if dialect == sqlstore.PostgreSQL {
				q = fmt.Sprintf("INSERT INTO %s (task_id, module_id, status, submitted_at, result) VALUES ($1, 'a.b', '%s', 1000000, %s)", table, status, res)
			}
			_, err := db.Exec(q, fmt.Sprintf("old-%d", i))
			require.NoError(t, err)
		}
		// The previous version's index on completed_at, which the sweep
		// index replaces.
		_, err = db.Exec(fmt.Sprintf("CREATE INDEX %s_expiry ON %s (completed_at) WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at IS NOT NULL", table, table))
		require.NoError(t, err)
		s, err := sqlstore.New(ctx(t), db, dialect, sqlstore.WithTable(table))
		require.NoError(t, err)
		indexes := func() []string {
			q := "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
			if dialect == sqlstore.PostgreSQL {
				q = "SELECT indexname FROM pg_indexes WHERE tablename = $1 AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%key' ORDER BY indexname"
			}
			rows, err := db.Query(q, table)
			require.NoError(t, err)
			defer rows.Close()
			var names []string
			for rows.Next() {
				var name string
				require.NoError(t, rows.Scan(&name))
				names = append(names, strings.TrimPrefix(name, table+"_"))
			}
			require.NoError(t, rows.Err())
			return names
		}
		want := []string{"claim", "claim_module", "held", "scheduled", "status_seq", "sweep", "unique_key"}
		if dialect == sqlstore.PostgreSQL {
			want = slices.DeleteFunc(want, func(n string) bool { return n == "unique_key" }) // ends in key, like the constraints
		}
		assert.Equal(t, want, indexes(), "the indexes made, the expiry index dropped")
		// The old records page and sweep: old-2 (completed, no completed_at)
		// goes by its submitted_at.
		page, err := s.ListPage(ctx(t), apcore.ListOptions{Limit: 3})
		require.NoError(t, err)
		require.Len(t, page.Tasks, 3)
		assert.Equal(t, "old-0", page.Tasks[0].TaskID)
		page, err = s.ListPage(ctx(t), apcore.ListOptions{Limit: 3, After: page.Next})
		require.NoError(t, err)
		assert.Equal(t, []string{"old-3", "old-4"}, []string{page.Tasks[0].TaskID, page.Tasks[1].TaskID})
		swept, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Unix(2, 0), Limit: 10})
		require.NoError(t, err)
		assert.Equal(t, 2, swept, "old-2 and old-3 expired")
		_, err = s.Get(ctx(t), "old-2")
		require.ErrorIs(t, err, apcore.ErrTaskNotFound)
		require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: "old-2", ModuleID: "a.b", Status: apcore.StatusCompleted,
			SubmittedAt: time.Unix(1, 0), Result: map[string]any{"n": 1.0}}))
		n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
		require.NoError(t, err)
		assert.Equal(t, 3, n, "the count starts from the active records there")
		done, err := s.Get(ctx(t), "old-2")
		require.NoError(t, err)
		assert.Equal(t, map[string]any{"n": 1.0}, done.Result)
		// Admission counts the old active records.
		st := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "new-1", ModuleID: "a.b", Status: apcore.StatusPending}, Owner: "o"}
		ok, err := s.Insert(ctx(t), st, 3)
		require.NoError(t, err)
		assert.False(t, ok, "3 active old records fill a limit of 3")
		ok, err = s.Insert(ctx(t), st, 4)
		require.NoError(t, err)
		assert.True(t, ok)
		// The new fields round-trip, and the old records took the defaults.
		failed := apcore.TaskInfo{TaskID: "old-0", ModuleID: "a.b", Status: apcore.StatusFailed, Error: "x",
			ErrorCode: apcore.CodeModuleTimeout, Progress: 40, ProgressMessage: "p"}
		require.NoError(t, s.Save(ctx(t), failed))
		got, err := s.Get(ctx(t), "old-0")
		require.NoError(t, err)
		assert.Equal(t, failed, got)
		n, err = s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		// A second New (another process starting) changes nothing.
		again, err := sqlstore.New(ctx(t), db, dialect, sqlstore.WithTable(table))
		require.NoError(t, err)
		n, err = again.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
		require.NoError(t, err)
		assert.Equal(t, 3, n)
	}
	t.Run("SQLite", func(t *testing.T) {
		run(t, openSQLite(t, filepath.Join(t.TempDir(), "old.db")), sqlstore.SQLite, "apcore_tasks")
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		db := postgres(t)
		run(t, db, sqlstore.PostgreSQL, freshTable(t, db))
	})
}
