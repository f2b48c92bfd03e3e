package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// phaseTwo sends the logged outcome to every participant that has not acknowledged it,
// until each does, and logs completion; or, when one exhausts PhaseTwoMaxAttempts, logs
// the transaction as failed. The decision never changes: a NACK or an error in phase two is
// retried, never treated as a vote.
func (e *Engine) phaseTwo(ctx context.Context, txn *fsm.Txn) error {
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
	for i := range txn.Participants {
		if !txn.States[i].Acked {
			pending = append(pending, i)
		}
	}
	// In parallel, the last one on this goroutine: one goroutine fewer per transaction.
	var wg sync.WaitGroup
	for k, i := range pending {
		url := urlFor(txn.Participants[i], phase)
		if k == len(pending)-1 {
			e.deliver(ctx, txn.ID, i, url, phase, req, p2)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.deliver(ctx, txn.ID, i, url, phase, req, p2)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return errStop
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
		return e.complete(ctx, fsm.Completion{ID: txn.ID, Attempts: attempts})
	}
	e.lg.Error("phase two gave up: heuristic outcome, operator needed", "txn", txn.ID, "phase", string(phase), "reports", fmt.Sprint(reports))
	res, err := e.apply(ctx, &fsm.Fail{ID: txn.ID, At: e.cfg.Now().UnixMilli(), Reports: reports})
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

// deliver calls one participant until it acknowledges, the attempt limit is reached or
// ctx ends. Waits between attempts grow exponentially with jitter up to RetryMax, and a
// participant's Retry-After (429, 503) is honoured up to RetryAfterMax, so a refusing
// participant sees a bounded request rate (case C08).
func (e *Engine) deliver(ctx context.Context, id string, i int, url string, phase participant.Phase, req participant.Request, p2 *phaseTwoRun) {
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
		reply, err := e.caller.Call(cctx, url, phase, req)
		cancel()
		if ctx.Err() != nil {
			return
		}
		rep.Attempts++
		if err == nil && reply.Status == participant.ACK {
			rep.Acked, rep.Error = true, ""
			p2.set(i, rep)
			return
		}
		var wait time.Duration
		if err == nil {
			rep.Error = "NACK: " + reply.Reason
		} else {
			rep.Error = err.Error()
			var ce *participant.CallError
			if errors.As(err, &ce) {
				if ce.Kind == participant.KindTimeout {
					rep.Error = fmt.Sprintf("no answer within %d ms", e.cfg.CallTimeout.Milliseconds())
				}
				if ce.RetryAfter > 0 {
					wait = min(ce.RetryAfter, e.cfg.RetryAfterMax)
				}
			}
		}
		all := p2.set(i, rep)
		e.lg.Warn("phase-two call refused; will retry", "txn", id, "participant", url, "attempt", rep.Attempts, "error", rep.Error)
		if int(rep.Attempts) >= e.cfg.PhaseTwoMaxAttempts {
			return
		}
		e.cfg.Observer.Retry(hostOf(url), string(phase))
		if rep.Attempts == 1 || int(rep.Attempts)%e.cfg.ProgressEvery == 0 {
			// Best effort: a lost Progress entry only hides detail, never an outcome.
			if _, err := e.log.Apply(ctx, &fsm.Progress{ID: id, Reports: all}); err != nil && ctx.Err() == nil {
				e.lg.Debug("logging progress failed", "txn", id, "error", err)
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
