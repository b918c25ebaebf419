package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/apcore-go/apcore/storetest"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sqliteDSN opens a file database the way a service should: WAL, a busy
// timeout so concurrent writers wait rather than fail.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
}

func openSQLite(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(path))
	require.NoError(t, err)
	db.SetMaxIdleConns(32) // as many as the manager's workers, or connections churn
	t.Cleanup(func() { db.Close() })
	return db
}

func openMemory(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", ":memory:")
	require.NoError(t, err)
	db.SetMaxOpenConns(1) // each connection to :memory: is a database of its own
	t.Cleanup(func() { db.Close() })
	return db
}

// postgres returns a connection to the test server that scripts/test.sh
// starts. Without one the test fails: these tests are about the real server.
func postgres(t testing.TB) *sql.DB {
	t.Helper()
	dsn := os.Getenv("APCORE_TEST_POSTGRES")
	if dsn == "" {
		t.Fatal("APCORE_TEST_POSTGRES is not set: run ./scripts/test.sh, which starts a PostgreSQL server, or point it at one")
	}
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	db.SetMaxIdleConns(32) // as many as the manager's workers, or connections churn
	t.Cleanup(func() { db.Close() })
	require.NoError(t, db.PingContext(context.Background()), "the PostgreSQL test server is not reachable")
	return db
}

var tableSeq atomic.Int64

// freshTable returns a table name no other test uses, and drops it at the end.
func freshTable(t testing.TB, db *sql.DB) string {
	name := fmt.Sprintf("apcore_test_%d_%d", os.Getpid(), tableSeq.Add(1))
	t.Cleanup(func() { dropTable(db, name) })
	return name
}

// dropTable drops a table and what New made beside it.
func dropTable(db *sql.DB, name string) {
	for _, stmt := range []string{
		"DROP TABLE IF EXISTS " + name,
		"DROP TABLE IF EXISTS " + name + "_leases",
		"DROP TABLE IF EXISTS " + name + "_active",
		"DROP TABLE IF EXISTS " + name + "_slots",
		"DROP TABLE IF EXISTS " + name + "_schema_version",
		"DROP FUNCTION IF EXISTS " + name + "_count_active()",
		"DROP FUNCTION IF EXISTS " + name + "_slot_count()",
		"DROP FUNCTION IF EXISTS " + name + "_slot_born()",
		"DROP FUNCTION IF EXISTS " + name + "_slot_gone()",
		"DROP FUNCTION IF EXISTS " + name + "_admit(bigint)",
	} {
		_, _ = db.Exec(stmt)
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // SQLite is slow under -race
	t.Cleanup(cancel)
	return c
}

func TestSQLiteFileContract(t *testing.T) {
	dir := t.TempDir()
	n := 0
	storetest.Run(t, func() (apcore.TaskStore, error) {
		n++
		return sqlstore.New(ctx(t), openSQLite(t, filepath.Join(dir, fmt.Sprintf("s%d.db", n))), sqlstore.SQLite)
	})
}

// TestSQLiteMemoryContract runs the checks through storetest.TestStore,
// which reports them as one error, as a caller without a *testing.T would.
func TestSQLiteMemoryContract(t *testing.T) {
	err := storetest.TestStore(ctx(t), func() (apcore.TaskStore, error) {
		return sqlstore.New(ctx(t), openMemory(t), sqlstore.SQLite)
	})
	require.NoError(t, err)
}

func TestPostgresContract(t *testing.T) {
	db := postgres(t)
	storetest.Run(t, func() (apcore.TaskStore, error) {
		return sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(t, db)))
	})
}

// The store's fixed queries (sqlstore.ExplainMethods: the reads and
// writes of one record by id, List by state, Count, ListExpired, the hot
// shared queries, the pages and the sweep) are index lookups or scans,
// never full scans of the table, on an empty table; TestPlansAtAMillionRows
// checks PostgreSQL's plans at a million records.
func TestQueryPlansUseIndexes(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		s, err := sqlstore.New(ctx(t), openMemory(t), sqlstore.SQLite)
		require.NoError(t, err)
		checkSQLitePlans(t, s)
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		db := postgres(t)
		// One connection, so that the planner setting below applies to Explain.
		conn := db
		conn.SetMaxOpenConns(1)
		defer conn.SetMaxOpenConns(0)
		table := freshTable(t, db)
		s, err := sqlstore.New(ctx(t), conn, sqlstore.PostgreSQL, sqlstore.WithTable(table))
		require.NoError(t, err)
		defer s.Close()
		// An empty table is cheaper to scan than to look up; tell the planner
		// to avoid sequential scans where it can, which shows the index fits.
		_, err = conn.Exec("SET enable_seqscan = off")
		require.NoError(t, err)
		defer conn.Exec("SET enable_seqscan = on") //nolint:errcheck
		for _, method := range sqlstore.ExplainMethods {
			plan, err := s.Explain(ctx(t), method)
			require.NoError(t, err)
			t.Logf("%s:\n%s", method, plan)
			assert.NotContains(t, plan, "Seq Scan on "+table+" ", method)
			want := pgIndexes[method]
			if len(want) == 0 {
				continue
			}
			assert.Regexp(t, "Index (Only )?Scan (using|on) "+table+"_("+strings.Join(want, "|")+") ", plan, method)
		}
	})
}

