package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// phaseTwo sends the logged outcome to every participant that has not acknowledged it,
// until each does, and logs completion; or, when one is still refusing once the retry
// window (PhaseTwoRetryFor from PhaseTwoSince) has passed or PhaseTwoMaxAttempts is
// reached, logs the transaction as failed. The decision never changes: a NACK or an error
// in phase two is retried, never treated as a vote.
//
// reached (see phaseOne) spares a Rollback to a participant no call ever reached: it
// holds nothing, and is recorded as acknowledged with no attempt. early (fast.go), when
// set, holds Rollback calls already made before the decision was logged: those
// acknowledged are not called again. Returns errFenced when the fence held a call back.
func (e *Engine) phaseTwo(ctx context.Context, lg *lazyLog, txn *fsm.Txn, reached []bool, early []fsm.Report) error {
	phase := participant.PhaseCommit
	if txn.Decision == fsm.DecisionAbort {
		phase = participant.PhaseRollback
	}
	req := participant.Request{TransactionID: txn.ID, Deadline: participant.FormatDeadline(time.UnixMilli(txn.Deadline))}

	n := len(txn.Participants)
	p2 := &phaseTwoRun{reports: make([]fsm.Report, n)}
	for i, st := range txn.States {
		p2.reports[i] = fsm.Report{Acked: st.Acked, Attempts: st.Attempts, Error: st.LastError}
	}
	var pending []int
	undelivered := false
	for i := range txn.Participants {
		switch {
		case txn.States[i].Acked:
		case phase == participant.PhaseRollback && i < len(early) && early[i].Acked:
			p2.reports[i] = early[i]
		case phase == participant.PhaseRollback && reached != nil && !reached[i]:
			p2.reports[i].Acked = true // never reached: nothing to roll back
			undelivered = true
		default:
			pending = append(pending, i)
		}
	}
	if undelivered && len(pending) > 0 {
		// Only this term knows that no call ever reached that participant (reached is
		// memory). Log it as acknowledged before the others' Rollbacks, which may take long:
		// a later leader then skips it too, instead of calling a URL where nothing listens
		// until the retry window ends the transaction failed (issue 14). It must be logged
		// before the client can be told the outcome: a leadership lost first (a transfer, a
		// partition) ends this driver here, unsettled, and the later leader, which does not
		// know, calls that participant as before (docs/participant-protocol.md); an answered
		// rolled_back is never followed by a record still waiting on it (QA F19).
		if _, err := e.apply(ctx, lg, &fsm.Progress{ID: txn.ID, Reports: p2.snapshot()}); err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.live[txn.ID] = p2
	e.mu.Unlock()
	until := time.Time{}
	if e.cfg.PhaseTwoRetryFor > 0 {
		until = time.UnixMilli(txn.PhaseTwoSince()).Add(e.cfg.PhaseTwoRetryFor)
	}
	// In parallel, the last one on this goroutine: one goroutine fewer per transaction.
	var wg sync.WaitGroup
	for k, i := range pending {
		url := urlFor(txn.Participants[i], phase)
		if k == len(pending)-1 {
			e.deliver(ctx, lg, txn.ID, i, url, phase, req, p2, until)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.deliver(ctx, lg, txn.ID, i, url, phase, req, p2, until)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return errStop
	}
	if p2.isFenced() {
		return errFenced
	}
	reports := p2.snapshot()
	if p2.allAcked() {
		// Every participant holds the outcome: the client may be told now; the completion
		// entry is bookkeeping and rides in a batch with others.
		e.settle(txn.ID)
		attempts := make([]uint32, n)
		for i, r := range reports {
			attempts[i] = r.Attempts
		}
		_, cspan := e.startSpan(ctx, SpanComplete, trace.SpanKindInternal)
		err := e.complete(ctx, fsm.Completion{ID: txn.ID, Attempts: attempts})
		if e.traced() {
			endCompleteSpan(cspan, completedStatus(phase), err)
		}
		return err
	}
	lg.L().Error("phase two gave up: heuristic outcome, operator needed", "phase", string(phase), "reports", fmt.Sprint(reports))
	_, cspan := e.startSpan(ctx, SpanComplete, trace.SpanKindInternal)
	res, err := e.apply(ctx, lg, &fsm.Fail{ID: txn.ID, At: e.cfg.Now().UnixMilli(), Reports: reports})
	if e.traced() {
		endCompleteSpan(cspan, fsm.StatusFailed, err)
	}
	if err != nil {
		return err
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrBadTransition) {
		return fmt.Errorf("logging phase-two end: %w", res.Err)
	}
	return nil
}

// phaseTwoRun holds the per-participant progress of one phase-two pass.
type phaseTwoRun struct {
	mu      sync.Mutex
	reports []fsm.Report
	fenced  bool // a call was held back by the fence
	// unlogged: the FSM holds no record of this transaction's participants (a fast
	// transaction whose entry was refused, fast.go): no Progress entry is logged.
	unlogged bool
}

func (p *phaseTwoRun) setFenced() {
	p.mu.Lock()
	p.fenced = true
	p.mu.Unlock()
}

func (p *phaseTwoRun) isFenced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fenced
}

// troubled reports whether a participant other than i has failed an attempt and not
// acknowledged yet: a transaction whose progress is worth logging.
func (p *phaseTwoRun) troubled(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for j, r := range p.reports {
		if j != i && !r.Acked && r.Error != "" {
			return true
		}
	}
	return false
}

// Live returns the phase-two progress of id as this leader knows it now, one report per
// participant (acknowledgements, attempts, last errors), ahead of what the log records;
// ok false when this node is not running phase two of id. GET on the leader shows it.
func (e *Engine) Live(id string) (reports []fsm.Report, ok bool) {
	e.mu.Lock()
	p2 := e.live[id]
	e.mu.Unlock()
	if p2 == nil {
		return nil, false
	}
	return p2.snapshot(), true
}

func (p *phaseTwoRun) set(i int, r fsm.Report) []fsm.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reports[i] = r
	return append([]fsm.Report(nil), p.reports...)
}

