package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/apcore-go/apcore/sqlstore/internal/v3store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// versionsOf returns the versions the table's version table records.
func versionsOf(t *testing.T, db *sql.DB, table string) []int {
	t.Helper()
	rows, err := db.QueryContext(ctx(t), fmt.Sprintf("SELECT version FROM %s_schema_version ORDER BY version", table))
	require.NoError(t, err)
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		out = append(out, v)
	}
	require.NoError(t, rows.Err())
	return out
}

// schemaOf describes what the database holds for the table: its objects
// (tables, indexes, triggers) with their definitions, and the columns.
func schemaOf(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string) []string {
	t.Helper()
	q := "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_master WHERE name LIKE ? ORDER BY name"
	if d == sqlstore.PostgreSQL {
		q = `SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE tablename LIKE $1
UNION ALL SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type FROM information_schema.columns WHERE table_name LIKE $1
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE $1 ORDER BY 1`
	}
	rows, err := db.QueryContext(ctx(t), q, table+"%")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// versionBackends are a fresh SQLite file and a fresh PostgreSQL table:
// a pool opener and the table's name.
func versionBackends(t *testing.T) []struct {
	name    string
	dialect sqlstore.Dialect
	open    func(t testing.TB) *sql.DB
	table   string
} {
	bs := backends(t)
	pg := postgres(t)
	return []struct {
		name    string
		dialect sqlstore.Dialect
		open    func(t testing.TB) *sql.DB
		table   string
	}{
		{"SQLite", sqlstore.SQLite, bs[0].raw, sqlstore.DefaultTable},
		{"PostgreSQL", sqlstore.PostgreSQL, bs[1].raw, freshTable(t, pg)},
	}
}

// Migrate records each migration once; a second Migrate, and New, change
// nothing; New WithoutMigrate runs on a table at this version and refuses
// one at another.
func TestMigrateRecordsVersions(t *testing.T) {
	for _, b := range versionBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			_, err := sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table), sqlstore.WithoutMigrate())
			require.ErrorIs(t, err, apcore.ErrInvalidInput, "WithoutMigrate on no table")
			assert.Contains(t, err.Error(), "schema version 0")
			require.NoError(t, sqlstore.Migrate(ctx(t), db, b.dialect, sqlstore.WithTable(b.table)))
			assert.Equal(t, []int{1, 2, 3, 4, 5}, versionsOf(t, db, b.table))
			assert.Equal(t, 5, sqlstore.SchemaVersion)
			before := schemaOf(t, db, b.dialect, b.table)
			require.NoError(t, sqlstore.Migrate(ctx(t), db, b.dialect, sqlstore.WithTable(b.table)))
			s, err := sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table))
			require.NoError(t, err)
			require.NoError(t, s.Close())
			s, err = sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table), sqlstore.WithoutMigrate())
			require.NoError(t, err)
			require.NoError(t, s.Close())
			assert.Equal(t, before, schemaOf(t, db, b.dialect, b.table))
			assert.Equal(t, []int{1, 2, 3, 4, 5}, versionsOf(t, db, b.table))
		})
	}
}

// A schema newer than the package knows: New and Migrate fail with
// GENERAL_INVALID_INPUT naming both versions, and change nothing, even
// what this version would (an index it lacks).
func TestMigrateRefusesANewerSchema(t *testing.T) {
	for _, b := range versionBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			require.NoError(t, sqlstore.Migrate(ctx(t), db, b.dialect, sqlstore.WithTable(b.table)))
			for _, stmt := range []string{
				fmt.Sprintf("INSERT INTO %s_schema_version (version, description, applied_at) VALUES (6, 'from the future', 0)", b.table),
				fmt.Sprintf("DROP INDEX %s_sweep", b.table),
			} {
				_, err := db.ExecContext(ctx(t), stmt)
				require.NoError(t, err)
			}
			before := schemaOf(t, db, b.dialect, b.table)
			for name, call := range map[string]func() error{
				"Migrate": func() error { return sqlstore.Migrate(ctx(t), db, b.dialect, sqlstore.WithTable(b.table)) },
				"MigrateTo": func() error {
					return sqlstore.MigrateTo(ctx(t), db, b.dialect, 3, sqlstore.WithTable(b.table))
				},
				"New": func() error {
					_, err := sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table))
					return err
				},
				"New WithoutMigrate": func() error {
					_, err := sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table), sqlstore.WithoutMigrate())
					return err
				},
			} {
				err := call()
				require.Error(t, err, name)
				assert.ErrorIs(t, err, apcore.ErrInvalidInput, name)
				var se *sqlstore.SchemaError
				require.True(t, errors.As(err, &se), name)
				assert.Equal(t, sqlstore.SchemaError{Table: b.table, Found: 6, Known: 5}, *se)
				assert.Contains(t, err.Error(), "schema version 6, newer than version 5", name)
			}
			assert.Equal(t, before, schemaOf(t, db, b.dialect, b.table), "nothing changed")
			assert.Equal(t, []int{1, 2, 3, 4, 5, 6}, versionsOf(t, db, b.table))
		})
	}
}

