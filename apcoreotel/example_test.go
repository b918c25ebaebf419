package apcoreotel_test

import (
	"context"
	"fmt"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcoreotel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Tracing and metrics for a manager: wrap the executor for a span per
// attempt, pass the carrier so that resumable tasks keep their trace on
// another replica, and instrument the manager for metrics. Here the SDK
// keeps spans in memory; a real program sets up its exporters instead
// (or the global providers, which are the default).
func Example() {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) }()

	reg := apcore.NewRegistry()
	if err := reg.Register("greet", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		return fmt.Sprintf("hello, %v", in["name"]), nil
	})); err != nil {
		panic(err)
	}
	mgr, err := apcore.NewTaskManager(
		apcoreotel.WrapExecutor(reg, apcoreotel.WithTracerProvider(tp)),
		apcore.WithContextCarrier(apcoreotel.Carrier()),
	)
	if err != nil {
		panic(err)
	}
	stop, err := apcoreotel.Instrument(mgr, apcoreotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer stop()

	ctx, span := tp.Tracer("app").Start(context.Background(), "handle request")
	id, _ := mgr.Submit(ctx, "greet", map[string]any{"name": "otel"})
	span.End()
	info, _ := mgr.Wait(context.Background(), id)
	_ = mgr.Shutdown(context.Background())

	fmt.Println(info.Result)
	for _, s := range spans.GetSpans() {
		fmt.Println(s.Name, "child of handle request:", s.Parent.SpanID() == span.SpanContext().SpanID())
	}
	// Output:
	// hello, otel
	// handle request child of handle request: false
	// apcore.attempt greet child of handle request: true
}
