// Package tracing sets up txcoord's OpenTelemetry tracer provider from the standard OTEL_*
// environment variables and names the spans and attributes the coordinator records.
//
// Tracing is off unless OTEL_TRACES_EXPORTER=otlp is set, or an OTLP endpoint variable
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set while
// OTEL_TRACES_EXPORTER is unset. Off, Setup installs nothing: the otel globals stay no-op,
// the coordinator records no span, extracts no traceparent and logs no trace context, so the
// untraced path costs what it did before tracing existed. (The OpenTelemetry specification
// makes "otlp" the default exporter; txcoord makes "none" the default so that a node
// never dials a collector it was not told about.)
//
// On, spans go over OTLP/HTTP with protobuf (otlptracehttp, which reads the
// OTEL_EXPORTER_OTLP_* variables: endpoint, headers, timeout, compression, certificates)
// through a batch span processor (OTEL_BSP_*), sampled per OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on), with the resource from
// OTEL_SERVICE_NAME [txcoord] and OTEL_RESOURCE_ATTRIBUTES. The propagator is W3C Trace
// Context only. OTLP over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc) is refused with an error:
// this build carries only the HTTP exporter.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/txcoord/txcoord/version"
)

// Tracing is the tracer provider one node runs with.
type Tracing struct {
	// Provider hands out tracers: the SDK's when tracing is on, a no-op one when off.
	Provider trace.TracerProvider
	// Enabled reports whether spans are exported.
	Enabled bool
	sdk     *sdktrace.TracerProvider
}

// Off is tracing switched off: a no-op provider.
func Off() *Tracing { return &Tracing{Provider: noop.NewTracerProvider()} }

// FromEnv builds tracing from the OTEL_* variables (see the package comment) and, when
// on, installs it as the otel global tracer provider and propagator, so that libraries
// using the globals join the node's traces. getenv is os.Getenv unless a test replaces
// it. Errors: an unknown OTEL_TRACES_EXPORTER, an OTLP protocol other than http/protobuf,
// or an exporter the SDK cannot build from the variables.
func FromEnv(ctx context.Context, getenv func(string) string, lg hclog.Logger) (*Tracing, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	on, err := enabled(getenv)
	if err != nil || !on {
		return Off(), err
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if v != "http/protobuf" {
				return Off(), fmt.Errorf("%s=%q: this build exports OTLP over http/protobuf only", k, v)
			}
			break
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return Off(), fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(
		resource.NewSchemaless(semconv.ServiceName("txcoord"), semconv.ServiceVersion(version.Version)),
		resource.Environment(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return Off(), fmt.Errorf("trace resource: %w", err)
	}
	t := New(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	if lg != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			lg.Warn("tracing: export failed", "error", err)
		}))
	}
	otel.SetTracerProvider(t.Provider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return t, nil
}

// New returns tracing on with an SDK provider built from opts (tests pass an in-memory
// exporter or a sampler). It does not touch the otel globals.
func New(opts ...sdktrace.TracerProviderOption) *Tracing {
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracing{Provider: tp, Enabled: true, sdk: tp}
}

// enabled reads OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: txcoord supports otlp and none", exp)
	}
}

// Shutdown flushes the spans still queued and stops the exporter; ctx bounds the flush.
// A no-op when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	err := t.sdk.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tracing: spans not flushed before the shutdown deadline: %w", err)
	}
	return err
}
