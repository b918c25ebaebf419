// Command quickstart shows the apcore task manager at work: four modules
// (quick, slow, flaky, broken) are submitted, every state change is printed
// as it happens, the slow one is cancelled, and a table of the tasks ends the
// run. It takes about a second.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/apcore-go/apcore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// greeting is demo.quick's input.
type greeting struct {
	Name string `json:"name"`
}

func run() error {
	ctx := context.Background()
	reg := apcore.NewRegistry()
	// Returns at once. Typed hands it its inputs as a struct, the same way
	// on every store.
	if err := reg.Register("demo.quick", apcore.Typed(func(ctx context.Context, in greeting) (string, error) {
		return "hello, " + in.Name, nil
	})); err != nil {
		return err
	}
	var flakyCalls atomic.Int32
	// The others take the inputs map as it comes (apcore.ModuleFunc).
	modules := map[string]apcore.ModuleFunc{
		// Would take a minute; it watches ctx, so a cancel stops it.
		"demo.slow": func(ctx context.Context, in map[string]any) (any, error) {
			select {
			case <-time.After(time.Minute):
				return "finished", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		// Fails twice, then works: retried with backoff.
		"demo.flaky": func(ctx context.Context, in map[string]any) (any, error) {
			if flakyCalls.Add(1) <= 2 {
				return nil, errors.New("upstream timed out")
			}
			return map[string]any{"rows": 128}, nil
		},
		// Fails for good: Permanent skips the retries it was given.
		"demo.broken": func(ctx context.Context, in map[string]any) (any, error) {
			return nil, apcore.Permanent(errors.New("input file is corrupt"))
		},
	}
	for id, fn := range modules {
		if err := reg.Register(id, fn); err != nil {
			return err
		}
	}

	start := time.Now()
	var mu sync.Mutex
	printChange := func(info apcore.TaskInfo) {
		mu.Lock()
		defer mu.Unlock()
		line := fmt.Sprintf("%6.0fms  %-12s %-9s", float64(time.Since(start).Microseconds())/1000, info.ModuleID, info.Status)
		if info.RetryCount > 0 {
			line += fmt.Sprintf(" retry %d/%d", info.RetryCount, info.MaxRetries)
		}
		if info.Error != "" {
			line += "  error: " + info.Error
		}
		fmt.Println(line)
	}

	mgr, err := apcore.NewTaskManager(reg, apcore.WithMaxConcurrent(2), apcore.WithObserver(printChange))
	if err != nil {
		return err
	}
	defer mgr.Shutdown(ctx)

	retry := apcore.WithRetry(apcore.RetryConfig{MaxRetries: 3, RetryDelay: 100 * time.Millisecond, BackoffMultiplier: 2})
	submit := func(module string, opts ...apcore.SubmitOption) (string, error) {
		return mgr.Submit(ctx, module, map[string]any{"name": "gopher"}, opts...)
	}
	slow, err := submit("demo.slow")
	if err != nil {
		return err
	}
	var ids []string
	for _, spec := range []struct {
		module string
		opts   []apcore.SubmitOption
	}{{"demo.quick", nil}, {"demo.flaky", []apcore.SubmitOption{retry}}, {"demo.broken", []apcore.SubmitOption{retry}}} {
		id, err := submit(spec.module, spec.opts...)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}

	// Let the slow task run a little, then cancel it.
	time.Sleep(300 * time.Millisecond)
	if _, err := mgr.Cancel(ctx, slow); err != nil {
		return err
	}
	for _, id := range append(ids, slow) {
		if _, err := mgr.Wait(ctx, id); err != nil {
			return err
		}
	}

	all, err := mgr.List(ctx, "")
	if err != nil {
		return err
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TASK\tMODULE\tSTATUS\tRETRIES\tRAN FOR\tRESULT / ERROR")
	for _, t := range all {
		outcome := fmt.Sprint(t.Result)
		if t.Error != "" {
			outcome = t.Error
		} else if t.Result == nil {
			outcome = "-"
		}
		ran := "-"
		if !t.StartedAt.IsZero() {
			ran = t.CompletedAt.Sub(t.StartedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", t.TaskID[:8], t.ModuleID, t.Status, t.RetryCount, t.MaxRetries, ran, outcome)
	}
	return w.Flush()
}
