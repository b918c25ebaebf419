// Package apcoreotel reports an apcore.TaskManager's work to OpenTelemetry:
// a span per attempt (WrapExecutor), the trace context carried through the
// store for resumable tasks (Carrier), and metrics from the manager's
// transitions (Instrument). It uses only the OpenTelemetry API; the
// application chooses the SDK and exporters.
//
//	tracing := apcoreotel.Carrier()
//	mgr, _ := apcore.NewTaskManager(apcoreotel.WrapExecutor(registry),
//		apcore.WithContextCarrier(tracing))
//	stop, _ := apcoreotel.Instrument(mgr)
//	defer stop()
package apcoreotel

import (
	"context"
	"errors"
	"fmt"

	"github.com/apcore-go/apcore"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans and metrics.
const ScopeName = "github.com/apcore-go/apcore/apcoreotel"

// Attribute keys set on spans and metrics.
const (
	AttrTaskID   = attribute.Key("apcore.task.id")
	AttrModuleID = attribute.Key("apcore.module.id")
	AttrAttempt  = attribute.Key("apcore.task.attempt")
	AttrOutcome  = attribute.Key("apcore.task.outcome")
	AttrStatus   = attribute.Key("apcore.task.status")
	// AttrErrorCode is the error code of an attempt that did not end well:
	// the failed record's ErrorCode, MODULE_TIMEOUT, or EXECUTION_CANCELLED
	// for a task cancelled while it ran.
	AttrErrorCode = attribute.Key("apcore.task.error_code")
	// AttrRunAt is the time a task submitted WithRunAt (or WithDelay) was
	// to start, RFC 3339 in UTC to the microsecond (the record's RunAt);
	// set on its attempts' spans only when the record has one.
	AttrRunAt = attribute.Key("apcore.task.run_at")
	// AttrUniqueKey is the key a task was submitted WithUniqueKey with;
	// set only when it has one. It is the application's text: it goes on
	// spans, never on metrics (one series per key).
	AttrUniqueKey = attribute.Key("apcore.task.unique_key")
	// AttrPriority is a task's WithPriority; set only when it is not 0.
	AttrPriority = attribute.Key("apcore.task.priority")
)

// Outcomes of an attempt, the value of AttrOutcome on its span. They
// follow the task's record, not only what the module returned: a module
// that ignores its context and returns a result after its timeout, or
// after the task was cancelled, ends an attempt that timed out or was
// cancelled.
const (
	OutcomeOK        = "ok"        // the module returned a result
	OutcomeError     = "error"     // the module returned an error (or panicked), or the task failed while it ran
	OutcomeTimeout   = "timeout"   // the attempt ran out of its WithTimeout
	OutcomeCancelled = "cancelled" // the task was cancelled (or its manager let go of it) while it ran
)

// config collects the Options.
type config struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	prop propagation.TextMapPropagator
}

// Option configures WrapExecutor, Carrier and Instrument.
type Option func(*config)

// WithTracerProvider sets where spans go. Default: otel.GetTracerProvider()
// at the time of the call.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go. Default: otel.GetMeterProvider()
// at the time of the call.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithPropagator sets how Carrier writes and reads the trace context.
// Default: W3C trace context and baggage.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return c
}

// WrapExecutor returns an Executor that runs each call of exec in a span
// named "apcore.attempt <module id>": one span per attempt, a child of the
// span in Submit's context (the task's context keeps Submit's values, so
// the module's own spans nest under the attempt's). Its attributes are the
// task id, module id, attempt number (RetryCount+1) and outcome, and, when
// the task has them, its run_at (AttrRunAt), unique key (AttrUniqueKey)
// and priority (AttrPriority). The
// outcome follows the task's record, not only the module's return: a
// module that ignores its context and returns a result after its timeout,
// or after the task was cancelled, still ends a timed-out or cancelled
// attempt. An attempt that did not end well records its error, sets the
// span's status to Error with the error code, and sets AttrErrorCode. When
// the trace context came through the store (a resumable task run by
// another manager, see Carrier), the span also links to the submitter's
// span.
func WrapExecutor(exec apcore.Executor, opts ...Option) apcore.Executor {
	c := newConfig(opts)
	return &executor{next: exec, tracer: c.tp.Tracer(ScopeName)}
}

type executor struct {
	next   apcore.Executor
	tracer trace.Tracer
}

// HasModule forwards to the wrapped executor when it is an
// apcore.ModuleResolver, so wrapping keeps the manager's module checks.
func (e *executor) HasModule(moduleID string) bool {
	if r, ok := e.next.(apcore.ModuleResolver); ok {
		return r.HasModule(moduleID)
	}
	return true
}