// sqliteIndexes are what SQLite's plan of each query must search the
// tasks table by (a regular expression).
var sqliteIndexes = map[string]string{
	"Get": "INDEX sqlite_autoindex_apcore_tasks_1", "SaveIf": "INDEX sqlite_autoindex_apcore_tasks_1",
	"Remove": "INDEX sqlite_autoindex_apcore_tasks_1", "Update": "INDEX sqlite_autoindex_apcore_tasks_1",
	"Lost":         "INDEX sqlite_autoindex_apcore_tasks_1",
	"ListByStatus": "(COVERING )?INDEX apcore_tasks_status_seq", "Count": "(COVERING )?INDEX apcore_tasks_status_seq",
	"ListExpired": "(COVERING )?INDEX apcore_tasks_sweep",
	"Claim":       "(COVERING )?INDEX apcore_tasks_claim", "ClaimModules": "(COVERING )?INDEX apcore_tasks_claim_module",
	"Recover": "(COVERING )?INDEX apcore_tasks_held", "Orphans": "(COVERING )?INDEX apcore_tasks_held",
	"ListPage": "INTEGER PRIMARY KEY", "ListPageNewest": "INTEGER PRIMARY KEY",
	"ListPageStatus": "(COVERING )?INDEX apcore_tasks_status_seq", "ListPageStatusNewest": "(COVERING )?INDEX apcore_tasks_status_seq",
	"Sweep": "(COVERING )?INDEX apcore_tasks_sweep",
	// the count's one row, not the tasks table
	"Insert": "", "CountActive": "", "CountTerminal": "", "CountAll": "", "InsertUnique": "",
	"UniqueHolder": "(COVERING )?INDEX apcore_tasks_unique_key", "Promote": "(COVERING )?INDEX apcore_tasks_scheduled",
}

// checkSQLitePlans checks that SQLite searches the tasks table by the
// index sqliteIndexes names for each query, and never scans it.
func checkSQLitePlans(t *testing.T, s *sqlstore.Store) {
	for _, method := range sqlstore.ExplainMethods {
		plan, err := s.Explain(ctx(t), method)
		require.NoError(t, err)
		t.Logf("%s: %s", method, strings.ReplaceAll(plan, "\n", "; "))
		want, ok := sqliteIndexes[method]
		require.True(t, ok, "sqliteIndexes has no entry for %s", method)
		if want != "" {
			assert.Regexp(t, `(SEARCH|SCAN) apcore_tasks USING `+want, plan, method)
		}
		// A scan only of the claim index, which holds the ready records
		// in the claim's order (the LIMIT stops it), or of the held index,
		// which holds the records that managers run (few).
		for _, line := range strings.Split(plan, "\n") {
			if line == "SCAN apcore_tasks" || strings.HasPrefix(line, "SCAN apcore_tasks ") {
				assert.Regexp(t, `^SCAN apcore_tasks USING (COVERING )?INDEX apcore_tasks_(claim|held)$`, line, method)
			}
		}
	}
}

func TestUnreachableDatabase(t *testing.T) {
	db, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	require.NoError(t, err)
	defer db.Close()
	_, err = sqlstore.New(ctx(t), db, sqlstore.PostgreSQL)
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	assert.NotNil(t, errors.Unwrap(err), "the driver's error is kept")

	closed := openMemory(t)
	s, err := sqlstore.New(ctx(t), closed, sqlstore.SQLite)
	require.NoError(t, err)
	require.NoError(t, closed.Close())
	_, err = s.Get(ctx(t), "x")
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	assert.Contains(t, err.Error(), "database is closed")
	_, err = s.Count(ctx(t))
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
}

func TestCancelledContextAbortsTheQuery(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) (*sqlstore.Store, error){
		"SQLite": func(t *testing.T) (*sqlstore.Store, error) {
			return sqlstore.New(ctx(t), openMemory(t), sqlstore.SQLite)
		},
		"PostgreSQL": func(t *testing.T) (*sqlstore.Store, error) {
			db := postgres(t)
			return sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(t, db)))
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := open(t)
			require.NoError(t, err)
			c, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = s.List(c, "")
			require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
			require.ErrorIs(t, err, context.Canceled)
			err = s.Save(c, apcore.TaskInfo{TaskID: "x", ModuleID: "a.b", Status: apcore.StatusPending})
			require.ErrorIs(t, err, context.Canceled)
			_, err = s.Get(ctx(t), "x")
			require.ErrorIs(t, err, apcore.ErrTaskNotFound, "the cancelled save wrote nothing")
		})
	}
}

