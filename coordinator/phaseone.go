package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// phaseOne sends Prepare to every participant in parallel and logs the decision. A new
// leader runs it again for a transaction still preparing: participants answer a repeated
// Prepare with the same vote, and past the logged deadline every missing vote is a no.
// An ACK that reaches the leader at or after the logged deadline is no vote either: the
// participant was told the deadline, and the decision must not depend on how loaded the
// leader was when it read the reply.
//
// reached, when non-nil (a transaction this term began), has one flag per participant,
// set once a Prepare may have been written to it; a participant whose every Prepare failed
// before a connection was made holds nothing, needs no Rollback, and its reason says so.
// Returns errFenced, deciding nothing, when the fence held a Prepare back.
func (e *Engine) phaseOne(ctx context.Context, lg *lazyLog, txn *fsm.Txn, reached []bool) error {
	decision, votes, reasons, err := e.collectVotes(ctx, txn, reached)
	if err != nil {
		return err
	}
	return e.logDecision(ctx, lg, txn, decision, votes, reasons)
}

// logDecision logs the decision phase one made (the "decision" span) and tells the hooks.
func (e *Engine) logDecision(ctx context.Context, lg *lazyLog, txn *fsm.Txn, decision fsm.Decision, votes []fsm.Vote, reasons []string) error {
	if e.hooks != nil && e.hooks.BeforeDecide != nil {
		e.hooks.BeforeDecide(txn.ID, decision)
	}
	now := e.cfg.Now().UnixMilli()
	var cmd fsm.Command = &fsm.Decide{ID: txn.ID, Decision: decision, At: now, Votes: votes, Reasons: reasons}
	if decision == fsm.DecisionCommit {
		cmd = &fsm.DecideCommit{ID: txn.ID, AfterMs: now - txn.CreatedAt} // same state, 12 bytes less
	}
	_, dspan := e.startSpan(ctx, SpanDecision, trace.SpanKindInternal)
	res, err := e.apply(ctx, lg, cmd)
	if e.traced() {
		dspan.SetAttributes(AttrDecision.String(decision.String()))
		switch {
		case err != nil:
			dspan.SetStatus(codes.Error, err.Error())
		case res.Txn != nil:
			// The FSM's decision: an earlier one wins over what this leader proposed.
			dspan.SetAttributes(AttrDecision.String(res.Txn.Decision.String()), AttrIndex.Int64(int64(res.Txn.Index)))
		}
		dspan.End()
	}
	if err != nil {
		return err
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrDecided) && !errors.Is(res.Err, fsm.ErrPresumedAbort) {
		return fmt.Errorf("logging decision: %w", res.Err)
	}
	if e.hooks != nil && e.hooks.AfterDecide != nil && res.Txn != nil {
		e.hooks.AfterDecide(txn.ID, res.Txn.Decision)
	}
	if res.Txn != nil && e.lg.IsDebug() { // asked first: the transaction's logger is made on use
		lg.L().Debug("decided", "decision", res.Txn.Decision.String(), "index", res.Txn.Index)
	}
	return nil
}

