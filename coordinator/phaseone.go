package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// phaseOne sends Prepare to every participant in parallel and logs the decision. A new
// leader runs it again for a transaction still preparing: participants answer a repeated
// Prepare with the same vote, and past the logged deadline every missing vote is a no.
func (e *Engine) phaseOne(ctx context.Context, txn *fsm.Txn) error {
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
	}
	answers := make(chan answer, n)
	req := participant.Request{TransactionID: txn.ID, Deadline: participant.FormatDeadline(deadline)}
	for i, p := range txn.Participants {
		req := req
		if pl := txn.Payload(i); pl != "" {
			req.Payload = json.RawMessage(pl)
		}
		go func(i int, url string) {
			reply, err := e.caller.Call(pctx, url, participant.PhasePrepare, req)
			var ce *participant.CallError
			switch {
			case err == nil && reply.Status == participant.ACK:
				answers <- answer{i: i, vote: fsm.VoteYes}
			case err == nil:
				answers <- answer{i: i, vote: fsm.VoteNo, reason: reply.Reason}
			default:
				canceled := errors.Is(err, context.Canceled) || errors.As(err, &ce) && ce.Kind == participant.KindCanceled
				answers <- answer{i: i, vote: fsm.VoteError, reason: e.prepareError(err, txn), canceled: canceled}
			}
		}(i, p.Prepare)
	}
	yes := 0
	cutShort := false
	for got := 0; got < n; got++ {
		a := <-answers
		if ctx.Err() != nil {
			// Leadership ended: drain the rest and decide nothing; the next leader will.
			continue
		}
		if cutShort && a.canceled {
			// Canceled because another participant already said no: no answer, not an
			// error. Other errors (a second timeout at the deadline, a 500 that raced a
			// NACK) are kept, so that the errors list names every participant that failed.
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
		return errStop
	}
	decision := fsm.DecisionAbort
	if yes == n {
		decision = fsm.DecisionCommit
	}
	if e.hooks != nil && e.hooks.BeforeDecide != nil {
		e.hooks.BeforeDecide(txn.ID, decision)
	}
	now := e.cfg.Now().UnixMilli()
	var cmd fsm.Command = &fsm.Decide{ID: txn.ID, Decision: decision, At: now, Votes: votes, Reasons: reasons}
	if decision == fsm.DecisionCommit {
		cmd = &fsm.DecideCommit{ID: txn.ID, AfterMs: now - txn.CreatedAt} // same state, 12 bytes less
	}
	res, err := e.apply(ctx, cmd)
	if err != nil {
		return err
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrDecided) {
		return fmt.Errorf("logging decision: %w", res.Err)
	}
	if e.hooks != nil && e.hooks.AfterDecide != nil && res.Txn != nil {
		e.hooks.AfterDecide(txn.ID, res.Txn.Decision)
	}
	if res.Txn != nil {
		e.lg.Debug("decided", "txn", txn.ID, "decision", res.Txn.Decision.String(), "index", res.Txn.Index)
	}
	return nil
}

// prepareError words a failed Prepare for the client's errors list.
func (e *Engine) prepareError(err error, txn *fsm.Txn) string {
	var ce *participant.CallError
	if errors.As(err, &ce) && ce.Kind == participant.KindTimeout {
		return fmt.Sprintf("no answer within %d ms", txn.Deadline-txn.CreatedAt)
	}
	return err.Error()
}
