package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/internal/tracing/otlptest"
	"github.com/txcoord/txcoord/internal/tracing/waterfall"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// tracedService is a participant built on the participant library whose callbacks record
// spans of their own, as a service that traces would: they must join the coordinator's
// trace. refuse makes Prepare vote no; hold, when set, holds the first Commit until closed.
type tracedService struct {
	name    string
	tracer  trace.Tracer
	refuse  bool
	hold    chan struct{}
	arrived chan struct{}
	once    sync.Once
}

func (s *tracedService) handler() http.Handler {
	span := func(ctx context.Context, step string) {
		_, sp := s.tracer.Start(ctx, s.name+"."+step)
		sp.End()
	}
	return participant.NewHandler(participant.Callbacks{
		Prepare: func(ctx context.Context, _ string, _ time.Time) error {
			span(ctx, "reserve")
			if s.refuse {
				return errors.New("no rooms")
			}
			return nil
		},
		Commit: func(ctx context.Context, _ string) error {
			if s.hold != nil {
				first := false
				s.once.Do(func() { first = true; close(s.arrived) })
				if first {
					<-s.hold
				}
			}
			span(ctx, "confirm")
			return nil
		},
		Rollback: func(ctx context.Context, _ string) error {
			span(ctx, "release")
			return nil
		},
	}, participant.NewMemStore())
}

func (s *tracedService) start(t *testing.T) string {
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return ts.URL + "/prepare"
}

// tree is the received spans with lookups.
type tree []otlptest.Span

