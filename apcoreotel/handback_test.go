package apcoreotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcoreotel"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A module that ignores its context and returns a result anyway: after
// its timeout, and after its task was cancelled. The task's record says
// failed MODULE_TIMEOUT and cancelled; the spans must say so too, not ok.
func TestSpanOutcomeFollowsTheRecord(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	exec := apcore.ExecutorFunc(func(ctx context.Context, moduleID string, _ map[string]any) (any, error) {
		started <- struct{}{}
		switch moduleID {
		case "late":
			<-ctx.Done() // the timeout; the module returns a result anyway
		case "stubborn":
			<-release // it does not look at its context at all
		}
		return "a result nobody asked for", nil
	})
	mgr, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(exec, apcoreotel.WithTracerProvider(tp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	ctx := context.Background()

	late, err := mgr.Submit(ctx, "late", nil, apcore.WithTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if info, err := mgr.Wait(ctx, late); err != nil || info.Status != apcore.StatusFailed || info.ErrorCode != apcore.CodeModuleTimeout {
		t.Fatalf("late: %+v, %v; want failed MODULE_TIMEOUT", info, err)
	}

	stubborn, err := mgr.Submit(ctx, "stubborn", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if ok, err := mgr.Cancel(ctx, stubborn); !ok || err != nil {
		t.Fatalf("Cancel: %v, %v", ok, err)
	}
	close(release)
	shutdown(t, mgr) // waits for the module, and so for the span's end
	if info, err := mgr.Status(ctx, stubborn); err != nil || info.Status != apcore.StatusCancelled {
		t.Fatalf("stubborn: %+v, %v; want cancelled", info, err)
	}

	want := map[string]struct {
		outcome string
		code    apcore.ErrorCode
	}{
		"apcore.attempt late":     {apcoreotel.OutcomeTimeout, apcore.CodeModuleTimeout},
		"apcore.attempt stubborn": {apcoreotel.OutcomeCancelled, apcore.CodeExecutionCancelled},
	}
	spans := rec.Ended()
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(spans), len(want))
	}
	for _, s := range spans {
		w := want[s.Name()]
		outcome, _ := attr(s, apcoreotel.AttrOutcome)
		code, _ := attr(s, apcoreotel.AttrErrorCode)
		if outcome.AsString() != w.outcome || code.AsString() != string(w.code) || s.Status().Code != codes.Error {
			t.Errorf("%s: outcome %q, code %q, status %v; want %q, %q, Error", s.Name(), outcome.AsString(), code.AsString(), s.Status(), w.outcome, w.code)
		}
	}
}

// activeGauge returns apcore.tasks.active per status, as reader collects it.
func activeGauge(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := sumOf(t, rm, apcoreotel.MetricActive)
	out := map[string]int64{}
	for _, st := range []string{"pending", "running"} {
		out[st] = sums[set(apcoreotel.AttrStatus.String(st))]
	}
	return out
}

// A manager's Drain hands a resumable task back to the store (the task
// ran; Drain cut it when its context ended), and another manager sharing
// the store runs it to the end. The drained manager saw it go from
// running to pending again, never its end: its apcore.tasks.active must
// not count it for ever.
func TestActiveAfterDrainHandsBack(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	store := apcore.NewMemoryStore()
	ctx := context.Background()

	running := make(chan string, 1)
	drained, err := apcore.NewTaskManager(apcore.ExecutorFunc(func(ctx context.Context, _ string, _ map[string]any) (any, error) {
		info, _ := apcore.TaskFromContext(ctx)
		running <- info.TaskID
		<-ctx.Done() // until Drain cuts it
		return nil, ctx.Err()
	}), apcore.WithStore(store), apcore.WithMaxConcurrent(1))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, drained)
	stop, err := apcoreotel.Instrument(drained, apcoreotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seen := observed(t, drained)

	first, err := drained.Submit(ctx, "job", nil, apcore.WithResumable())
	if err != nil {
		t.Fatal(err)
	}
	if id := <-running; id != first {
		t.Fatalf("running %s, want %s", id, first)
	}
	seen(first, apcore.StatusRunning, true)
	if got := activeGauge(t, reader); got["running"] != 1 || got["pending"] != 0 {
		t.Fatalf("before Drain: active %v, want 1 running", got)
	}
	// Drain waits for the running task until its context ends, then hands
	// it back.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := drained.Drain(dctx); err == nil {
		t.Fatal("Drain: nil, want its context's error (the running task was cut)")
	}
	seen(first, apcore.StatusPending, true) // handed back

	other, err := apcore.NewTaskManager(apcore.ExecutorFunc(func(context.Context, string, map[string]any) (any, error) {
		return "done elsewhere", nil
	}), apcore.WithStore(store))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, other)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if info, err := other.Wait(wctx, first); err != nil || info.Status != apcore.StatusCompleted || info.Result != "done elsewhere" {
		t.Fatalf("the other manager: %+v, %v; want completed there", info, err)
	}
	if got := activeGauge(t, reader); got["running"] != 0 || got["pending"] != 0 {
		t.Errorf("after the hand back and the other manager's run: the drained manager counts %v active, want none", got)
	}
}