// Processes that migrate at once, each with a pool of its own: every one
// succeeds, and each migration runs once.
func TestConcurrentMigrate(t *testing.T) {
	for _, b := range versionBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			const n = 8
			dbs := make([]*sql.DB, n)
			for i := range dbs {
				dbs[i] = b.open(t)
			}
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					if i%2 == 0 {
						errs[i] = sqlstore.Migrate(ctx(t), dbs[i], b.dialect, sqlstore.WithTable(b.table))
						return
					}
					s, err := sqlstore.New(ctx(t), dbs[i], b.dialect, sqlstore.WithTable(b.table))
					if err == nil {
						err = s.Close()
					}
					errs[i] = err
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				assert.NoError(t, err, "process %d", i)
			}
			assert.Equal(t, []int{1, 2, 3, 4, 5}, versionsOf(t, dbs[0], b.table))
		})
	}
}

// Down from 5 to 4, to 3 and up again: the held index of 5, then the
// columns and indexes of 4 go and come back, the records stay; below 3 is
// refused.
func TestMigrateDownAndUp(t *testing.T) {
	for _, b := range versionBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			s, err := sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table))
			require.NoError(t, err)
			at := time.Now().Add(time.Hour)
			task := pendingTask("kept")
			task.Info.RunAt, task.Info.UniqueKey, task.Info.Priority = &at, "k", 5
			ok, err := s.Insert(ctx(t), task, 10)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, s.Close())
			at5 := schemaOf(t, db, b.dialect, b.table)

			require.NoError(t, sqlstore.MigrateTo(ctx(t), db, b.dialect, 4, sqlstore.WithTable(b.table)))
			assert.Equal(t, []int{1, 2, 3, 4}, versionsOf(t, db, b.table))
			assert.Equal(t, slices.DeleteFunc(slices.Clone(at5), func(o string) bool { return strings.Contains(o, b.table+"_held ") }),
				schemaOf(t, db, b.dialect, b.table), "down to 4 drops the held index alone")
			require.NoError(t, sqlstore.MigrateTo(ctx(t), db, b.dialect, 3, sqlstore.WithTable(b.table)))
			assert.Equal(t, []int{1, 2, 3}, versionsOf(t, db, b.table))
			var n int
			require.NoError(t, db.QueryRowContext(ctx(t), "SELECT count(*) FROM "+b.table).Scan(&n))
			assert.Equal(t, 1, n)
			// the version 3 store runs on it
			old, err := v3store.New(ctx(t), db, v3Dialect(b.dialect), v3store.WithTable(b.table))
			require.NoError(t, err)
			got, err := old.Get(ctx(t), "kept")
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusPending, got.Status)
			require.NoError(t, old.Close())
			_, err = sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table), sqlstore.WithoutMigrate())
			require.ErrorIs(t, err, apcore.ErrInvalidInput, "WithoutMigrate on version 3")

			err = sqlstore.MigrateTo(ctx(t), db, b.dialect, 2, sqlstore.WithTable(b.table))
			require.ErrorIs(t, err, apcore.ErrInvalidInput)
			assert.Equal(t, []int{1, 2, 3}, versionsOf(t, db, b.table), "nothing undone")

			require.NoError(t, sqlstore.Migrate(ctx(t), db, b.dialect, sqlstore.WithTable(b.table)))
			assert.Equal(t, at5, schemaOf(t, db, b.dialect, b.table), "the same schema as Migrate made")
			s, err = sqlstore.New(ctx(t), db, b.dialect, sqlstore.WithTable(b.table), sqlstore.WithoutMigrate())
			require.NoError(t, err)
			defer s.Close()
			got, err = s.Get(ctx(t), "kept")
			require.NoError(t, err)
			assert.Nil(t, got.RunAt, "down loses the run time")
			assert.Equal(t, 0, got.Priority)
		})
	}
}

