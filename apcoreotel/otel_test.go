package apcoreotel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcoreotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func shutdown(t *testing.T, mgr *apcore.TaskManager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mgr.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// A task that fails once and then succeeds makes two attempt spans, both
// children of the span around Submit, with the task's id, the attempt
// number and the outcome; the failed one records its error. A span the
// module starts nests under its attempt's.
func TestSpansPerAttempt(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	calls := 0
	reg := apcore.NewRegistry()
	if err := reg.Register("flaky", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		_, inner := tp.Tracer("module").Start(ctx, "module work")
		inner.End()
		calls++
		if calls == 1 {
			return nil, errors.New("first try fails")
		}
		return "ok", nil
	})); err != nil {
		t.Fatal(err)
	}
	mgr, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(reg, apcoreotel.WithTracerProvider(tp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)

	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	id, err := mgr.Submit(ctx, "flaky", nil, apcore.WithRetry(apcore.RetryConfig{MaxRetries: 2, RetryDelay: time.Millisecond}))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	info, err := mgr.Wait(context.Background(), id)
	if err != nil || info.Status != apcore.StatusCompleted {
		t.Fatalf("Wait: %+v, %v", info, err)
	}

	var attempts []sdktrace.ReadOnlySpan
	var inner []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "apcore.attempt flaky":
			attempts = append(attempts, s)
		case "module work":
			inner = append(inner, s)
		}
	}
	if len(attempts) != 2 || len(inner) != 2 {
		t.Fatalf("got %d attempt spans and %d module spans, want 2 and 2", len(attempts), len(inner))
	}
	for i, s := range attempts {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("attempt %d: parent %v, want the Submit span %v", i+1, s.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		if v, _ := attr(s, apcoreotel.AttrTaskID); v.AsString() != id {
			t.Errorf("attempt %d: task id %q, want %q", i+1, v.AsString(), id)
		}
		if v, _ := attr(s, apcoreotel.AttrModuleID); v.AsString() != "flaky" {
			t.Errorf("attempt %d: module id %q", i+1, v.AsString())
		}
		if v, _ := attr(s, apcoreotel.AttrAttempt); v.AsInt64() != int64(i+1) {
			t.Errorf("attempt %d: attempt attribute %d", i+1, v.AsInt64())
		}
		if inner[i].Parent().SpanID() != s.SpanContext().SpanID() {
			t.Errorf("module span %d does not nest under its attempt", i+1)
		}
	}
	if v, _ := attr(attempts[0], apcoreotel.AttrOutcome); v.AsString() != apcoreotel.OutcomeError {
		t.Errorf("first attempt outcome %q, want error", v.AsString())
	}
	if attempts[0].Status().Code != codes.Error || len(attempts[0].Events()) == 0 || attempts[0].Events()[0].Name != "exception" {
		t.Errorf("first attempt: status %v, events %v; want the error recorded", attempts[0].Status(), attempts[0].Events())
	}
	if v, _ := attr(attempts[1], apcoreotel.AttrOutcome); v.AsString() != apcoreotel.OutcomeOK {
		t.Errorf("second attempt outcome %q, want ok", v.AsString())
	}
	if attempts[1].Status().Code == codes.Error {
		t.Errorf("second attempt has status Error")
	}
}

