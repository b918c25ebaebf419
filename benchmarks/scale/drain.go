package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apcore-go/apcore"
)

// drainResult is one backlog drained from a shared MemoryStore.
type drainResult struct {
	n        int
	submit   time.Duration // submitting the backlog (not a figure of the table)
	took     time.Duration // from the drainers' start to the last task's end
	done     int           // tasks that ended
	timedOut bool          // the drain ran past -drain-timeout: took is a lower bound
}

// perTask is the drain's time per task.
func (d drainResult) perTask() time.Duration { return d.took / time.Duration(max(d.done, 1)) }

// drainers and drainSlots are the managers that drain a backlog and the
// modules each runs at once.
const (
	drainers   = 2
	drainSlots = 16
)

// measureDrain queues n resumable no-op tasks in a MemoryStore through a
// manager with no slot (WithMaxConcurrent(0)), so that they wait in the
// store for a manager to claim them; then starts two managers of 16 slots
// each on the store and times them until every task has ended.
func (c *config) measureDrain(ctx context.Context, n int) (r drainResult, err error) {
	r.n = n
	store := apcore.NewMemoryStore()
	reg := registry()
	submitter, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(0),
		apcore.WithMaxTasks(n+100), apcore.WithLogger(c.log))
	if err != nil {
		return r, err
	}
	var managers []*apcore.TaskManager
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, m := range append(managers, submitter) {
			if serr := m.Shutdown(sctx); err == nil && serr != nil {
				err = fmt.Errorf("shutdown: %w", serr)
			}
		}
	}()

	began := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	const submitters = 4
	for w := range submitters {
		wg.Go(func() {
			for i := w; i < n; i += submitters {
				if _, err := submitter.Submit(ctx, noopModule, map[string]any{"i": i}, apcore.WithResumable()); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	r.submit = time.Since(began)
	if err := failed.Load(); err != nil {
		return r, *err
	}
	waiting, err := store.Count(ctx, apcore.StatusPending)
	if err != nil {
		return r, err
	}
	if waiting != n {
		return r, fmt.Errorf("%d tasks wait in the store after %d submits", waiting, n)
	}

	runtime.GC()
	var ended atomic.Int64
	all := make(chan struct{})
	observe := func(info apcore.TaskInfo) {
		if info.Status.IsTerminal() && ended.Add(1) == int64(n) {
			close(all)
		}
	}
	began = time.Now()
	for range drainers {
		m, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(drainSlots),
			apcore.WithMaxTasks(n+100), apcore.WithLogger(c.log), apcore.WithObserver(observe))
		if err != nil {
			return r, err
		}
		managers = append(managers, m)
	}
	select {
	case <-all:
	case <-time.After(c.drainTimeout):
		r.timedOut = true
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.took = time.Since(began)
	r.done = int(ended.Load())
	completed, err := store.Count(ctx, apcore.StatusCompleted)
	if err != nil {
		return r, err
	}
	if !r.timedOut && completed != n {
		return r, fmt.Errorf("%d of %d tasks completed", completed, n)
	}
	c.logf("  memory   backlog %7d: submitted in %.1f s, drained in %.2f s%s (%v per task)\n", n, r.submit.Seconds(),
		r.took.Seconds(), map[bool]string{true: " (timed out)"}[r.timedOut], r.perTask())
	return r, nil
}