func (p *phaseTwoRun) snapshot() []fsm.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]fsm.Report(nil), p.reports...)
}

func (p *phaseTwoRun) allAcked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.reports {
		if !r.Acked {
			return false
		}
	}
	return true
}

// deliver calls one participant until it acknowledges, the retry window ends (until; zero
// for none), the attempt cap is reached or ctx ends. Waits between attempts grow
// exponentially with jitter up to RetryMax, and a participant's Retry-After (429, 503) is
// honoured up to RetryAfterMax, so a refusing participant sees a bounded request rate (case
// C08). Every attempt counted is exactly one request written (the client never replays);
// a call the fence held back is not an attempt and ends the pass (errFenced).
func (e *Engine) deliver(ctx context.Context, lg *lazyLog, id string, i int, url string, phase participant.Phase, req participant.Request, p2 *phaseTwoRun, until time.Time) {
	// Retry state is made on the first failure: almost every call succeeds at once, and
	// this runs once per participant per transaction.
	var (
		bo    *backoff.ExponentialBackOff
		timer *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	rep := p2.snapshot()[i]
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, e.cfg.CallTimeout)
		cctx, span := e.startSpan(cctx, attemptSpan(phase), trace.SpanKindClient)
		reply, err := e.caller.Call(cctx, url, phase, req)
		cancel()
		if e.traced() {
			endAttemptSpan(span, url, rep.Attempts+1, reply, err)
		}
		if ctx.Err() != nil {
			return
		}
		if isFenced(err) {
			p2.setFenced()
			return
		}
		rep.Attempts++
		if err == nil && reply.Status == participant.ACK {
			rep.Acked, rep.Error = true, ""
			all := p2.set(i, rep)
			if !p2.unlogged && p2.troubled(i) {
				// Another participant is failing: log this acknowledgement now, so that every
				// node shows it while the transaction is stuck, not only once it ends.
				if _, err := e.log.Apply(ctx, &fsm.Progress{ID: id, Reports: all}); err != nil && ctx.Err() == nil {
					lg.L().Debug("logging progress failed", "error", err)
				}
			}
			return
		}
		var wait time.Duration
		if err == nil {
			rep.Error = "NACK: " + reply.Reason
		} else {
			rep.Error = err.Error()
			var ce *call.CallError
			if errors.As(err, &ce) {
				if ce.Kind == call.KindTimeout {
					rep.Error = fmt.Sprintf("no answer within %d ms", e.cfg.CallTimeout.Milliseconds())
				}
				if ce.RetryAfter > 0 {
					wait = min(ce.RetryAfter, e.cfg.RetryAfterMax)
				}
			}
		}
		all := p2.set(i, rep)
		lg.L().Warn("phase-two call refused; will retry", "participant", url, "attempt", rep.Attempts, "error", rep.Error)
		if e.cfg.PhaseTwoMaxAttempts > 0 && int(rep.Attempts) >= e.cfg.PhaseTwoMaxAttempts {
			return
		}
		if !until.IsZero() && !e.cfg.Now().Before(until) {
			return
		}
		e.cfg.Observer.Retry(hostOf(url), string(phase))
		if !p2.unlogged && (rep.Attempts == 1 || int(rep.Attempts)%e.cfg.ProgressEvery == 0) {
			// Best effort: a lost Progress entry only hides detail, never an outcome.
			if _, err := e.log.Apply(ctx, &fsm.Progress{ID: id, Reports: all}); err != nil && ctx.Err() == nil {
				lg.L().Debug("logging progress failed", "error", err)
			}
		}
		if bo == nil {
			bo = backoff.NewExponentialBackOff()
			bo.InitialInterval = e.cfg.RetryInitial
			bo.MaxInterval = e.cfg.RetryMax
			bo.Multiplier = 2
			bo.RandomizationFactor = 0.5
			bo.MaxElapsedTime = 0
			bo.Reset()
			timer = time.NewTimer(time.Hour)
		}
		wait = max(wait, bo.NextBackOff())
		if !until.IsZero() {
			// One last attempt at the window's end rather than a wait past it.
			wait = max(min(wait, until.Sub(e.cfg.Now())), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.nudged(id):
			bo.Reset()
		}
	}
}

