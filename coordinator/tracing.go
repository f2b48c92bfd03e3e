package coordinator

import (
	"context"
	"net/url"
	"sync"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/fsm"
)

// The spans the engine records (docs/observability.md lists them with their attributes).
// A transaction span covers one leader's work on one transaction: from Submit to its
// terminal status on the leader that began it, or from resumption on a leader that took it
// over (that span starts a new trace linked to the one the Begin entry names).
const (
	SpanTransaction = "txcoord.transaction" // parent: the client's traceparent, if any
	SpanBegin       = "txcoord.begin"       // logging the Begin entry
	SpanPrepare     = "txcoord.prepare"     // one Prepare call, per participant
	SpanDecision    = "txcoord.decision"    // logging the decision
	SpanCommit      = "txcoord.commit"      // one Commit attempt to one participant
	SpanRollback    = "txcoord.rollback"    // one Rollback attempt to one participant
	SpanComplete    = "txcoord.complete"    // logging completion (or the heuristic failure)
)

// Attribute keys of the engine's spans.
const (
	AttrTxnID       = attribute.Key("txcoord.transaction.id")
	AttrResumed     = attribute.Key("txcoord.resumed")    // bool: a leader took the transaction over
	AttrTerm        = attribute.Key("txcoord.raft.term")  // int: the Raft term of this leader
	AttrIndex       = attribute.Key("txcoord.raft.index") // int: index of the entry logged
	AttrStatus      = attribute.Key("txcoord.status")     // the status when the span ended
	AttrParticipant = attribute.Key("txcoord.participant")
	AttrHost        = attribute.Key("server.address")
	AttrVote        = attribute.Key("txcoord.vote") // ACK, NACK, error, none
	AttrReason      = attribute.Key("txcoord.reason")
	AttrDecision    = attribute.Key("txcoord.decision") // commit, abort
	AttrAttempt     = attribute.Key("txcoord.attempt")  // int, from 1
	AttrResult      = attribute.Key("txcoord.result")   // ACK, NACK, error
	AttrError       = attribute.Key("txcoord.error")
	AttrMode        = attribute.Key("txcoord.mode") // "fast" on a fast-mode transaction span (fast.go)
)

// traced is the engine's tracer; nil when tracing is off, which keeps every span call
// off the hot path (not even a no-op span is made).
func (e *Engine) traced() bool { return e.tracer != nil }

// startSpan starts a child of the span in ctx; with tracing off it returns ctx and the
// (no-op) span already there.
func (e *Engine) startSpan(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if e.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return e.tracer.Start(ctx, name, trace.WithSpanKind(kind))
}

// startTxnSpan starts the transaction span of a Submit: a child of the caller's span
// context (the client's traceparent, extracted by the HTTP API).
func (e *Engine) startTxnSpan(ctx context.Context, term uint64) trace.Span {
	if e.tracer == nil {
		return nil
	}
	_, span := e.tracer.Start(ctx, SpanTransaction, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(AttrTerm.Int64(int64(term))))
	return span
}

// resumeSpan starts the transaction span of a resumed transaction: a new trace, linked to
// the span that began it when the Begin entry carried its trace context.
func (e *Engine) resumeSpan(txn *fsm.Txn, term uint64) trace.Span {
	if e.tracer == nil {
		return nil
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(AttrTxnID.String(txn.ID), AttrResumed.Bool(true), AttrTerm.Int64(int64(term)), AttrStatus.String(txn.Status.String()))}
	if sc := parseTraceparent(txn.Trace); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("txcoord.link", "begun by")}}))
	}
	_, span := e.tracer.Start(context.Background(), SpanTransaction, opts...)
	return span
}

// traceparent returns span's W3C traceparent, "" for none or an unsampled span (a trace
// no one records is not worth a log byte).
func traceparent(span trace.Span) string {
	if span == nil || !span.SpanContext().IsSampled() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), c)
	return c["traceparent"]
}

// parseTraceparent reads a logged traceparent; an invalid span context for "" or garbage.
func parseTraceparent(s string) trace.SpanContext {
	if s == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": s})
	return trace.SpanContextFromContext(ctx)
}

// lazyLog makes a logger with fields only when a line is logged (L): most transactions
// log nothing, and hclog's With costs allocations on each. Safe for concurrent use.
// It is either one transaction's (e, id, term, span: txnLogger) or whatever mk makes.
type lazyLog struct {
	once sync.Once
	lg   hclog.Logger
	mk   func() hclog.Logger

	e    *Engine
	id   string
	term uint64
	span trace.Span
}

// L returns the logger, made on first use.
func (l *lazyLog) L() hclog.Logger {
	l.once.Do(func() {
		if l.mk != nil {
			l.lg = l.mk()
		} else {
			l.lg = l.e.txnLogger(l.id, l.term, l.span)
		}
	})
	return l.lg
}

// txnLogger is the logger of one transaction's lines: its id, this leader's Raft term and,
// when a trace is active, the transaction span's trace and span ids.
func (e *Engine) txnLogger(id string, term uint64, span trace.Span) hclog.Logger {
	if span != nil {
		if sc := span.SpanContext(); sc.IsValid() {
			return e.lg.With("txn", id, "term", term, "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
		}
	}
	return e.lg.With("txn", id, "term", term)
}

// endTxnSpan ends a transaction span with the status the FSM holds (or why this leader
// stopped driving it).
func endTxnSpan(span trace.Span, txn *fsm.Txn, stopped string) {
	if span == nil {
		return
	}
	if txn != nil {
		span.SetAttributes(AttrStatus.String(txn.Status.String()))
		if txn.Decision != fsm.DecisionNone {
			span.SetAttributes(AttrDecision.String(txn.Decision.String()))
		}
		if txn.Status == fsm.StatusFailed {
			span.SetStatus(codes.Error, "heuristic outcome: phase two gave up")
		}
	}
	if stopped != "" {
		span.AddEvent("driver stopped", trace.WithAttributes(attribute.String("txcoord.stopped", stopped)))
	}
	span.End()
}

// hostAttr is the participant URL's host for server.address ("" when it does not parse).
func hostAttr(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Hostname()
	}
	return ""
}
