package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
)

// benchThroughput runs tasks no-op tasks through one manager over a fresh
// store (max_concurrent 100, one submitter that submits them all, then
// waits for each) and reports tasks/s.
func benchThroughput(b *testing.B, newStore func() apcore.TaskStore, tasks int) {
	c := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		b.Fatal(err)
	}
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		m, err := apcore.NewTaskManager(reg, apcore.WithStore(newStore()), apcore.WithMaxConcurrent(100), apcore.WithMaxTasks(tasks+10))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		b.StartTimer()
		ids := make([]string, tasks)
		for i := range ids {
			if ids[i], err = m.Submit(c, "bench.noop", nil); err != nil {
				b.Fatal(err)
			}
		}
		for _, id := range ids {
			if info, err := m.Wait(c, id); err != nil || info.Status != apcore.StatusCompleted {
				b.Fatalf("task %s: %s %v", id, info.Status, err)
			}
		}
		b.StopTimer()
		elapsed += time.Since(start)
		if err := m.Shutdown(c); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*tasks)/elapsed.Seconds(), "tasks/s")
}

// go test -run '^$' -bench Throughput -benchtime 1x: 10,000 no-op tasks,
// max_concurrent 100, through the store as the manager sees it.
func BenchmarkThroughputSQLiteFile(b *testing.B) {
	dir := b.TempDir()
	n := 0
	benchThroughput(b, func() apcore.TaskStore {
		n++
		db := openSQLite(b, filepath.Join(dir, fmt.Sprintf("t%d.db", n)))
		db.SetMaxIdleConns(110)
		s, err := sqlstore.New(ctx(b), db, sqlstore.SQLite)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}, 10_000)
}

func BenchmarkThroughputPostgreSQL(b *testing.B) {
	db := postgres(b)
	db.SetMaxIdleConns(110)
	benchThroughput(b, func() apcore.TaskStore {
		s, err := sqlstore.New(ctx(b), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(b, db)))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}, 10_000)
}