func urlFor(p fsm.Participant, phase participant.Phase) string {
	if phase == participant.PhaseRollback {
		return p.Rollback
	}
	return p.Commit
}

func attemptSpan(phase participant.Phase) string {
	if phase == participant.PhaseRollback {
		return SpanRollback
	}
	return SpanCommit
}

func completedStatus(phase participant.Phase) fsm.Status {
	if phase == participant.PhaseRollback {
		return fsm.StatusRolledBack
	}
	return fsm.StatusCommitted
}

// endAttemptSpan records one phase-two call: the participant, the attempt number (from 1),
// the result (ACK, NACK or error) and the error.
func endAttemptSpan(span trace.Span, url string, attempt uint32, reply participant.Reply, err error) {
	span.SetAttributes(AttrParticipant.String(url), AttrHost.String(hostAttr(url)), AttrAttempt.Int64(int64(attempt)))
	switch {
	case err != nil:
		span.SetAttributes(AttrResult.String("error"), AttrError.String(err.Error()))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case reply.Status == participant.ACK:
		span.SetAttributes(AttrResult.String("ACK"))
	default:
		span.SetAttributes(AttrResult.String("NACK"), AttrReason.String(reply.Reason))
		span.SetStatus(codes.Error, "NACK: "+reply.Reason)
	}
	span.End()
}

// endCompleteSpan records the logged end of phase two.
func endCompleteSpan(span trace.Span, st fsm.Status, err error) {
	span.SetAttributes(AttrStatus.String(st.String()))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
