package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
)

// benchThroughput runs tasks no-op tasks through one manager over a fresh
// store (max_concurrent 100, one submitter that submits them all, then
// waits for each) and reports tasks/s.
func benchThroughput(b *testing.B, newStore func() *sqlstore.Store, tasks int) {
	c := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		b.Fatal(err)
	}
	var elapsed time.Duration
	var calls, taskCalls atomic.Int64
	for b.Loop() {
		b.StopTimer()
		store := &countedStore{Store: newStore(), all: &calls, perTask: &taskCalls}
		m, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(100), apcore.WithMaxTasks(tasks+10))
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
	total := float64(b.N * tasks)
	b.ReportMetric(total/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(taskCalls.Load())/total, "task-calls/task")
	b.ReportMetric(float64(calls.Load())/total, "calls/task")
}

// countedStore counts the store calls the manager makes: all of them, and
// those of a task's own path (Insert, Update, Save, SaveIf, Count).
type countedStore struct {
	*sqlstore.Store
	all, perTask *atomic.Int64
}

func (c *countedStore) task() { c.all.Add(1); c.perTask.Add(1) }

func (c *countedStore) Insert(ctx context.Context, t apcore.StoredTask, limit int) (bool, error) {
	c.task()
	return c.Store.Insert(ctx, t, limit)
}
func (c *countedStore) Update(ctx context.Context, t apcore.StoredTask, holder string) (bool, error) {
	c.task()
	return c.Store.Update(ctx, t, holder)
}
func (c *countedStore) Save(ctx context.Context, t apcore.TaskInfo) error {
	c.task()
	return c.Store.Save(ctx, t)
}
func (c *countedStore) SaveIf(ctx context.Context, t apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	c.task()
	return c.Store.SaveIf(ctx, t, from...)
}
func (c *countedStore) Get(ctx context.Context, id string) (apcore.TaskInfo, error) {
	c.all.Add(1) // the benchmark's Wait of a task that has ended reads the store
	return c.Store.Get(ctx, id)
}
func (c *countedStore) Count(ctx context.Context, st ...apcore.TaskStatus) (int, error) {
	c.task()
	return c.Store.Count(ctx, st...)
}
func (c *countedStore) Claim(ctx context.Context, owner string, n int, now time.Time) ([]apcore.StoredTask, error) {
	c.all.Add(1)
	return c.Store.Claim(ctx, owner, n, now)
}
func (c *countedStore) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	c.all.Add(1)
	return c.Store.Lost(ctx, owner, ids)
}
func (c *countedStore) Renew(ctx context.Context, owner string, expires time.Time, create bool) (bool, error) {
	c.all.Add(1)
	return c.Store.Renew(ctx, owner, expires, create)
}
func (c *countedStore) Recover(ctx context.Context, now time.Time) (int, error) {
	c.all.Add(1)
	return c.Store.Recover(ctx, now)
}

// go test -run '^$' -bench Throughput -benchtime 1x: 10,000 no-op tasks,
// max_concurrent 100, through the store as the manager sees it.
func BenchmarkThroughputSQLiteFile(b *testing.B) {
	dir := b.TempDir()
	n := 0
	benchThroughput(b, func() *sqlstore.Store {
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
	benchThroughput(b, func() *sqlstore.Store {
		s, err := sqlstore.New(ctx(b), db, sqlstore.PostgreSQL, sqlstore.WithTable(freshTable(b, db)))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}, 10_000)
}
