// Command schedule shows tasks that run later, once, first and on a
// schedule: a report delayed by half a second, an invoice submitted twice
// under one unique key (the second Submit names the first task), urgent
// work that jumps a queue, and a heartbeat every second from a schedule
// that two managers sharing one store both added (each tick makes one
// task). It takes about three seconds.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout, 3); err != nil {
		fmt.Fprintln(os.Stderr, "schedule:", err)
		os.Exit(1)
	}
}

// job is the input of every module here.
type job struct {
	Name string `json:"name"`
}

// run shows each feature in turn, and lets the heartbeat tick ticks times.
func run(ctx context.Context, out io.Writer, ticks int) error {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	beats := make(chan string, 16)
	reg := apcore.NewRegistry()
	work := apcore.Typed(func(ctx context.Context, in job) (string, error) {
		say("  ran %s", in.Name)
		return in.Name, nil
	})
	beat := apcore.Typed(func(ctx context.Context, in job) (string, error) {
		if info, ok := apcore.TaskFromContext(ctx); ok {
			beats <- info.TaskID
		}
		return "beat", nil
	})
	if err := reg.Register("demo.work", work); err != nil {
		return err
	}
	if err := reg.Register("demo.beat", beat); err != nil {
		return err
	}
	// Two managers sharing one store, as two replicas of a service would.
	store := apcore.NewMemoryStore()
	a, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(1))
	if err != nil {
		return err
	}
	defer a.Shutdown(context.Background())
	b, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
	if err != nil {
		return err
	}
	defer b.Shutdown(context.Background())

	say("later: a report due in 500ms")
	id, err := a.Submit(ctx, "demo.work", map[string]any{"name": "report"}, apcore.WithDelay(500*time.Millisecond))
	if err != nil {
		return err
	}
	info, err := a.Status(ctx, id)
	if err != nil {
		return err
	}
	say("  %s, due %s", info.Status, info.RunAt.Format("15:04:05.000"))
	if info, err = a.Wait(ctx, id); err != nil {
		return err
	}
	say("  started %s", info.StartedAt.Format("15:04:05.000"))

	say("once: invoice 42 submitted twice, on two managers")
	first, err := a.Submit(ctx, "demo.work", map[string]any{"name": "invoice 42"}, apcore.WithUniqueKey("invoice-42"))
	if err != nil {
		return err
	}
	second, err := b.Submit(ctx, "demo.work", map[string]any{"name": "invoice 42"}, apcore.WithUniqueKey("invoice-42"))
	if !errors.Is(err, apcore.ErrDuplicateTask) || second != first {
		return fmt.Errorf("the second Submit: %q, %v; want the first task's id and ErrDuplicateTask", second, err)
	}
	say("  the second Submit returned the first task's id: %v", second == first)
	if _, err := a.Wait(ctx, first); err != nil {
		return err
	}

	say("first: urgent work jumps the queue of a busy manager")
	gate := make(chan struct{})
	if err := reg.Register("demo.busy", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		<-gate
		return nil, nil
	})); err != nil {
		return err
	}
	busy, err := a.Submit(ctx, "demo.busy", nil)
	if err != nil {
		return err
	}
	var queued []string
	for _, p := range []struct {
		name     string
		priority int
	}{{"routine 1", 0}, {"routine 2", 0}, {"urgent", 10}} {
		qid, err := a.Submit(ctx, "demo.work", map[string]any{"name": p.name}, apcore.WithPriority(p.priority))
		if err != nil {
			return err
		}
		queued = append(queued, qid)
	}
	close(gate)
	for _, qid := range append([]string{busy}, queued...) {
		if _, err := a.Wait(ctx, qid); err != nil {
			return err
		}
	}

	say("on a schedule: a heartbeat @every 1s, added on both managers")
	s := apcore.Schedule{Name: "demo.heartbeat", Spec: "@every 1s", ModuleID: "demo.beat", Options: []apcore.SubmitOption{apcore.WithResumable()}}
	if err := a.AddSchedule(s); err != nil {
		return err
	}
	if err := b.AddSchedule(s); err != nil {
		return err
	}
	seen := map[string]bool{}
	for len(seen) < ticks {
		select {
		case tid := <-beats:
			if seen[tid] {
				return fmt.Errorf("task %s ran twice", tid)
			}
			seen[tid] = true
			info, err := a.Status(ctx, tid)
			if err != nil {
				return err
			}
			say("  tick %s made one task, key %s", info.SubmittedAt.Format("15:04:05"), info.UniqueKey)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	a.RemoveSchedule(s.Name)
	b.RemoveSchedule(s.Name)
	return nil
}
