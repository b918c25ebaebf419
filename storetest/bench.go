package storetest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// BenchmarkManager measures a task manager over a store: each iteration
// submits tasks no-op tasks (max_concurrent 16), waits for each, and shuts
// the manager down. It reports tasks/s and store calls per task
// (calls/task: with a network store, each call is a round trip). newStore
// returns a fresh, empty store for each iteration.
func BenchmarkManager(b *testing.B, newStore func() (apcore.TaskStore, error), tasks int) {
	ctx := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		b.Fatal(err)
	}
	var calls atomic.Int64
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		inner, err := newStore()
		if err != nil {
			b.Fatal(err)
		}
		store := counted(inner, &calls)
		m, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(16), apcore.WithMaxTasks(tasks+10))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		b.StartTimer()
		ids := make([]string, tasks)
		for i := range ids {
			if ids[i], err = m.Submit(ctx, "bench.noop", nil); err != nil {
				b.Fatal(err)
			}
		}
		for _, id := range ids {
			if info, err := m.Wait(ctx, id); err != nil || info.Status != apcore.StatusCompleted {
				b.Fatalf("task %s: %s %v", id, info.Status, err)
			}
		}
		if err := m.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		elapsed += time.Since(start)
		b.StartTimer()
	}
	total := float64(b.N * tasks)
	b.ReportMetric(total/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(calls.Load())/total, "calls/task")
}

// counted wraps a store and counts its calls, keeping its optional
// interfaces.
func counted(s apcore.TaskStore, n *atomic.Int64) apcore.TaskStore {
	base := &countingStore{s: s, n: n}
	c, isCounter := s.(apcore.Counter)
	cs, isCAS := s.(apcore.ConditionalSaver)
	shared, isShared := s.(apcore.SharedStore)
	switch {
	case isShared && isCounter:
		return &countingShared{countingFull: &countingFull{countingStore: base, c: c, cs: cs}, sh: shared}
	case isCounter && isCAS:
		return &countingFull{countingStore: base, c: c, cs: cs}
	case isCAS:
		return &countingCAS{countingStore: base, cs: cs}
	case isCounter:
		return &countingCounter{countingStore: base, c: c}
	}
	return base
}

type countingStore struct {
	s apcore.TaskStore
	n *atomic.Int64
}

func (c *countingStore) Save(ctx context.Context, t apcore.TaskInfo) error {
	c.n.Add(1)
	return c.s.Save(ctx, t)
}
func (c *countingStore) Get(ctx context.Context, id string) (apcore.TaskInfo, error) {
	c.n.Add(1)
	return c.s.Get(ctx, id)
}
func (c *countingStore) List(ctx context.Context, st apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	c.n.Add(1)
	return c.s.List(ctx, st)
}
func (c *countingStore) Delete(ctx context.Context, id string) error {
	c.n.Add(1)
	return c.s.Delete(ctx, id)
}
func (c *countingStore) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	c.n.Add(1)
	return c.s.ListExpired(ctx, before)
}
func (c *countingStore) Name() string { return c.s.Name() }

type countingCounter struct {
	*countingStore
	c apcore.Counter
}

func (c *countingCounter) Count(ctx context.Context, st ...apcore.TaskStatus) (int, error) {
	c.n.Add(1)
	return c.c.Count(ctx, st...)
}

type countingCAS struct {
	*countingStore
	cs apcore.ConditionalSaver
}

func (c *countingCAS) SaveIf(ctx context.Context, t apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	c.n.Add(1)
	return c.cs.SaveIf(ctx, t, from...)
}

type countingFull struct {
	*countingStore
	c  apcore.Counter
	cs apcore.ConditionalSaver
}

func (c *countingFull) Count(ctx context.Context, st ...apcore.TaskStatus) (int, error) {
	c.n.Add(1)
	return c.c.Count(ctx, st...)
}

func (c *countingFull) SaveIf(ctx context.Context, t apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	c.n.Add(1)
	return c.cs.SaveIf(ctx, t, from...)
}

// countingShared counts the calls of a SharedStore (that is also a
// Counter), and keeps its JSONStore and Remover answers.
type countingShared struct {
	*countingFull
	sh apcore.SharedStore
}

func (c *countingShared) Insert(ctx context.Context, t apcore.StoredTask, limit int) (bool, error) {
	c.n.Add(1)
	return c.sh.Insert(ctx, t, limit)
}

func (c *countingShared) Update(ctx context.Context, t apcore.StoredTask, holder string) (bool, error) {
	c.n.Add(1)
	return c.sh.Update(ctx, t, holder)
}

func (c *countingShared) Claim(ctx context.Context, req apcore.ClaimRequest) ([]apcore.StoredTask, error) {
	c.n.Add(1)
	return c.sh.Claim(ctx, req)
}

func (c *countingShared) Renew(ctx context.Context, req apcore.LeaseRequest) (bool, error) {
	c.n.Add(1)
	return c.sh.Renew(ctx, req)
}

func (c *countingShared) Release(ctx context.Context, owner string) error {
	c.n.Add(1)
	return c.sh.Release(ctx, owner)
}

func (c *countingShared) Recover(ctx context.Context, now time.Time) (int, error) {
	c.n.Add(1)
	return c.sh.Recover(ctx, now)
}

func (c *countingShared) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	c.n.Add(1)
	return c.sh.Lost(ctx, owner, ids)
}

func (c *countingShared) Orphans(ctx context.Context, q apcore.OrphanQuery) ([]apcore.TaskInfo, error) {
	c.n.Add(1)
	return c.sh.Orphans(ctx, q)
}

// KeepsJSON answers as the wrapped store does.
func (c *countingShared) KeepsJSON() bool {
	js, ok := c.sh.(apcore.JSONStore)
	return ok && js.KeepsJSON()
}

// Remove uses the wrapped store's Remove, or its Delete.
func (c *countingShared) Remove(ctx context.Context, id string) (bool, error) {
	c.n.Add(1)
	if r, ok := c.sh.(apcore.Remover); ok {
		return r.Remove(ctx, id)
	}
	return true, c.sh.Delete(ctx, id)
}
