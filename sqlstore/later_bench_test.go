package sqlstore_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/apcore-go/apcore/storetest"
)

// go test -run '^$' -bench 'UniqueSubmit|ScheduledIdle' -benchtime 2000x:
// Submit with and without a unique key, side by side; the CPU of an idle
// manager while tasks due later wait, and how late tasks due soon start
// (ScheduledIdle runs once per b.N; use -benchtime 1x).
func BenchmarkUniqueSubmitSQLite(b *testing.B) {
	dir := b.TempDir()
	n := 0
	storetest.BenchmarkUniqueSubmit(b, func() (apcore.TaskStore, error) {
		n++
		return sqlstore.New(ctx(b), openSQLite(b, filepath.Join(dir, fmt.Sprintf("u%d.db", n))), sqlstore.SQLite)
	})
}

func BenchmarkUniqueSubmitPostgreSQL(b *testing.B) {
	db := postgres(b)
	storetest.BenchmarkUniqueSubmit(b, func() (apcore.TaskStore, error) {
		return sqlstore.New(ctx(b), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(b, db)))
	})
}

func BenchmarkScheduledIdleSQLite(b *testing.B) {
	dir := b.TempDir()
	for _, waiting := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			storetest.BenchmarkScheduledIdle(b, func() (apcore.TaskStore, error) {
				return sqlstore.New(ctx(b), openSQLite(b, filepath.Join(dir, fmt.Sprintf("s%d.db", waiting))), sqlstore.SQLite)
			}, waiting)
		})
	}
}

func BenchmarkScheduledIdlePostgreSQL(b *testing.B) {
	db := postgres(b)
	for _, waiting := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			storetest.BenchmarkScheduledIdle(b, func() (apcore.TaskStore, error) {
				return sqlstore.New(ctx(b), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(b, db)))
			}, waiting)
		})
	}
}
