package sqlstore_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// backend opens stores over one shared table, each on a *sql.DB pool of
// its own, as separate processes would.
type backend struct {
	name    string
	dialect sqlstore.Dialect
	open    func(t testing.TB) *sqlstore.Store
	raw     func(t testing.TB) *sql.DB // a pool of its own on the same database
}

// backends returns a SQLite file and a PostgreSQL table, both fresh.
func backends(t *testing.T) []backend {
	path := filepath.Join(t.TempDir(), "shared.db")
	dsn := os.Getenv("APCORE_TEST_POSTGRES")
	table := freshTable(t, postgres(t))
	pg := func(t testing.TB) *sql.DB {
		db, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		db.SetMaxIdleConns(32)
		t.Cleanup(func() { db.Close() })
		return db
	}
	return []backend{
		{"SQLite", sqlstore.SQLite, func(t testing.TB) *sqlstore.Store {
			s, err := sqlstore.New(ctx(t), openSQLite(t, path), sqlstore.SQLite)
			require.NoError(t, err)
			return s
		}, func(t testing.TB) *sql.DB { return openSQLite(t, path) }},
		{"PostgreSQL", sqlstore.PostgreSQL, func(t testing.TB) *sqlstore.Store {
			s, err := sqlstore.New(ctx(t), pg(t), sqlstore.PostgreSQL, sqlstore.WithTable(table))
			require.NoError(t, err)
			return s
		}, pg},
	}
}

// manager starts a manager over store with reg, shut down at the end.
func manager(t testing.TB, reg *apcore.Registry, store apcore.TaskStore, opts ...apcore.Option) *apcore.TaskManager {
	t.Helper()
	m, err := apcore.NewTaskManager(reg, append([]apcore.Option{apcore.WithStore(store)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Shutdown(ctx(t)) })
	return m
}
