package apcore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/apcore-go/apcore"
)

// The quick start: register a typed module, submit a call, wait for its
// result.
func Example() {
	type DoubleIn struct {
		N int `json:"n"`
	}
	ctx := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("math.double", apcore.Typed(
		func(ctx context.Context, in DoubleIn) (int, error) {
			return in.N * 2, nil
		})); err != nil {
		panic(err)
	}
	mgr, err := apcore.NewTaskManager(reg, apcore.WithMaxConcurrent(4))
	if err != nil {
		panic(err)
	}
	defer mgr.Shutdown(ctx)

	id, err := mgr.Submit(ctx, "math.double", map[string]any{"n": 21})
	if err != nil {
		panic(err)
	}
	info, err := mgr.Wait(ctx, id)
	if err != nil {
		panic(err)
	}
	n, err := apcore.ResultAs[int](info)
	fmt.Println(info.Status, n, err)
	// Output: completed 42 <nil>
}

// A typed module's inputs that do not fit its type fail the task at once,
// naming the field; the module is not called and nothing is retried.
func ExampleTyped() {
	type ResizeIn struct {
		Width  int    `json:"width"`
		Format string `json:"format"`
	}
	ctx := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("image.resize", apcore.Typed(
		func(ctx context.Context, in ResizeIn) (string, error) {
			return fmt.Sprintf("%d px %s", in.Width, in.Format), nil
		})); err != nil {
		panic(err)
	}
	mgr, err := apcore.NewTaskManager(reg)
	if err != nil {
		panic(err)
	}
	defer mgr.Shutdown(ctx)

	for _, inputs := range []map[string]any{
		{"width": 640, "format": "png"},
		{"width": "wide", "format": "png"},
	} {
		id, err := mgr.Submit(ctx, "image.resize", inputs, apcore.WithRetry(apcore.RetryConfig{MaxRetries: 3}))
		if err != nil {
			panic(err)
		}
		info, err := mgr.Wait(ctx, id)
		if err != nil {
			panic(err)
		}
		if info.Status == apcore.StatusCompleted {
			fmt.Println(info.Status, info.Result)
		} else {
			fmt.Println(info.Status, info.ErrorCode, info.Error, "after", info.RetryCount, "retries")
		}
	}
	// Output:
	// completed 640 px png
	// failed GENERAL_INVALID_INPUT inputs: field "width" is a JSON string, want int after 0 retries
}

// Wait blocks until the task is terminal, without polling; its context bounds
// how long the caller waits, not the task.
func ExampleTaskManager_Wait() {
	ctx := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("report.build", apcore.ModuleFunc(
		func(ctx context.Context, in map[string]any) (any, error) {
			select {
			case <-time.After(20 * time.Millisecond):
				return map[string]any{"pages": 3}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})); err != nil {
		panic(err)
	}
	mgr, _ := apcore.NewTaskManager(reg)
	defer mgr.Shutdown(ctx)

	id, _ := mgr.Submit(ctx, "report.build", nil)

	impatient, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_, err := mgr.Wait(impatient, id)
	fmt.Println("impatient wait:", errors.Is(err, context.DeadlineExceeded))

	info, _ := mgr.Wait(ctx, id)
	fmt.Println(info.Status, info.Result)
	// Output:
	// impatient wait: true
	// completed map[pages:3]
}

// A flaky module retried with exponential backoff: the third attempt works.
func ExampleWithRetry() {
	ctx := context.Background()
	var attempts atomic.Int32
	reg := apcore.NewRegistry()
	if err := reg.Register("net.fetch", apcore.ModuleFunc(
		func(ctx context.Context, in map[string]any) (any, error) {
			if attempts.Add(1) < 3 {
				return nil, errors.New("connection reset")
			}
			return "payload", nil
		})); err != nil {
		panic(err)
	}
	mgr, _ := apcore.NewTaskManager(reg)
	defer mgr.Shutdown(ctx)

	id, _ := mgr.Submit(ctx, "net.fetch", nil, apcore.WithRetry(apcore.RetryConfig{
		MaxRetries:        5,
		RetryDelay:        time.Millisecond, // then 2ms, 4ms, ... capped at MaxRetryDelay
		BackoffMultiplier: 2,
	}))
	info, _ := mgr.Wait(ctx, id)
	fmt.Println(info.Status, info.Result, "after", info.RetryCount, "retries")

	// Permanent errors are not retried.
	if err := reg.Register("net.validate", apcore.ModuleFunc(
		func(ctx context.Context, in map[string]any) (any, error) {
			return nil, apcore.Permanent(errors.New("bad url"))
		})); err != nil {
		panic(err)
	}
	id, _ = mgr.Submit(ctx, "net.validate", nil, apcore.WithRetry(apcore.RetryConfig{MaxRetries: 5}))
	info, _ = mgr.Wait(ctx, id)
	fmt.Println(info.Status, info.Error, "after", info.RetryCount, "retries")
	// Output:
	// completed payload after 2 retries
	// failed bad url after 0 retries
}

// Cancel stops a running task: its context is cancelled and its record is
// cancelled at once.
func ExampleTaskManager_Cancel() {
	ctx := context.Background()
	started := make(chan struct{})
	reg := apcore.NewRegistry()
	if err := reg.Register("video.encode", apcore.ModuleFunc(
		func(ctx context.Context, in map[string]any) (any, error) {
			close(started)
			<-ctx.Done() // a module must watch its context
			return nil, ctx.Err()
		})); err != nil {
		panic(err)
	}
	mgr, _ := apcore.NewTaskManager(reg)
	defer mgr.Shutdown(ctx)

	id, _ := mgr.Submit(ctx, "video.encode", nil)
	<-started
	ok, _ := mgr.Cancel(ctx, id)
	info, _ := mgr.Status(ctx, id)
	fmt.Println(ok, info.Status)

	ok, _ = mgr.Cancel(ctx, id)
	fmt.Println("second cancel:", ok)
	// Output:
	// true cancelled
	// second cancel: false
}
