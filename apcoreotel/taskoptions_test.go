package apcoreotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcoreotel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// An attempt's span carries the task's run_at (RFC 3339, UTC, to the
// microsecond), unique key and priority when the task has them, and none
// of the three when it has none.
func TestSpanTaskOptions(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	reg := apcore.NewRegistry()
	if err := reg.Register("m", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) { return 1, nil })); err != nil {
		t.Fatal(err)
	}
	mgr, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(reg, apcoreotel.WithTracerProvider(tp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	ctx := context.Background()
	const key = "order 42 <é> \"&\""
	runAt := time.Now().Add(200 * time.Millisecond)
	later, err := mgr.Submit(ctx, "m", nil, apcore.WithRunAt(runAt), apcore.WithUniqueKey(key), apcore.WithPriority(-5))
	if err != nil {
		t.Fatal(err)
	}
	first, err := mgr.Submit(ctx, "m", nil, apcore.WithPriority(100))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := mgr.Submit(ctx, "m", nil)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]apcore.TaskInfo{}
	for _, id := range []string{later, first, plain} {
		info, err := mgr.Wait(ctx, id)
		if err != nil || info.Status != apcore.StatusCompleted {
			t.Fatalf("Wait(%s): %+v, %v", id, info, err)
		}
		records[id] = info
	}
	spans := map[string]sdktrace.ReadOnlySpan{}
	deadline := time.Now().Add(5 * time.Second)
	for len(spans) < 3 && time.Now().Before(deadline) {
		for _, s := range rec.Ended() {
			if v, ok := attr(s, apcoreotel.AttrTaskID); ok {
				spans[v.AsString()] = s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(spans) != 3 {
		t.Fatalf("%d attempt spans, want 3", len(spans))
	}

	s := spans[later]
	v, ok := attr(s, apcoreotel.AttrRunAt)
	if !ok || v.Type() != attribute.STRING {
		t.Fatalf("the scheduled task's span has no string %s: %v", apcoreotel.AttrRunAt, s.Attributes())
	}
	at, err := time.Parse(time.RFC3339Nano, v.AsString())
	if want := records[later].RunAt; err != nil || want == nil || !at.Equal(*want) || !at.Equal(time.UnixMicro(runAt.UnixMicro())) || at.Location() != time.UTC {
		t.Errorf("%s = %q (%v); want %v in UTC", apcoreotel.AttrRunAt, v.AsString(), err, want)
	}
	if len(v.AsString()) != len("2006-01-02T15:04:05.000000Z") {
		t.Errorf("%s = %q; want RFC 3339 to the microsecond", apcoreotel.AttrRunAt, v.AsString())
	}
	if v, _ := attr(s, apcoreotel.AttrUniqueKey); v.AsString() != key {
		t.Errorf("%s = %q, want %q", apcoreotel.AttrUniqueKey, v.AsString(), key)
	}
	if v, ok := attr(s, apcoreotel.AttrPriority); !ok || v.Type() != attribute.INT64 || v.AsInt64() != -5 {
		t.Errorf("%s = %v, want -5", apcoreotel.AttrPriority, v.String())
	}
	if v, _ := attr(spans[first], apcoreotel.AttrPriority); v.AsInt64() != 100 {
		t.Errorf("priority 100: %s = %v", apcoreotel.AttrPriority, v.String())
	}
	for id, keys := range map[string][]attribute.Key{
		plain: {apcoreotel.AttrRunAt, apcoreotel.AttrUniqueKey, apcoreotel.AttrPriority},
		first: {apcoreotel.AttrRunAt, apcoreotel.AttrUniqueKey},
	} {
		for _, k := range keys {
			if v, ok := attr(spans[id], k); ok {
				t.Errorf("a task without it has %s = %v", k, v.String())
			}
		}
	}
}

// The queue wait of a task submitted WithDelay counts from its run_at:
// waiting for its time is no queue wait.
func TestQueueWaitFromRunAt(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	reg := apcore.NewRegistry()
	if err := reg.Register("m", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) { return 1, nil })); err != nil {
		t.Fatal(err)
	}
	mgr, err := apcore.NewTaskManager(reg)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	stop, err := apcoreotel.Instrument(mgr, apcoreotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seen := observed(t, mgr)
	ctx := context.Background()
	const delay = 600 * time.Millisecond
	id, err := mgr.Submit(ctx, "m", nil, apcore.WithDelay(delay))
	if err != nil {
		t.Fatal(err)
	}
	info, err := mgr.Wait(ctx, id)
	if err != nil || info.StartedAt.Sub(info.SubmittedAt) < delay {
		t.Fatalf("Wait: %+v, %v; want a start %v after the submission", info, err, delay)
	}
	seen(id, info.Status, true)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == apcoreotel.MetricQueueWait {
				for _, p := range h.DataPoints {
					count += p.Count
					sum += p.Sum
				}
			}
		}
	}
	if want := info.StartedAt.Sub(*info.RunAt).Seconds(); count != 1 || sum > want+1e-9 || sum < want-1e-9 {
		t.Errorf("queue wait: %d recorded, sum %v s; want one, %v s (from run_at, not %v from the submission)", count, sum, want, info.StartedAt.Sub(info.SubmittedAt))
	}
}
