package participant_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/participant"
)

// TestHandlerCallbacksJoinTheCallersTrace: a Prepare and a Commit that carry a W3C
// traceparent run their callbacks with a context whose remote span context is the
// coordinator's, so a service's own spans are children of the coordinator's call; a call
// without one gives the callback no span context.
func TestHandlerCallbacksJoinTheCallersTrace(t *testing.T) {
	got := make(chan trace.SpanContext, 3)
	h := participant.NewHandler(participant.Callbacks{
		Prepare: func(ctx context.Context, _ string, _ time.Time) error {
			got <- trace.SpanContextFromContext(ctx)
			return nil
		},
		Commit: func(ctx context.Context, _ string) error {
			got <- trace.SpanContextFromContext(ctx)
			return nil
		},
	}, participant.NewMemStore())
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(phase, id, traceparent string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/"+phase, strings.NewReader(`{"transactionId":"`+id+`"}`))
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: HTTP %d", phase, resp.StatusCode)
		}
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	post("prepare", "t1", tp)
	post("commit", "t1", "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01")
	post("prepare", "t2", "")
	for i, wantSpan := range []string{"b7ad6b7169203331", "00f067aa0ba902b7"} {
		sc := <-got
		if !sc.IsRemote() || sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || sc.SpanID().String() != wantSpan || !sc.IsSampled() {
			t.Errorf("callback %d got span context %+v, want the caller's span %s", i, sc, wantSpan)
		}
	}
	if sc := <-got; sc.IsValid() {
		t.Errorf("callback of an untraced call got %+v", sc)
	}
}