// Call runs the wrapped executor's Call inside the attempt's span.
func (e *executor) Call(ctx context.Context, moduleID string, inputs map[string]any) (result any, err error) {
	attrs := []attribute.KeyValue{AttrModuleID.String(moduleID)}
	if info, ok := apcore.TaskFromContext(ctx); ok {
		attrs = append(attrs, AttrTaskID.String(info.TaskID), AttrAttempt.Int(info.RetryCount+1))
		attrs = appendTaskOptions(attrs, &info)
	}
	startOpts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if sc, ok := ctx.Value(submitterKey{}).(trace.SpanContext); ok && sc.IsValid() {
		startOpts = append(startOpts, trace.WithLinks(trace.Link{
			SpanContext: sc,
			Attributes:  []attribute.KeyValue{attribute.String("apcore.link", "submitter")},
		}))
	}
	ctx, span := e.tracer.Start(ctx, "apcore.attempt "+moduleID, startOpts...)
	defer span.End()
	defer func() {
		if p := recover(); p != nil {
			perr := fmt.Errorf("panic: %v", p)
			span.RecordError(perr)
			span.SetStatus(codes.Error, perr.Error())
			span.SetAttributes(AttrOutcome.String(OutcomeError))
			panic(p)
		}
	}()
	result, err = e.next.Call(ctx, moduleID, inputs)
	outcome, code, cause := attemptOutcome(ctx, err)
	span.SetAttributes(AttrOutcome.String(outcome))
	if outcome != OutcomeOK {
		span.SetAttributes(AttrErrorCode.String(string(code)))
		span.RecordError(cause)
		span.SetStatus(codes.Error, string(code)+": "+cause.Error())
	}
	return result, err
}

// appendTaskOptions appends the attributes of the record's third-stage
// fields that are set: run_at, unique key, priority.
func appendTaskOptions(attrs []attribute.KeyValue, info *apcore.TaskInfo) []attribute.KeyValue {
	if info.RunAt != nil && !info.RunAt.IsZero() {
		attrs = append(attrs, AttrRunAt.String(info.RunAt.UTC().Format(rfc3339Micro)))
	}
	if info.UniqueKey != "" {
		attrs = append(attrs, AttrUniqueKey.String(info.UniqueKey))
	}
	if info.Priority != 0 {
		attrs = append(attrs, AttrPriority.Int(info.Priority))
	}
	return attrs
}

// rfc3339Micro is RFC 3339 to the microsecond, the wire format's precision.
const rfc3339Micro = "2006-01-02T15:04:05.000000Z07:00"

// attemptOutcome tells how an attempt ended, from the task's record and
// the attempt's context first, then from what the module returned (err):
// the outcome, and for any but OutcomeOK the error code and the error to
// record. The manager decides the record after the module returns, from
// the same context: an attempt whose context ran out of its deadline
// fails MODULE_TIMEOUT (or is retried), whatever the module returned; a
// task that was cancelled while it ran stays cancelled.
func attemptOutcome(ctx context.Context, err error) (outcome string, code apcore.ErrorCode, cause error) {
	if info, ok := apcore.TaskFromContext(ctx); ok {
		switch info.Status {
		case apcore.StatusCancelled:
			return OutcomeCancelled, apcore.CodeExecutionCancelled, errOr(err, "the task was cancelled while the attempt ran")
		case apcore.StatusFailed:
			// Ended while it ran (another manager's record, say).
			outcome = OutcomeError
			if info.ErrorCode == apcore.CodeModuleTimeout {
				outcome = OutcomeTimeout
			}
			return outcome, info.ErrorCode, errors.New(info.Error)
		}
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return OutcomeTimeout, apcore.CodeModuleTimeout, errOr(err, "the attempt ran past its timeout")
	case errors.Is(ctx.Err(), context.Canceled):
		return OutcomeCancelled, apcore.CodeExecutionCancelled, errOr(err, "the attempt was cancelled while it ran")
	case err == nil:
		return OutcomeOK, "", nil
	case apcore.CodeOf(err) == apcore.CodeModuleTimeout:
		return OutcomeTimeout, apcore.CodeModuleTimeout, err
	}
	code = apcore.CodeOf(err)
	if code == "" {
		code = apcore.CodeModuleExecuteError
	}
	return OutcomeError, code, err
}

// errOr returns err, or an error saying what happened when the module
// returned none.
func errOr(err error, what string) error {
	if err != nil {
		return err
	}
	return errors.New(what + " (the module returned a result)")
}

// submitterKey keys the submitter's span context that Carrier's Extract
// found in the store.
type submitterKey struct{}

// Carrier returns an apcore.ContextCarrier, for apcore.WithContextCarrier,
// that carries the trace context (and baggage) of Submit's context with a
// resumable task through the store. The manager that runs the task puts it
// back: the attempt's span (WrapExecutor) is then a child of the
// submitter's span, in the same trace, and links to it.
func Carrier(opts ...Option) apcore.ContextCarrier {
	c := newConfig(opts)
	return carrier{prop: c.prop}
}

type carrier struct{ prop propagation.TextMapPropagator }

// Inject writes ctx's trace context into a map; nil when there is none.
func (c carrier) Inject(ctx context.Context) map[string]string {
	m := propagation.MapCarrier{}
	c.prop.Inject(ctx, m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// Extract puts the trace context in m back into ctx.
func (c carrier) Extract(ctx context.Context, m map[string]string) context.Context {
	ctx = c.prop.Extract(ctx, propagation.MapCarrier(m))
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && sc.IsRemote() {
		ctx = context.WithValue(ctx, submitterKey{}, sc)
	}
	return ctx
}
