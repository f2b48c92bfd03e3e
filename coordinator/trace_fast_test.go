package coordinator_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

func submitTracedFast(t *testing.T, l *leader, tp trace.TracerProvider, fps ...*participanttest.FP) (trace.SpanContext, *fsm.Txn) {
	t.Helper()
	ctx, client := tp.Tracer("client").Start(context.Background(), "client POST")
	defer client.End()
	txn, err := l.eng.Submit(ctx, coordinator.Request{Participants: parts(fps...), Timeout: roomy, Mode: coordinator.ModeFast})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return client.SpanContext(), txn
}

// TestTraceFastCommitted: the span tree of a fast-mode commit. The transaction span is a
// child of the client's span and says fast; under it one Prepare per participant, the
// decision (the FastDecide entry), a Commit per participant and the completion, and no
// Begin (none is logged). The record holds no trace context: FastDecide has no field.
func TestTraceFastCommitted(t *testing.T) {
	r, sr, tp := tracedRig(t)
	a, b := participanttest.New(t), participanttest.New(t)
	cfg := fastCfg()
	cfg.TracerProvider = tp
	l := r.lead(cfg, nil)
	client, txn := submitTracedFast(t, l, tp, a, b)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("status %s", got.Status)
	}
	root, all := txnSpan(t, sr, txn.ID, false)
	if root.Parent().SpanID() != client.SpanID() || root.SpanContext().TraceID() != client.TraceID() {
		t.Fatalf("transaction span's parent %s, want the client's span %s", root.Parent().SpanID(), client.SpanID())
	}
	if attr(root, coordinator.AttrMode) != "fast" || attr(root, coordinator.AttrStatus) != "committed" || attr(root, coordinator.AttrDecision) != "commit" || attr(root, coordinator.AttrTerm) != "1" {
		t.Errorf("transaction span attributes %v", root.Attributes())
	}
	kids := all.childrenOf(root)
	if bs := kids.named(coordinator.SpanBegin); len(bs) != 0 {
		t.Errorf("begin spans %v in fast mode", bs)
	}
	for _, fp := range []*participanttest.FP{a, b} {
		e := fp.Endpoints()
		if ps := kids.named(coordinator.SpanPrepare).where(coordinator.AttrParticipant, e.Prepare); len(ps) != 1 || attr(ps[0], coordinator.AttrVote) != "ACK" {
			t.Errorf("prepare spans of %s: %v", e.Prepare, ps)
		}
		if cs := kids.named(coordinator.SpanCommit).where(coordinator.AttrParticipant, e.Commit); len(cs) == 0 || attr(cs[0], coordinator.AttrResult) != "ACK" || attr(cs[0], coordinator.AttrAttempt) != "1" {
			t.Errorf("commit spans of %s: %v", e.Commit, cs)
		}
		for _, c := range fp.Calls(txn.ID) {
			if c.Traceparent == "" {
				t.Errorf("%s call to %s carried no traceparent", c.Phase, fp.URL())
			}
		}
	}
	if ds := kids.named(coordinator.SpanDecision); len(ds) != 1 || attr(ds[0], coordinator.AttrDecision) != "commit" || attr(ds[0], coordinator.AttrIndex) == "" {
		t.Errorf("decision spans %v", ds)
	}
	if cs := kids.named(coordinator.SpanComplete); len(cs) != 1 || attr(cs[0], coordinator.AttrStatus) != "committed" {
		t.Errorf("complete spans %v", cs)
	}
	if rec, _ := r.fsm.Get(txn.ID); rec.Trace != "" {
		t.Errorf("fast record's trace context %q, want none", rec.Trace)
	}
	if t.Failed() {
		t.Logf("spans:%v", all)
	}
}