// A timed-out attempt and a cancelled one are told apart.
func TestSpanOutcomes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	started := make(chan struct{}, 1)
	exec := apcore.ExecutorFunc(func(ctx context.Context, _ string, _ map[string]any) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	mgr, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(exec, apcoreotel.WithTracerProvider(tp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	ctx := context.Background()
	slow, err := mgr.Submit(ctx, "slow", nil, apcore.WithTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := mgr.Wait(ctx, slow); err != nil {
		t.Fatal(err)
	}
	victim, err := mgr.Submit(ctx, "victim", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if ok, err := mgr.Cancel(ctx, victim); !ok || err != nil {
		t.Fatalf("Cancel: %v, %v", ok, err)
	}
	// The span ends when the module returns, after Cancel: Shutdown waits.
	shutdown(t, mgr)
	want := map[string]string{"apcore.attempt slow": apcoreotel.OutcomeTimeout, "apcore.attempt victim": apcoreotel.OutcomeCancelled}
	got := map[string]string{}
	for _, s := range rec.Ended() {
		v, _ := attr(s, apcoreotel.AttrOutcome)
		got[s.Name()] = v.AsString()
	}
	for name, outcome := range want {
		if got[name] != outcome {
			t.Errorf("%s: outcome %q, want %q", name, got[name], outcome)
		}
	}
}

// A resumable task submitted on one manager and run by another (sharing a
// store) keeps its trace: the attempt's span, on the other manager, is a
// child of the submitter's span and links to it.
func TestCarrierAcrossReplicas(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	store := apcore.NewMemoryStore()
	carrier := apcoreotel.Carrier()
	ran := make(chan struct{}, 1)
	exec := apcore.ExecutorFunc(func(ctx context.Context, _ string, _ map[string]any) (any, error) {
		ran <- struct{}{}
		return 1, nil
	})
	// The submitter runs nothing (no slots): the runner must take it.
	submitter, err := apcore.NewTaskManager(exec, apcore.WithStore(store), apcore.WithMaxConcurrent(0), apcore.WithContextCarrier(carrier))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, submitter)
	runner, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(exec, apcoreotel.WithTracerProvider(tp)),
		apcore.WithStore(store), apcore.WithContextCarrier(carrier))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, runner)

	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	id, err := submitter.Submit(ctx, "remote.job", nil, apcore.WithResumable())
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	info, err := runner.Wait(context.Background(), id)
	if err != nil || info.Status != apcore.StatusCompleted {
		t.Fatalf("Wait: %+v, %v", info, err)
	}
	<-ran
	shutdown(t, runner)
	var span sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "apcore.attempt remote.job" {
			span = s
		}
	}
	if span == nil {
		t.Fatal("no attempt span")
	}
	psc := parent.SpanContext()
	if span.SpanContext().TraceID() != psc.TraceID() || span.Parent().SpanID() != psc.SpanID() || !span.Parent().IsRemote() {
		t.Errorf("attempt span: trace %v parent %v (remote %v); want trace %v parent %v, remote",
			span.SpanContext().TraceID(), span.Parent().SpanID(), span.Parent().IsRemote(), psc.TraceID(), psc.SpanID())
	}
	if links := span.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != psc.SpanID() {
		t.Errorf("links %v, want one to the submitter's span", links)
	}
	if v, _ := attr(span, apcoreotel.AttrTaskID); v.AsString() != id {
		t.Errorf("task id attribute %q, want %q", v.AsString(), id)
	}
}

// Without a trace in Submit's context the carrier stores nothing.
func TestCarrierEmpty(t *testing.T) {
	if m := apcoreotel.Carrier().Inject(context.Background()); m != nil {
		t.Errorf("Inject without a span: %v, want nil", m)
	}
}

func sumOf(t *testing.T, rm metricdata.ResourceMetrics, name string) map[attribute.Distinct]int64 {
	t.Helper()
	out := map[attribute.Distinct]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Equivalent()] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Equivalent()] += int64(p.Count)
				}
			default:
				t.Fatalf("%s: unexpected data %T", name, m.Data)
			}
		}
	}
	return out
}

func set(kv ...attribute.KeyValue) attribute.Distinct {
	s := attribute.NewSet(kv...)
	return s.Equivalent()
}

// Instrument counts submitted and finished tasks, attempts, queue waits,
// active tasks and progress reports.
func TestInstrument(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	release := make(chan struct{})
	running := make(chan struct{}, 1)
	reg := apcore.NewRegistry()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.Register("ok", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		must(apcore.ReportProgress(ctx, 50, "half"))
		must(apcore.ReportProgress(ctx, 100, "done"))
		return 1, nil
	})))
	must(reg.Register("bad", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		return nil, apcore.Permanent(errors.New("no"))
	})))
	must(reg.Register("hold", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		running <- struct{}{}
		<-release
		return nil, nil
	})))
	mgr, err := apcore.NewTaskManager(reg)
	must(err)
	defer shutdown(t, mgr)
	stop, err := apcoreotel.Instrument(mgr, apcoreotel.WithMeterProvider(mp))
	must(err)
	defer stop()
	// The observers may be called after Wait returns: wait for the
	// records to reach them instead.
	seen := observed(t, mgr)

	ctx := context.Background()
	for _, module := range []string{"ok", "ok", "bad"} {
		id, err := mgr.Submit(ctx, module, nil)
		must(err)
		info, err := mgr.Wait(ctx, id)
		must(err)
		seen(id, info.Status, true)
	}
	held, err := mgr.Submit(ctx, "hold", nil)
	must(err)
	<-running
	seen(held, apcore.StatusRunning, true)

	var rm metricdata.ResourceMetrics
	must(reader.Collect(ctx, &rm))
	mod := func(m string) attribute.KeyValue { return apcoreotel.AttrModuleID.String(m) }
	st := func(s apcore.TaskStatus) attribute.KeyValue { return apcoreotel.AttrStatus.String(string(s)) }
	check := func(name string, got map[attribute.Distinct]int64, want map[attribute.Distinct]int64) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s %v: %d, want %d (all: %v)", name, k, got[k], v, got)
			}
		}
	}
	check(apcoreotel.MetricSubmitted, sumOf(t, rm, apcoreotel.MetricSubmitted),
		map[attribute.Distinct]int64{set(mod("ok")): 2, set(mod("bad")): 1, set(mod("hold")): 1})
	check(apcoreotel.MetricFinished, sumOf(t, rm, apcoreotel.MetricFinished),
		map[attribute.Distinct]int64{set(mod("ok"), st(apcore.StatusCompleted)): 2, set(mod("bad"), st(apcore.StatusFailed)): 1})
	check(apcoreotel.MetricAttemptDuration, sumOf(t, rm, apcoreotel.MetricAttemptDuration),
		map[attribute.Distinct]int64{set(mod("ok"), st(apcore.StatusCompleted)): 2, set(mod("bad"), st(apcore.StatusFailed)): 1})
	check(apcoreotel.MetricQueueWait, sumOf(t, rm, apcoreotel.MetricQueueWait),
		map[attribute.Distinct]int64{set(mod("ok")): 2, set(mod("bad")): 1, set(mod("hold")): 1})
	check(apcoreotel.MetricActive, sumOf(t, rm, apcoreotel.MetricActive),
		map[attribute.Distinct]int64{set(st(apcore.StatusRunning)): 1, set(st(apcore.StatusPending)): 0})
	check(apcoreotel.MetricProgress, sumOf(t, rm, apcoreotel.MetricProgress),
		map[attribute.Distinct]int64{set(mod("ok")): 4})

	if ok, err := mgr.Cancel(ctx, held); !ok || err != nil {
		t.Fatalf("Cancel: %v %v", ok, err)
	}
	close(release)
	seen(held, apcore.StatusCancelled, true)
	must(reader.Collect(ctx, &rm))
	check(apcoreotel.MetricActive, sumOf(t, rm, apcoreotel.MetricActive),
		map[attribute.Distinct]int64{set(st(apcore.StatusRunning)): 0, set(st(apcore.StatusPending)): 0})
	check(apcoreotel.MetricFinished, sumOf(t, rm, apcoreotel.MetricFinished),
		map[attribute.Distinct]int64{set(mod("hold"), st(apcore.StatusCancelled)): 1})

	// After stop, nothing more is counted.
	stop()
	id, err := mgr.Submit(ctx, "ok", nil)
	must(err)
	_, err = mgr.Wait(ctx, id)
	must(err)
	must(reader.Collect(ctx, &rm))
	check(apcoreotel.MetricSubmitted, sumOf(t, rm, apcoreotel.MetricSubmitted), map[attribute.Distinct]int64{set(mod("ok")): 2})
}