func (tr tree) find(f func(otlptest.Span) bool) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range tr {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

func (tr tree) children(p otlptest.Span, name string) []otlptest.Span {
	return tr.find(func(s otlptest.Span) bool { return s.TraceID == p.TraceID && s.Parent == p.SpanID && s.Name == name })
}

func (tr tree) String() string {
	var b strings.Builder
	for _, s := range tr {
		fmt.Fprintf(&b, "\n  %s %s/%s parent %s %v links %v", s.Name, s.TraceID[:8], s.SpanID, s.Parent, s.Attrs, s.Links)
	}
	return b.String()
}

// TestTracesOverOTLP runs a traced cluster configured only by the OTEL_* variables, with
// an OTLP/HTTP receiver in the test, and checks the span trees it receives: a client's
// trace continues through a follower's forward into the leader's transaction span, with
// every Prepare, the decision, every Commit and the participants' own spans under it; a NACK
// shows on its Prepare and the transaction rolls back; a transaction whose leader is killed
// in phase two is resumed by the next leader in a span linked to the original trace.
func TestTracesOverOTLP(t *testing.T) {
	rcv := otlptest.New()
	defer rcv.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL())
	t.Setenv("OTEL_SERVICE_NAME", "txcoord-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	tr, err := tracing.FromEnv(context.Background(), nil, nil)
	if err != nil || !tr.Enabled {
		t.Fatalf("tracing.FromEnv: %v (enabled %v)", err, tr.Enabled)
	}
	defer func() { _ = tr.Shutdown(context.Background()) }()
	tracer := tr.Provider.Tracer("test")

	flight := &tracedService{name: "flight", tracer: tracer}
	hotel := &tracedService{name: "hotel", tracer: tracer}
	full := &tracedService{name: "hotel", tracer: tracer, refuse: true}
	slow := &tracedService{name: "hotel", tracer: tracer, hold: make(chan struct{}), arrived: make(chan struct{})}
	flightURL, hotelURL, fullURL, slowURL := flight.start(t), hotel.start(t), full.start(t), slow.start(t)

	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) { cfg.Tracing = tr }})
	leader := c.WaitLeader(20 * time.Second)
	if err := c.Eventually(20*time.Second, func() error {
		if lv := c.Node(leader).Node.FSM.FeatureLevel(); lv < 3 {
			return fmt.Errorf("feature level %d", lv)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Through a follower: the forward must carry the traceparent.
	cl, err := client.New([]string{c.Node(c.Follower()).URL()}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	submit := func(name string, urls ...string) (trace.SpanContext, string) {
		t.Helper()
		ctx, sp := tracer.Start(context.Background(), name)
		defer sp.End()
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		out, err := cl.Submit(ctx, client.Transaction{Services: client.Services(urls...), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return sp.SpanContext(), out.TransactionID + " " + out.Status
	}
	// waitTxnSpan waits for the transaction span of id (resumed or not) to arrive.
	waitTxnSpan := func(id string, resumed bool) (otlptest.Span, tree) {
		t.Helper()
		var got otlptest.Span
		var all tree
		err := c.Eventually(20*time.Second, func() error {
			all = tree(rcv.Spans())
			for _, s := range all.find(func(s otlptest.Span) bool {
				return s.Name == coordinator.SpanTransaction && s.Attrs[string(coordinator.AttrTxnID)] == id && (s.Attrs[string(coordinator.AttrResumed)] == "true") == resumed
			}) {
				if s.Attrs[string(coordinator.AttrStatus)] != "" {
					got = s
					return nil
				}
			}
			return fmt.Errorf("no transaction span of %s yet", id)
		})
		if err != nil {
			t.Fatalf("%v; received:%v", err, all)
		}
		return got, all
	}

	t.Run("committed", func(t *testing.T) {
		sc, res := submit("checkout", flightURL, hotelURL)
		id, status, _ := strings.Cut(res, " ")
		if status != "committed" {
			t.Fatalf("outcome %s", res)
		}
		root, all := waitTxnSpan(id, false)
		if root.TraceID != sc.TraceID().String() || root.Parent != sc.SpanID().String() || root.Kind != "SPAN_KIND_SERVER" || root.Service != "txcoord-test" {
			t.Fatalf("transaction span %+v, want a server span of txcoord-test, child of the client's %s", root, sc.SpanID())
		}
		if len(all.children(root, coordinator.SpanBegin)) != 1 || len(all.children(root, coordinator.SpanDecision)) != 1 {
			t.Errorf("begin or decision span missing:%v", all)
		}
		// Every participant's own span hangs under the coordinator's call to it. The
		// callbacks' spans are exported as the participant ends them, so wait for them.
		for _, want := range []struct{ call, own, url string }{
			{coordinator.SpanPrepare, "flight.reserve", flightURL}, {coordinator.SpanPrepare, "hotel.reserve", hotelURL},
			{coordinator.SpanCommit, "flight.confirm", strings.TrimSuffix(flightURL, "prepare") + "commit"},
			{coordinator.SpanCommit, "hotel.confirm", strings.TrimSuffix(hotelURL, "prepare") + "commit"},
		} {
			if err := c.Eventually(10*time.Second, func() error {
				all = tree(rcv.Spans())
				for _, call := range all.children(root, want.call) {
					if call.Attrs[string(coordinator.AttrParticipant)] == want.url && len(all.children(call, want.own)) > 0 {
						if want.call == coordinator.SpanPrepare && call.Attrs[string(coordinator.AttrVote)] != "ACK" ||
							want.call == coordinator.SpanCommit && call.Attrs[string(coordinator.AttrResult)] != "ACK" {
							return fmt.Errorf("%s %v", want.call, call.Attrs)
						}
						return nil
					}
				}
				return fmt.Errorf("no %s span under a %s to %s", want.own, want.call, want.url)
			}); err != nil {
				t.Errorf("%v:%v", err, all)
			}
		}
		if path := os.Getenv("TXCOORD_TRACE_PNG"); path != "" {
			// make docs-trace: the picture in docs/observability.md is this trace.
			var spans []otlptest.Span
			for _, s := range rcv.Spans() {
				if s.TraceID == root.TraceID {
					spans = append(spans, s)
				}
			}
			if err := waterfall.WriteFile(path, spans); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("rolled back", func(t *testing.T) {
		_, res := submit("checkout-full", flightURL, fullURL)
		id, status, _ := strings.Cut(res, " ")
		if status != "rolled_back" {
			t.Fatalf("outcome %s", res)
		}
		root, all := waitTxnSpan(id, false)
		nacks := tree(all.children(root, coordinator.SpanPrepare)).find(func(s otlptest.Span) bool {
			return s.Attrs[string(coordinator.AttrVote)] == "NACK" && strings.Contains(s.Attrs[string(coordinator.AttrReason)], "no rooms")
		})
		if len(nacks) != 1 {
			t.Errorf("want one NACK prepare span with the reason:%v", all)
		}
		if d := all.children(root, coordinator.SpanDecision); len(d) != 1 || d[0].Attrs[string(coordinator.AttrDecision)] != "abort" {
			t.Errorf("decision %v", d)
		}
		if len(all.children(root, coordinator.SpanRollback)) == 0 || len(all.children(root, coordinator.SpanCommit)) != 0 {
			t.Errorf("want rollbacks and no commits:%v", all)
		}
		if root.Attrs[string(coordinator.AttrStatus)] != "rolled_back" {
			t.Errorf("transaction span %v", root.Attrs)
		}
	})

	t.Run("resumed", func(t *testing.T) {
		type result struct {
			sc  trace.SpanContext
			res string
		}
		done := make(chan result, 1)
		go func() {
			ctx, sp := tracer.Start(context.Background(), "checkout-failover")
			defer sp.End()
			ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			out, err := cl.Submit(ctx, client.Transaction{Services: client.Services(flightURL, slowURL), Timeout: 10 * time.Second})
			if err != nil {
				done <- result{sp.SpanContext(), "error " + err.Error()}
				return
			}
			done <- result{sp.SpanContext(), out.TransactionID + " " + out.Status}
		}()
		select {
		case <-slow.arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the held Commit never arrived")
		}
		old := c.Leader()
		if old < 0 {
			t.Fatal("no leader while phase two runs")
		}
		active := c.Node(old).Node.FSM.Active()
		if len(active) != 1 || active[0].Trace == "" {
			t.Fatalf("in flight on the leader: %+v, want one transaction with its trace context", active)
		}
		original := active[0]
		c.Kill(old)
		c.WaitLeader(20 * time.Second)
		close(slow.hold)
		r := <-done
		id, status, _ := strings.Cut(r.res, " ")
		if status != "committed" || id != original.ID {
			t.Fatalf("outcome %s, want %s committed", r.res, original.ID)
		}
		res, all := waitTxnSpan(id, true)
		if res.TraceID == r.sc.TraceID().String() || res.Parent != "" {
			t.Errorf("resumed span %+v: want the root of a new trace", res)
		}
		want := otlptest.Link{TraceID: r.sc.TraceID().String(), SpanID: strings.Split(original.Trace, "-")[2]}
		if len(res.Links) != 1 || res.Links[0] != want {
			t.Fatalf("resumed span links %v, want %v (the original transaction span, in the client's trace):%v", res.Links, want, all)
		}
		if len(all.children(res, coordinator.SpanCommit)) == 0 || len(all.children(res, coordinator.SpanComplete)) != 1 {
			t.Errorf("resumed span without its commits and completion:%v", all)
		}
	})
}
