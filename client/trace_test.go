package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/client"
)

// TestSubmitCarriesCallersTrace: Submit's POST carries the W3C traceparent of the span in
// its context, and no traceparent when the context has none.
func TestSubmitCarriesCallersTrace(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"transactionId":"t1","status":"committed","errors":[]}`))
	}))
	defer srv.Close()
	c, _ := client.New([]string{srv.URL}, client.Options{InitialBackoff: time.Millisecond})
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "book trip")
	defer span.End()
	if _, err := c.Submit(ctx, client.Transaction{Services: client.Services("http://p/prepare")}); err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext()
	if want, sent := "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", <-got; sent != want {
		t.Errorf("traceparent %q sent, want %q", sent, want)
	}
	if _, err := c.Submit(trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), client.Transaction{Services: client.Services("http://p/prepare")}); err != nil {
		t.Fatal(err)
	}
	if tp := <-got; tp != "" {
		t.Errorf("traceparent %q without a span", tp)
	}
}