// observed subscribes to mgr and returns a function that waits until a
// record of the task in the status, started or not, has reached the
// observers. Observers
// are called in the order they were added, so one added before (such as
// Instrument's) has seen it too.
func observed(t *testing.T, mgr *apcore.TaskManager) func(id string, status apcore.TaskStatus, started bool) {
	t.Helper()
	type key struct {
		id      string
		status  apcore.TaskStatus
		started bool
	}
	var mu sync.Mutex
	got := map[key]bool{}
	changed := make(chan struct{})
	cancel, err := mgr.Subscribe(func(info apcore.TaskInfo) {
		mu.Lock()
		got[key{info.TaskID, info.Status, !info.StartedAt.IsZero()}] = true
		close(changed)
		changed = make(chan struct{})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return func(id string, status apcore.TaskStatus, started bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			mu.Lock()
			ok, ch := got[key{id, status, started}], changed
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("the observers never saw %s %s (started %v)", id, status, started)
			}
		}
	}
}

// A module that panics still ends its span, with the panic recorded; the
// manager recovers the panic as it does without the wrapper.
func TestSpanPanic(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	exec := apcore.ExecutorFunc(func(context.Context, string, map[string]any) (any, error) {
		panic("boom")
	})
	mgr, err := apcore.NewTaskManager(apcoreotel.WrapExecutor(exec, apcoreotel.WithTracerProvider(tp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	id, err := mgr.Submit(context.Background(), "explodes", nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := mgr.Wait(context.Background(), id)
	if err != nil || info.Status != apcore.StatusFailed || info.ErrorCode != apcore.CodeModuleExecuteError {
		t.Fatalf("Wait: %+v, %v; want failed with MODULE_EXECUTE_ERROR", info, err)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	if v, _ := attr(spans[0], apcoreotel.AttrOutcome); v.AsString() != apcoreotel.OutcomeError || spans[0].Status().Code != codes.Error {
		t.Errorf("span: outcome %q status %v; want error", v.AsString(), spans[0].Status())
	}
}

// Wrapping keeps the executor's module checks: an unknown module still
// fails with MODULE_NOT_FOUND.
func TestWrapKeepsResolver(t *testing.T) {
	reg := apcore.NewRegistry()
	wrapped := apcoreotel.WrapExecutor(reg)
	if _, ok := wrapped.(apcore.ModuleResolver); !ok {
		t.Fatal("the wrapped executor is not a ModuleResolver")
	}
	mgr, err := apcore.NewTaskManager(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, mgr)
	id, err := mgr.Submit(context.Background(), "no.such.module", nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := mgr.Wait(context.Background(), id)
	if err != nil || info.ErrorCode != apcore.CodeModuleNotFound {
		t.Errorf("Wait: %+v, %v; want MODULE_NOT_FOUND", info, err)
	}
}