// collectVotes is phase one without its log entry: Prepare to every participant of txn in
// parallel, bounded by its deadline, and the decision the votes make (commit only when
// every participant ACKed in time). It returns errStop when leadership ended and errFenced
// when the fence held a Prepare back, deciding nothing either way. The fast path (fast.go)
// runs it on a transaction the FSM does not hold yet.
func (e *Engine) collectVotes(ctx context.Context, txn *fsm.Txn, reached []bool) (fsm.Decision, []fsm.Vote, []string, error) {
	deadline := time.UnixMilli(txn.Deadline)
	pctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	n := len(txn.Participants)
	votes := make([]fsm.Vote, n)
	reasons := make([]string, n)
	type answer struct {
		i        int
		vote     fsm.Vote
		reason   string
		canceled bool // the call was canceled (by cancel below, or leadership ending)
		notSent  bool // provably never written (CallError.NotSent)
		fenced   bool // held back by the fence
	}
	answers := make(chan answer, n)
	req := participant.Request{TransactionID: txn.ID, Deadline: participant.FormatDeadline(deadline)}
	if e.cfg.InquiryURLs != nil {
		req.Inquiry = e.cfg.InquiryURLs()
	}
	for i, p := range txn.Participants {
		req := req
		if pl := txn.Payload(i); pl != "" {
			req.Payload = json.RawMessage(pl)
		}
		go func(i int, url string) {
			cctx, span := e.startSpan(pctx, SpanPrepare, trace.SpanKindClient)
			reply, err := e.caller.Call(cctx, url, participant.PhasePrepare, req)
			var ce *call.CallError
			var a answer
			switch {
			case err == nil && reply.Status == participant.ACK:
				if late := e.cfg.Now().Sub(deadline); late >= 0 {
					a = answer{i: i, vote: fsm.VoteNone, reason: fmt.Sprintf("ACK arrived %d ms after the deadline: no vote", late.Milliseconds())}
					break
				}
				a = answer{i: i, vote: fsm.VoteYes}
			case err == nil:
				a = answer{i: i, vote: fsm.VoteNo, reason: reply.Reason}
			default:
				isCE := errors.As(err, &ce)
				canceled := errors.Is(err, context.Canceled) || isCE && ce.Kind == call.KindCanceled
				a = answer{i: i, vote: fsm.VoteError, reason: e.prepareError(err, txn), canceled: canceled,
					// A call provably never written (it failed to connect, or it was canceled
					// before it had a connection: another participant had already said no)
					// proves the participant holds nothing, as this transaction is fresh and no
					// other leader called it. Anything else counts as reached.
					notSent: isCE && ce.NotSent && (canceled || ce.Kind == call.KindTransport),
					fenced:  isCE && ce.Kind == call.KindFenced}
			}
			if e.traced() {
				endPrepareSpan(span, url, a.vote, a.reason, err)
			}
			answers <- a
		}(i, p.Prepare)
	}
	yes := 0
	cutShort, fenced := false, false
	for got := 0; got < n; got++ {
		a := <-answers
		if reached != nil && !a.notSent {
			reached[a.i] = true
		}
		if a.fenced {
			fenced = true
		}
		if ctx.Err() != nil || fenced {
			// Leadership ended or cannot be confirmed: drain the rest and decide nothing.
			continue
		}
		if cutShort && a.canceled {
			// Canceled because another participant already said no: no answer, not an
			// error. Other errors (a second timeout at the deadline, a 500 that raced a
			// NACK) are kept, so that the errors list names every participant that failed.
			// One canceled before it was sent is said so: it gets no Rollback either.
			if a.notSent {
				votes[a.i], reasons[a.i] = fsm.VoteError, "not sent: another participant had already refused"
			}
			continue
		}
		votes[a.i], reasons[a.i] = a.vote, a.reason
		if a.vote == fsm.VoteYes {
			yes++
		} else if !cutShort {
			// One no decides the transaction: stop waiting for the others.
			cutShort = true
			cancel()
		}
	}
	if ctx.Err() != nil {
		return 0, nil, nil, errStop
	}
	if fenced {
		return 0, nil, nil, errFenced
	}
	for i := range reasons {
		if reached != nil && !reached[i] && votes[i] == fsm.VoteError {
			reasons[i] += " (never delivered: no rollback needed)"
		}
	}
	decision := fsm.DecisionAbort
	if yes == n {
		decision = fsm.DecisionCommit
	}
	return decision, votes, reasons, nil
}

// prepareError words a failed Prepare for the client's errors list.
func (e *Engine) prepareError(err error, txn *fsm.Txn) string {
	var ce *call.CallError
	if errors.As(err, &ce) && ce.Kind == call.KindTimeout {
		return fmt.Sprintf("no answer within %d ms", txn.Deadline-txn.CreatedAt)
	}
	return err.Error()
}

// endPrepareSpan records one Prepare's outcome: the vote as logged ("none" for no vote),
// the reason, and the call's error.
func endPrepareSpan(span trace.Span, url string, vote fsm.Vote, reason string, err error) {
	v := vote.String()
	if vote == fsm.VoteNone {
		v = "none"
	}
	span.SetAttributes(AttrParticipant.String(url), AttrHost.String(hostAttr(url)), AttrVote.String(v))
	if reason != "" {
		span.SetAttributes(AttrReason.String(reason))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
