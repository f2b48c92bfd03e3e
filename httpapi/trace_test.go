package httpapi

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

const clientTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// TestForwardedPostKeepsTraceContext: a client POSTs with a traceparent to a follower that
// does not trace; the leader, which does, hands the engine a context whose remote span is
// the client's, so the transaction span is the client's child across the forward.
func TestForwardedPostKeepsTraceContext(t *testing.T) {
	b := newNode(t, "b", true, Config{Propagator: propagation.TraceContext{}})
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", b.addr})
	got := make(chan trace.SpanContext, 1)
	inner := b.sub.fn
	b.sub.setFn(func(ctx context.Context, r coordinator.Request) (*fsm.Txn, error) {
		got <- trace.SpanContextFromContext(ctx)
		return inner(ctx, r)
	})
	status, _, body := postTo(t, a, threeServices, "traceparent", clientTraceparent, "tracestate", "vendor=1")
	if status != 200 {
		t.Fatalf("answer %d %s", status, body)
	}
	sc := <-got
	if !sc.IsRemote() || sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || sc.SpanID().String() != "b7ad6b7169203331" || sc.TraceState().Get("vendor") != "1" {
		t.Fatalf("leader's Submit context carries %+v, want the client's span context", sc)
	}
}

// TestPostWithoutPropagatorIgnoresTraceparent: with tracing off (no Propagator) the
// header is not read: the engine sees no span context.
func TestPostWithoutPropagatorIgnoresTraceparent(t *testing.T) {
	b := newNode(t, "b", true, Config{})
	got := make(chan trace.SpanContext, 1)
	inner := b.sub.fn
	b.sub.setFn(func(ctx context.Context, r coordinator.Request) (*fsm.Txn, error) {
		got <- trace.SpanContextFromContext(ctx)
		return inner(ctx, r)
	})
	if status, _, body := postTo(t, b, threeServices, "traceparent", clientTraceparent); status != 200 {
		t.Fatalf("answer %d %s", status, body)
	}
	if sc := <-got; sc.IsValid() {
		t.Fatalf("span context %+v with tracing off", sc)
	}
}
