package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// spans is what a span recorder holds, with lookups for the assertions below.
type spans []sdktrace.ReadOnlySpan

func (ss spans) named(name string) spans {
	var out spans
	for _, s := range ss {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (ss spans) childrenOf(p sdktrace.ReadOnlySpan) spans {
	var out spans
	for _, s := range ss {
		if s.Parent().SpanID() == p.SpanContext().SpanID() && s.SpanContext().TraceID() == p.SpanContext().TraceID() {
			out = append(out, s)
		}
	}
	return out
}

func (ss spans) where(k attribute.Key, v string) spans {
	var out spans
	for _, s := range ss {
		if attr(s, k) == v {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}

func (ss spans) String() string {
	out := ""
	for _, s := range ss {
		out += fmt.Sprintf("\n  %s %s parent %s %v", s.Name(), s.SpanContext().SpanID(), s.Parent().SpanID(), s.Attributes())
	}
	return out
}

// tracedRig is a rig whose FSM is at feature level 4 (Begin carries its trace context) and
// a recorder of every span the engines end.
func tracedRig(t *testing.T) (*rig, *tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	r := newRig(t)
	r.log.preload(t, &fsm.SetFeatures{Level: 4, At: 1})
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return r, sr, tp
}

// txnSpan waits until the transaction span of id has ended (the driver ends it after the
// FSM is terminal) and returns it with every span ended so far.
func txnSpan(t *testing.T, sr *tracetest.SpanRecorder, id string, resumed bool) (sdktrace.ReadOnlySpan, spans) {
	t.Helper()
	var got sdktrace.ReadOnlySpan
	var all spans
	eventually(t, "transaction span of "+id+" ended", func() bool {
		all = spans(sr.Ended())
		for _, s := range all.named(coordinator.SpanTransaction).where(coordinator.AttrTxnID, id) {
			if (attr(s, coordinator.AttrResumed) == "true") == resumed {
				got = s
				return true
			}
		}
		return false
	})
	return got, all
}

// traceModes are the two ways a transaction runs, with what their span trees and records
// differ in: the default mode logs Begin (a span, and the record keeps the transaction
// span's traceparent, so a resuming leader links to it); fast mode logs one entry with the
// decision, which has no field for a trace context (docs/observability.md, what is not
// promised).
var traceModes = []struct {
	mode coordinator.Mode
	attr string // the transaction span's txcoord.mode attribute
	// logged: Begin is logged with the trace context: one begin span, the record's
	// traceparent, and a resumed span that links to the original.
	logged bool
}{
	{mode: coordinator.ModeDefault, attr: "", logged: true},
	{mode: coordinator.ModeFast, attr: "fast", logged: false},
}

func submitTraced(t *testing.T, l *leader, tp trace.TracerProvider, mode coordinator.Mode, fps ...*participanttest.FP) (trace.SpanContext, *fsm.Txn) {
	t.Helper()
	ctx, client := tp.Tracer("client").Start(context.Background(), "client POST")
	defer client.End()
	txn, err := l.eng.Submit(ctx, coordinator.Request{Participants: parts(fps...), Timeout: roomy, Mode: mode})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return client.SpanContext(), txn
}

// TestTraceCommitted: the span tree of a committed transaction, in each mode. The
// transaction span is a child of the client's span; under it, logging Begin (default mode
// only), one Prepare per participant with its vote, the decision with its log index, a
// Commit per participant with its result, and the completion. Every call carries its own
// span's traceparent. The record keeps the transaction span's traceparent in the default
// mode, none in fast mode.
func TestTraceCommitted(t *testing.T) {
	for _, m := range traceModes {
		t.Run(string(m.mode), func(t *testing.T) {
			r, sr, tp := tracedRig(t)
			a, b := participanttest.New(t), participanttest.New(t)
			cfg := fastCfg()
			cfg.TracerProvider = tp
			l := r.lead(cfg, nil)
			client, txn := submitTraced(t, l, tp, m.mode, a, b)
			if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
				t.Fatalf("status %s", got.Status)
			}
			root, all := txnSpan(t, sr, txn.ID, false)
			if root.Parent().SpanID() != client.SpanID() || root.SpanContext().TraceID() != client.TraceID() {
				t.Fatalf("transaction span's parent %s, want the client's span %s", root.Parent().SpanID(), client.SpanID())
			}
			if attr(root, coordinator.AttrMode) != m.attr || attr(root, coordinator.AttrStatus) != "committed" || attr(root, coordinator.AttrDecision) != "commit" || attr(root, coordinator.AttrTerm) != "1" {
				t.Errorf("transaction span attributes %v", root.Attributes())
			}
			kids := all.childrenOf(root)
			bs := kids.named(coordinator.SpanBegin)
			if m.logged && (len(bs) != 1 || attr(bs[0], coordinator.AttrIndex) == "") || !m.logged && len(bs) != 0 {
				t.Errorf("begin spans %v", bs)
			}
			for _, fp := range []*participanttest.FP{a, b} {
				e := fp.Endpoints()
				if ps := kids.named(coordinator.SpanPrepare).where(coordinator.AttrParticipant, e.Prepare); len(ps) != 1 || attr(ps[0], coordinator.AttrVote) != "ACK" || attr(ps[0], coordinator.AttrHost) != "127.0.0.1" || ps[0].SpanKind() != trace.SpanKindClient {
					t.Errorf("prepare spans of %s: %v", e.Prepare, ps)
				}
				if cs := kids.named(coordinator.SpanCommit).where(coordinator.AttrParticipant, e.Commit); len(cs) == 0 || attr(cs[0], coordinator.AttrResult) != "ACK" || attr(cs[0], coordinator.AttrAttempt) != "1" {
					t.Errorf("commit spans of %s: %v", e.Commit, cs)
				}
				// Every call carried the traceparent of its own span: the participant's spans join.
				for _, c := range fp.Calls(txn.ID) {
					name := coordinator.SpanPrepare
					if c.Phase == participant.PhaseCommit {
						name = coordinator.SpanCommit
					}
					ok := slices.ContainsFunc(kids.named(name), func(s sdktrace.ReadOnlySpan) bool {
						return c.Traceparent == fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID())
					})
					if !ok {
						t.Errorf("%s call to %s carried traceparent %q, not one of its %s spans", c.Phase, fp.URL(), c.Traceparent, name)
					}
				}
			}
			if ds := kids.named(coordinator.SpanDecision); len(ds) != 1 || attr(ds[0], coordinator.AttrDecision) != "commit" || attr(ds[0], coordinator.AttrIndex) == "" {
				t.Errorf("decision spans %v", ds)
			}
			if cs := kids.named(coordinator.SpanComplete); len(cs) != 1 || attr(cs[0], coordinator.AttrStatus) != "committed" {
				t.Errorf("complete spans %v", cs)
			}
			rec, _ := r.fsm.Get(txn.ID)
			want := ""
			if m.logged {
				want = fmt.Sprintf("00-%s-%s-01", root.SpanContext().TraceID(), root.SpanContext().SpanID())
			}
			if rec.Trace != want {
				t.Errorf("record's trace %q, want %q", rec.Trace, want)
			}
			if t.Failed() {
				t.Logf("spans:%v", all)
			}
		})
	}
}

// TestTraceRolledBack: a NACK shows on its Prepare span with the reason, the decision is
// abort, and the yes-voter's Rollback is a span of the transaction (in fast mode that call
// is sent while the abort entry is being logged); no Commit span.
func TestTraceRolledBack(t *testing.T) {
	for _, m := range traceModes {
		t.Run(string(m.mode), func(t *testing.T) {
			r, sr, tp := tracedRig(t)
			a, b := participanttest.New(t), participanttest.New(t)
			nackAfterArrivals(t, b, "no rooms", a) // A got its Prepare: it is rolled back
			cfg := fastCfg()
			cfg.TracerProvider = tp
			l := r.lead(cfg, nil)
			_, txn := submitTraced(t, l, tp, m.mode, a, b)
			if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusRolledBack {
				t.Fatalf("status %s", got.Status)
			}
			root, all := txnSpan(t, sr, txn.ID, false)
			kids := all.childrenOf(root)
			nack := kids.named(coordinator.SpanPrepare).where(coordinator.AttrParticipant, b.Endpoints().Prepare)
			if len(nack) != 1 || attr(nack[0], coordinator.AttrVote) != "NACK" || attr(nack[0], coordinator.AttrReason) != "no rooms" {
				t.Errorf("NACK's prepare span %v", nack)
			}
			if ds := kids.named(coordinator.SpanDecision); len(ds) != 1 || attr(ds[0], coordinator.AttrDecision) != "abort" {
				t.Errorf("decision spans %v", ds)
			}
			if rs := kids.named(coordinator.SpanRollback).where(coordinator.AttrParticipant, a.Endpoints().Rollback); len(rs) == 0 || attr(rs[0], coordinator.AttrResult) != "ACK" {
				t.Errorf("rollback spans of the yes-voter %v", rs)
			}
			if cs := kids.named(coordinator.SpanCommit); len(cs) != 0 {
				t.Errorf("commit spans %v", cs)
			}
			if attr(root, coordinator.AttrMode) != m.attr || attr(root, coordinator.AttrStatus) != "rolled_back" || attr(root, coordinator.AttrDecision) != "abort" {
				t.Errorf("transaction span attributes %v", root.Attributes())
			}
			if t.Failed() {
				t.Logf("spans:%v", all)
			}
		})
	}
}

// TestTraceResumed: leader A decides commit and is deposed while a participant refuses
// Commit; leader B resumes the transaction in a new trace (a new root span) and records
// the Commit it makes. In the default mode the resumed span links to A's transaction span
// (the trace context logged with Begin); in fast mode it has no link (FastDecide carries
// none). A's span ends saying its driver stopped, and A's refused attempts show the error.
func TestTraceResumed(t *testing.T) {
	for _, m := range traceModes {
		t.Run(string(m.mode), func(t *testing.T) {
			r, sr, tp := tracedRig(t)
			a, b := participanttest.New(t), participanttest.New(t)
			b.Set(participant.PhaseCommit, participanttest.Status(503, "busy"))
			cfg := fastCfg()
			cfg.TracerProvider = tp
			la := r.lead(cfg, nil)
			_, txn := submitTraced(t, la, tp, m.mode, a, b)
			waitFP(t, b, "a refused Commit", func() bool { return b.Count(participant.PhaseCommit) >= 2 })
			la.stop(t)
			orig, _ := txnSpan(t, sr, txn.ID, false)
			if ev := orig.Events(); len(ev) == 0 || ev[len(ev)-1].Name != "driver stopped" {
				t.Errorf("original span's events %v, want a stopped driver", ev)
			}
			b.Set(participant.PhaseCommit, participanttest.ACK())

			cfgB := fastCfg()
			cfgB.TracerProvider = tp
			r.lead(cfgB, nil)
			if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
				t.Fatalf("status %s", got.Status)
			}
			res, all := txnSpan(t, sr, txn.ID, true)
			if res.SpanContext().TraceID() == orig.SpanContext().TraceID() || res.Parent().IsValid() {
				t.Errorf("resumed span is in trace %s with parent %v; want a new root", res.SpanContext().TraceID(), res.Parent())
			}
			links := res.Links()
			switch {
			case m.logged && (len(links) != 1 || links[0].SpanContext.TraceID() != orig.SpanContext().TraceID() || links[0].SpanContext.SpanID() != orig.SpanContext().SpanID()):
				t.Errorf("resumed span links %+v, want the original transaction span %s/%s", links, orig.SpanContext().TraceID(), orig.SpanContext().SpanID())
			case !m.logged && len(links) != 0:
				t.Errorf("resumed span links %+v, want none (the fast entry holds no trace context)", links)
			}
			if attr(res, coordinator.AttrStatus) != "committed" {
				t.Errorf("resumed span attributes %v", res.Attributes())
			}
			if cs := all.childrenOf(res).named(coordinator.SpanCommit).where(coordinator.AttrParticipant, b.Endpoints().Commit).where(coordinator.AttrResult, "ACK"); len(cs) == 0 {
				t.Errorf("no acknowledged Commit to %s under the resumed span", b.Endpoints().Commit)
			}
			refused := all.childrenOf(orig).named(coordinator.SpanCommit).where(coordinator.AttrParticipant, b.Endpoints().Commit).where(coordinator.AttrResult, "error")
			if len(refused) == 0 || attr(refused[0], coordinator.AttrError) == "" {
				t.Errorf("no refused Commit under the original span: %v", all.childrenOf(orig))
			}
			if t.Failed() {
				t.Logf("spans:%v", all)
			}
		})
	}
}

// TestTraceOffStoresNothing: with no TracerProvider the Begin entry is the untraced type
// whatever the cluster's level, and nothing is recorded.
func TestTraceOffStoresNothing(t *testing.T) {
	r, sr, _ := tracedRig(t)
	a := participanttest.New(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, a)
	r.waitTerminal(t, txn.ID)
	begins := 0
	for _, e := range entriesFor(r.log, txn.ID) {
		if b, ok := e.Cmd.(*fsm.Begin); ok {
			begins++
			if b.Trace != "" || b.Type() != fsm.CmdBegin {
				t.Fatalf("Begin %+v with tracing off", b)
			}
		}
	}
	if begins != 1 {
		t.Fatalf("%d Begin entries for %s", begins, txn.ID)
	}
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans recorded with tracing off", n)
	}
}
