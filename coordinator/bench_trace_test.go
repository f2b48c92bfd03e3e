package coordinator_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/txcoord/txcoord/internal/tracing/otlptest"
)

// dropProcessor ends spans into nothing: the cost of recording them, without an export.
type dropProcessor struct{}

func (dropProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropProcessor) Shutdown(context.Context) error                  { return nil }
func (dropProcessor) ForceFlush(context.Context) error                { return nil }

// BenchmarkC1Traced is BenchmarkC1Untraced with every transaction traced (always sampled):
// "record" makes and ends every span into a processor that drops them; "otlp" also
// batches and exports them over OTLP/HTTP to a receiver in this process, which decodes
// them (its CPU is counted too).
func BenchmarkC1Traced(b *testing.B) {
	b.Run("record", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(dropProcessor{}))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		cfg := fastCfg()
		cfg.TracerProvider = tp
		benchC1(b, cfg)
	})
	b.Run("otlp", func(b *testing.B) {
		rcv := otlptest.New()
		rcv.Discard = true
		defer rcv.Close()
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(rcv.URL()+"/v1/traces"))
		if err != nil {
			b.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(exp))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		cfg := fastCfg()
		cfg.TracerProvider = tp
		benchC1(b, cfg)
	})
}