// Several processes starting at once must all get a working table.
func TestConcurrentCreation(t *testing.T) {
	run := func(t *testing.T, newStore func() (*sqlstore.Store, error)) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := newStore()
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	t.Run("SQLite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "race.db")
		// The file is switched to WAL once, first: eight connections that
		// each switch a new file's journal mode at once can fail with
		// SQLITE_BUSY whatever the busy timeout, and that is not the
		// creation race this test is about.
		first := openSQLite(t, path)
		require.NoError(t, first.PingContext(ctx(t)))
		run(t, func() (*sqlstore.Store, error) {
			db, err := sql.Open("sqlite", sqliteDSN(path))
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { db.Close() })
			return sqlstore.New(ctx(t), db, sqlstore.SQLite)
		})
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		dsn := os.Getenv("APCORE_TEST_POSTGRES")
		db := postgres(t)
		table := freshTable(t, db)
		run(t, func() (*sqlstore.Store, error) {
			own, err := sql.Open("pgx", dsn) // a pool each, like separate processes
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { own.Close() })
			return sqlstore.New(ctx(t), own, sqlstore.PostgreSQL, sqlstore.WithTable(table))
		})
	})
}

func TestBadInput(t *testing.T) {
	db := openMemory(t)
	var nilCtx context.Context
	for name, call := range map[string]func() error{
		"nil ctx":         func() error { _, err := sqlstore.New(nilCtx, db, sqlstore.SQLite); return err },
		"nil db":          func() error { _, err := sqlstore.New(ctx(t), nil, sqlstore.SQLite); return err },
		"unknown dialect": func() error { _, err := sqlstore.New(ctx(t), db, sqlstore.Dialect(9)); return err },
		"nil option":      func() error { _, err := sqlstore.New(ctx(t), db, sqlstore.SQLite, nil); return err },
		"table injection": func() error {
			_, err := sqlstore.New(ctx(t), db, sqlstore.SQLite, sqlstore.WithTable("t; DROP TABLE x"))
			return err
		},
		"empty table": func() error { _, err := sqlstore.New(ctx(t), db, sqlstore.SQLite, sqlstore.WithTable("")); return err },
		"unencodable result": func() error {
			s, err := sqlstore.New(ctx(t), db, sqlstore.SQLite)
			if err != nil {
				return err
			}
			return s.Save(ctx(t), apcore.TaskInfo{TaskID: "x", Status: apcore.StatusCompleted, Result: make(chan int)})
		},
	} {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, call(), apcore.ErrInvalidInput)
		})
	}
	s, err := sqlstore.New(ctx(t), db, sqlstore.SQLite)
	require.NoError(t, err)
	assert.Equal(t, "SqlTaskStore", s.Name())
	assert.Equal(t, "apcore_tasks", s.Table())
	assert.Equal(t, "PostgreSQL", sqlstore.PostgreSQL.String())
	_, err = s.Explain(ctx(t), "Nope")
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	assert.True(t, s.KeepsJSON())
	assert.NoError(t, s.Close())
}

// Two managers on one store, as two replicas of a service: each sees the
// other's tasks, and a cancel through one beats the other's late result.
func TestTwoManagersShareOneStore(t *testing.T) {
	t.Run("PostgreSQL", func(t *testing.T) {
		db := postgres(t)
		s, err := sqlstore.New(ctx(t), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(t, db)))
		require.NoError(t, err)
		require.NoError(t, storetest.TestReplicas(ctx(t), s))
	})
	t.Run("SQLite", func(t *testing.T) {
		s, err := sqlstore.New(ctx(t), openSQLite(t, filepath.Join(t.TempDir(), "shared.db")), sqlstore.SQLite)
		require.NoError(t, err)
		require.NoError(t, storetest.TestReplicas(ctx(t), s))
	})
}

// go test -run '^$' -bench . -benchtime 1x: 10,000 no-op tasks per store.
func BenchmarkManagerSQLiteFile(b *testing.B) {
	dir := b.TempDir()
	n := 0
	storetest.BenchmarkManager(b, func() (apcore.TaskStore, error) {
		n++
		return sqlstore.New(ctx(b), openSQLite(b, filepath.Join(dir, fmt.Sprintf("b%d.db", n))), sqlstore.SQLite)
	}, 10_000)
}

func BenchmarkManagerPostgreSQL(b *testing.B) {
	db := postgres(b)
	storetest.BenchmarkManager(b, func() (apcore.TaskStore, error) {
		return sqlstore.New(ctx(b), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(b, db)))
	}, 10_000)
}