// TestTraceFastRolledBack: a NACK in fast mode shows on its Prepare span, the decision is
// abort, and the early Rollback calls (sent while the abort entry is logged) are spans of
// the transaction too.
func TestTraceFastRolledBack(t *testing.T) {
	r, sr, tp := tracedRig(t)
	a, b := participanttest.New(t), participanttest.New(t)
	b.Set(participant.PhasePrepare, participanttest.NACK("no rooms"))
	cfg := fastCfg()
	cfg.TracerProvider = tp
	l := r.lead(cfg, nil)
	_, txn := submitTracedFast(t, l, tp, a, b)
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
	if len(kids.named(coordinator.SpanCommit)) != 0 {
		t.Errorf("commit spans %v", kids.named(coordinator.SpanCommit))
	}
	if attr(root, coordinator.AttrMode) != "fast" || attr(root, coordinator.AttrStatus) != "rolled_back" || attr(root, coordinator.AttrDecision) != "abort" {
		t.Errorf("transaction span attributes %v", root.Attributes())
	}
	if t.Failed() {
		t.Logf("spans:%v", all)
	}
}

// TestTraceFastResumedIsUnlinked: leader A logs a fast commit and is deposed while a
// participant refuses Commit; leader B resumes phase two in a new trace whose span has no
// link (the fast entry carries no trace context: docs/observability.md, what is not
// promised), and records the Commit it makes.
func TestTraceFastResumedIsUnlinked(t *testing.T) {
	r, sr, tp := tracedRig(t)
	a, b := participanttest.New(t), participanttest.New(t)
	b.Set(participant.PhaseCommit, participanttest.Status(503, "busy"))
	cfg := fastCfg()
	cfg.TracerProvider = tp
	la := r.lead(cfg, nil)
	_, txn := submitTracedFast(t, la, tp, a, b)
	waitFP(t, b, "a refused Commit", func() bool { return b.Count(participant.PhaseCommit) >= 2 })
	la.stop(t)
	orig, _ := txnSpan(t, sr, txn.ID, false)
	b.Set(participant.PhaseCommit, participanttest.ACK())

	cfgB := fastCfg()
	cfgB.TracerProvider = tp
	r.lead(cfgB, nil)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("status %s", got.Status)
	}
	res, all := txnSpan(t, sr, txn.ID, true)
	if res.SpanContext().TraceID() == orig.SpanContext().TraceID() || res.Parent().IsValid() || len(res.Links()) != 0 {
		t.Errorf("resumed span in trace %s, parent %v, links %+v; want a new unlinked root", res.SpanContext().TraceID(), res.Parent(), res.Links())
	}
	if cs := all.childrenOf(res).named(coordinator.SpanCommit).where(coordinator.AttrParticipant, b.Endpoints().Commit).where(coordinator.AttrResult, "ACK"); len(cs) == 0 {
		t.Errorf("no acknowledged Commit to %s under the resumed span", b.Endpoints().Commit)
	}
	if t.Failed() {
		t.Logf("spans:%v", all)
	}
}

// TestTraceBelowLevel4LogsNoContext: at feature level 3 (a server may run a build that
// cannot apply a traced Begin, type 16) a traced leader logs an untraced Begin (type 1) and
// still records the transaction's spans.
func TestTraceBelowLevel4LogsNoContext(t *testing.T) {
	r := newRig(t)
	r.level3(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	a := participanttest.New(t)
	cfg := fastCfg()
	cfg.TracerProvider = tp
	l := r.lead(cfg, nil)
	_, txn := submitTraced(t, l, tp, a)
	r.waitTerminal(t, txn.ID)
	txnSpan(t, sr, txn.ID, false)
	for _, e := range entriesFor(r.log, txn.ID) {
		if b, ok := e.Cmd.(*fsm.Begin); ok && (b.Trace != "" || b.Type() != fsm.CmdBegin) {
			t.Fatalf("Begin %+v (type %d) at level 3", b, b.Type())
		}
	}
	if n := countType(r.log, fsm.CmdBeginTraced); n != 0 {
		t.Fatalf("%d traced Begins at level 3", n)
	}
}
