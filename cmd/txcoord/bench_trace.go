package main

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/internal/tracing/otlptest"
)

// dropSpans is a span processor that ends spans into nothing.
type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }

// benchTracing returns the tracing of bench's own cluster for --trace: nil for "off";
// "record" samples every transaction and drops its spans when they end (the cost of making
// them); "otlp" also batches and exports them over OTLP/HTTP to a receiver in this process,
// which decodes and counts them. done flushes, stops and reports the spans received.
func benchTracing(ctx context.Context, mode string) (tr *tracing.Tracing, done func() string, err error) {
	switch mode {
	case "", "off":
		return nil, func() string { return "" }, nil
	case "record":
		tr = tracing.New(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(dropSpans{}))
		return tr, func() string { _ = tr.Shutdown(context.Background()); return "" }, nil
	case "otlp":
		rcv := otlptest.New()
		rcv.Discard = true
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(rcv.URL()+"/v1/traces"))
		if err != nil {
			rcv.Close()
			return nil, nil, err
		}
		tr = tracing.New(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(exp))
		return tr, func() string {
			err := tr.Shutdown(context.Background())
			rcv.Close()
			if err != nil {
				return fmt.Sprintf("tracing: %d spans received over OTLP; shutdown: %v", rcv.Count(), err)
			}
			return fmt.Sprintf("tracing: %d spans received over OTLP", rcv.Count())
		}, nil
	default:
		return nil, nil, fmt.Errorf("--trace %q: want off, record or otlp", mode)
	}
}