func v3Dialect(d sqlstore.Dialect) v3store.Dialect {
	if d == sqlstore.PostgreSQL {
		return v3store.PostgreSQL
	}
	return v3store.SQLite
}

// A rolling upgrade: managers on the previous release's store (v3store,
// schema 3, which knows no version table) run beside managers on this
// one, on one table. The old store makes the table; the new one migrates
// it while the old managers run; the old ones restart on the migrated
// table (their introspection finds nothing to change); resumable tasks
// submitted through either run on either, exactly once, and the counts
// stay exact.
func TestOldAndNewManagersShareATable(t *testing.T) {
	for _, b := range versionBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			var mu sync.Mutex
			ran := map[string][]string{} // task id -> the managers that ran it
			registry := func(name string) *apcore.Registry {
				reg := apcore.NewRegistry()
				require.NoError(t, reg.Register("roll.echo", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
					info, _ := apcore.TaskFromContext(ctx)
					mu.Lock()
					ran[info.TaskID] = append(ran[info.TaskID], name)
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					return in["n"], nil
				})))
				return reg
			}
			oldStore := func() *v3store.Store {
				s, err := v3store.New(ctx(t), b.open(t), v3Dialect(b.dialect), v3store.WithTable(b.table))
				require.NoError(t, err)
				t.Cleanup(func() { s.Close() })
				return s
			}
			opts := []apcore.Option{apcore.WithLeaseTTL(2 * time.Second), apcore.WithMaxConcurrent(4), apcore.WithMaxTasks(1000)}
			old1 := manager(t, registry("old1"), oldStore(), opts...)
			var ids []string
			submit := func(m *apcore.TaskManager, n int, extra ...apcore.SubmitOption) {
				for i := range n {
					id, err := m.Submit(ctx(t), "roll.echo", map[string]any{"n": float64(i)}, append([]apcore.SubmitOption{apcore.WithResumable()}, extra...)...)
					require.NoError(t, err)
					ids = append(ids, id)
				}
			}
			submit(old1, 10)

			// The new version starts: it migrates the table under the
			// running old manager.
			newStore, err := sqlstore.New(ctx(t), b.open(t), b.dialect, sqlstore.WithTable(b.table))
			require.NoError(t, err)
			t.Cleanup(func() { newStore.Close() })
			db := b.open(t)
			assert.Equal(t, []int{1, 2, 3, 4, 5}, versionsOf(t, db, b.table))
			migrated := schemaOf(t, db, b.dialect, b.table)
			new1 := manager(t, registry("new1"), newStore, opts...)
			// An old replica restarts on the migrated table.
			old2 := manager(t, registry("old2"), oldStore(), opts...)
			assert.Equal(t, migrated, schemaOf(t, db, b.dialect, b.table), "the old store's start changed nothing")

			submit(old1, 10)
			submit(new1, 10, apcore.WithPriority(5))
			submit(old2, 10)
			submit(new1, 10)
			for _, id := range ids {
				info, err := new1.Wait(ctx(t), id)
				require.NoError(t, err)
				require.Equal(t, apcore.StatusCompleted, info.Status, "%s: %s %s", id, info.Error, info.ErrorCode)
			}
			mu.Lock()
			by := map[string]int{}
			for _, id := range ids {
				require.Len(t, ran[id], 1, "task %s ran on %v", id, ran[id])
				by[ran[id][0]]++
			}
			mu.Unlock()
			t.Logf("tasks run per manager: %v", by)
			n, err := newStore.Count(ctx(t), apcore.StatusCompleted)
			require.NoError(t, err)
			assert.Equal(t, len(ids), n, "the counts stay exact")
			n, err = newStore.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			assert.Zero(t, n)
		})
	}
}
