package coordinator

// The fast mode (issue 17, docs/fast-path.md): one consensus round per transaction. The
// leader sends Prepare at once, without a Begin entry, and logs one fsm.FastDecide entry
// with the transaction and its decision; phase two and completion are then as in the
// default mode. A new leader knows nothing of a fast transaction whose entry was not logged,
// and does nothing for it: its participants ask (inquiry.go), and the leader's presumed
// abort, ordered by the log against any decision still in flight, answers them.
//
// A rollback the leader decides (a NACK, an error, the deadline) needs no entry first: the
// Rollback calls go out at once, while the abort entry is logged. That is safe because only
// this leader can ever log a decision for the transaction (it minted the id, and no other
// leader resumes a fast transaction it has no record of), and it decided abort: whatever
// the log ends up holding for the id (the abort entry, or a presumed abort if this leader
// dies first) is an abort too. Phase two then only calls the participants the early
// Rollback did not reach.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// Mode is how a transaction runs: "default" or "fast".
type Mode string

// The modes.
const (
	// ModeDefault logs Begin before any Prepare (the seed's protocol): a new leader rolls
	// back every participant of a transaction it finds undecided. For participants that
	// cannot ask for an outcome.
	ModeDefault Mode = "default"
	// ModeFast logs only the decision, with the transaction, after phase one: one
	// consensus round instead of two. Its participants must implement the inquiry
	// (docs/participant-protocol.md): a leader that dies before its entry is logged leaves
	// them to ask. Needs cluster feature level 3.
	ModeFast Mode = "fast"
)

// ParseMode returns the Mode named s ("" is ModeDefault) or an error naming the choices.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeDefault:
		return ModeDefault, nil
	case ModeFast:
		return ModeFast, nil
	}
	return "", fmt.Errorf(`mode must be "default" or "fast", not %q`, s)
}

// fastRun is one fast transaction between its first Prepare and its logged decision.
type fastRun struct {
	txn *fsm.Txn // the transaction as it will be logged; never in the FSM itself
	req Request
	// refs is Begin.Refs for the entry (the endpoint table), computed before the clock.
	refs []int32

	done chan struct{} // closed once res and err are set
	res  *fsm.Txn      // the record Submit answers with
	err  error
}

// submitFast runs r in fast mode: Submit's part. It returns once the decision entry is
// applied (the record, in committing or rolling_back), or once the entry was refused (the
// presumed-abort record that won, or the transaction an idempotency key is bound to). A
// retry with the same key on this leader while the first is running joins it.
func (e *Engine) submitFast(ctx context.Context, t *term, r Request) (*fsm.Txn, error) {
	if e.cfg.FeatureGate != nil {
		if err := e.cfg.FeatureGate(3, "fast mode"); err != nil {
			return nil, err
		}
	}
	if r.Key != "" {
		if txn, ok := e.state.ByKey(r.Key); ok {
			return sameRequest(txn, r)
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("minting transaction id: %w", err)
	}
	refs := e.refs(ctx, r.Participants) // before the clock: a first-use Define takes a round
	now := e.cfg.Now()
	txn := &fsm.Txn{
		ID: id.String(), Key: r.Key, CreatedAt: now.UnixMilli(), Deadline: now.Add(r.Timeout).UnixMilli(),
		Participants: r.Participants, States: make([]fsm.ParticipantState, len(r.Participants)),
		Status: fsm.StatusPreparing,
	}
	if slices.ContainsFunc(r.Payloads, func(p string) bool { return p != "" }) {
		txn.Payloads = r.Payloads
	}
	run := &fastRun{txn: txn, req: r, refs: refs, done: make(chan struct{})}

	e.mu.Lock()
	if r.Key != "" {
		if other, ok := e.fastKeys[r.Key]; ok {
			e.mu.Unlock()
			return e.joinFast(ctx, other, r)
		}
	}
	if e.inflight.Add(1) > int64(e.cfg.MaxInFlight) {
		e.inflight.Add(-1)
		e.mu.Unlock()
		return nil, ErrBusy
	}
	e.fastUnlogged[txn.ID] = run
	if r.Key != "" {
		e.fastKeys[r.Key] = run
	}
	e.mu.Unlock()
	// The transaction span, a child of the client's span context, like Submit's; a request
	// answered from its idempotency key before this point makes none. The driver ends it.
	span := e.startTxnSpan(ctx, t.term)
	if span != nil {
		span.SetAttributes(AttrTxnID.String(txn.ID), AttrMode.String(string(ModeFast)))
	}
	if !e.startRun(t, txn.ID, func(ctx context.Context) { e.driveFast(ctx, t.term, run, span) }) {
		endTxnSpan(span, nil, "not driven here: the term ended")
		e.fastDone(run, nil, ErrNotLeader)
	}
	return e.waitFast(ctx, run)
}

// joinFast waits for run, which a request with the same idempotency key started, and
// answers what run's own request is answered: r must ask for the same thing (participants
// in order, timeout, payloads), else ErrKeyReused at once.
func (e *Engine) joinFast(ctx context.Context, run *fastRun, r Request) (*fsm.Txn, error) {
	if !slices.Equal(run.req.Participants, r.Participants) || run.req.Timeout.Milliseconds() != r.Timeout.Milliseconds() ||
		!slices.Equal(payloadsOf(run.req), payloadsOf(r)) {
		return nil, fmt.Errorf("%w by transaction %s (running), with other participants, payloads or another timeout", ErrKeyReused, run.txn.ID)
	}
	return e.waitFast(ctx, run)
}

// payloadsOf returns r's payloads, one per participant ("" for none).
func payloadsOf(r Request) []string {
	out := make([]string, len(r.Participants))
	copy(out, r.Payloads)
	return out
}

func (e *Engine) waitFast(ctx context.Context, run *fastRun) (*fsm.Txn, error) {
	select {
	case <-run.done:
		return run.res, run.err
	case <-ctx.Done():
		// The transaction goes on: its outcome is for GET (or the key) to learn.
		return &fsm.Txn{ID: run.txn.ID, Key: run.txn.Key}, fmt.Errorf("%w: %v", ErrIndeterminate, ctx.Err())
	}
}

// fastDone ends run's unlogged period: inquiries about it now read the FSM.
func (e *Engine) fastDone(run *fastRun, res *fsm.Txn, err error) {
	e.mu.Lock()
	delete(e.fastUnlogged, run.txn.ID)
	if run.txn.Key != "" && e.fastKeys[run.txn.Key] == run {
		delete(e.fastKeys, run.txn.Key)
	}
	e.mu.Unlock()
	run.res, run.err = res, err
	close(run.done)
}

// driveFast is the driver of one fast transaction: phase one, the decision entry, then the
// ordinary driver (phase two, completion) on the logged record. span is the transaction
// span (nil with tracing off): the calls are its children, and it ends with the driver. Its
// trace context is not logged (FastDecide has no field for it): a leader that resumes the
// transaction starts an unlinked span.
func (e *Engine) driveFast(ctx context.Context, term uint64, run *fastRun, span trace.Span) {
	txn := run.txn
	if span != nil {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	lg := &lazyLog{e: e, id: txn.ID, term: term, span: span}
	driven := false
	var last *fsm.Txn
	stopped := "leadership ended"
	defer func() {
		if !driven { // else e.drive ended it
			endTxnSpan(span, last, stopped)
		}
	}()
	ds := &driveState{fresh: true, reached: make([]bool, len(txn.Participants))}
	fenceWait := e.cfg.RetryInitial
	var (
		decision fsm.Decision
		votes    []fsm.Vote
		reasons  []string
		err      error
	)
	for {
		decision, votes, reasons, err = e.collectVotes(ctx, txn, ds.reached)
		if !errors.Is(err, errFenced) {
			break
		}
		// Leadership could not be confirmed: ask again after a pause. Past the deadline
		// every missing vote is a no, so this ends in a decision or with the term.
		lg.L().Warn("leadership not confirmed: participant calls held back", "wait", fenceWait)
		if !e.pause(ctx, fenceWait) {
			err = errStop
			break
		}
		fenceWait = min(2*fenceWait, e.cfg.RetryMax)
	}
	if err != nil {
		// This term ended before a decision: nothing was logged and nothing will be. The
		// participants it prepared ask, and are told rolled_back (a presumed abort).
		e.fastDone(run, nil, fmt.Errorf("%w: leadership ended in phase one of fast transaction %s; its participants learn the abort by inquiry", ErrIndeterminate, txn.ID))
		return
	}
	if e.hooks != nil && e.hooks.BeforeDecide != nil {
		e.hooks.BeforeDecide(txn.ID, decision)
	}
	entry := &fsm.FastDecide{
		Begin:    fsm.Begin{ID: txn.ID, Key: txn.Key, CreatedAt: txn.CreatedAt, Deadline: txn.Deadline, Participants: txn.Participants, Refs: run.refs},
		Decision: decision, AfterMs: e.cfg.Now().UnixMilli() - txn.CreatedAt,
	}
	var early *earlyRollback
	if decision == fsm.DecisionAbort {
		entry.Votes, entry.Reasons = votes, reasons
		early = e.rollbackEarly(ctx, txn, ds.reached)
	}
	_, dspan := e.startSpan(ctx, SpanDecision, trace.SpanKindInternal)
	res, err := e.apply(ctx, lg, entry)
	if e.traced() {
		dspan.SetAttributes(AttrDecision.String(decision.String()))
		switch {
		case err != nil:
			dspan.SetStatus(codes.Error, err.Error())
		case res.Err != nil:
			dspan.SetStatus(codes.Error, res.Err.Error())
		case res.Txn != nil:
			dspan.SetAttributes(AttrIndex.Int64(int64(res.Txn.Index)))
		}
		dspan.End()
	}
	if early != nil {
		ds.early = early.wait()
	}
	if err != nil {
		// Leadership ended with the entry in flight: it commits under the next leader, which
		// then drives phase two, or never, and the participants learn the abort by inquiry.
		e.fastDone(run, nil, fmt.Errorf("%w: %v", ErrIndeterminate, err))
		return
	}
	if res.Err != nil {
		stopped = "fast decision refused: " + res.Err.Error()
		if errors.Is(res.Err, fsm.ErrPresumedAbort) {
			last = res.Txn // this transaction's record: rolled_back
		}
		e.refusedFast(ctx, lg, run, res, ds)
		return
	}
	if e.hooks != nil && e.hooks.AfterDecide != nil {
		e.hooks.AfterDecide(txn.ID, res.Txn.Decision)
	}
	if e.lg.IsDebug() { // asked first: the transaction's logger is made on use
		lg.L().Debug("decided (fast)", "decision", res.Txn.Decision.String(), "index", res.Txn.Index)
	}
	e.fastDone(run, res.Txn, nil)
	driven = true
	e.drive(ctx, term, txn.ID, ds, span)
}

// refusedFast handles a decision entry the FSM refused: a presumed abort came first (an
// inquiry past the deadline), the idempotency key is bound to another transaction, or the
// deadline is past the retention horizon. The transaction is aborted whatever this leader
// decided, and no record of its participants is in the log: this leader rolls back what it
// prepared itself, until acknowledged or the term ends (then each participant asks and is
// told rolled_back).
func (e *Engine) refusedFast(ctx context.Context, lg *lazyLog, run *fastRun, res fsm.Result, ds *driveState) {
	txn := run.txn
	lg.L().Info("fast decision refused: rolling back what was prepared", "reason", res.Err)
	switch {
	case errors.Is(res.Err, fsm.ErrPresumedAbort):
		e.fastDone(run, res.Txn, nil) // rolled_back: the answer the participants were given
	case errors.Is(res.Err, fsm.ErrKeyExists) && res.Txn != nil:
		other, err := sameRequest(res.Txn, run.req)
		e.fastDone(run, other, err)
	case errors.Is(res.Err, fsm.ErrKeyExists):
		e.fastDone(run, nil, fmt.Errorf("%w: its transaction finished and was pruned", ErrKeyReused))
	default:
		e.fastDone(run, nil, fmt.Errorf("fast transaction %s rolled back, its decision could not be logged: %w", txn.ID, res.Err))
	}
	p2 := &phaseTwoRun{reports: make([]fsm.Report, len(txn.Participants)), unlogged: true}
	req := participant.Request{TransactionID: txn.ID, Deadline: participant.FormatDeadline(timeOf(txn.Deadline))}
	until := e.cfg.Now().Add(e.cfg.PhaseTwoRetryFor)
	if e.cfg.PhaseTwoRetryFor <= 0 {
		until = timeOf(0)
	}
	var wg sync.WaitGroup
	for i, p := range txn.Participants {
		if i < len(ds.early) && ds.early[i].Acked || !ds.reached[i] {
			continue // acknowledged already, or never reached: holds nothing
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.deliver(ctx, lg, txn.ID, i, p.Rollback, participant.PhaseRollback, req, p2, until)
		}()
	}
	wg.Wait()
	if !p2.allAckedOf(ds) && ctx.Err() == nil {
		lg.L().Warn("rollback of a refused fast transaction not acknowledged by every participant; they learn it by inquiry", "reports", fmt.Sprint(p2.snapshot()))
	}
}

// earlyRollback is the one Rollback call per reached participant the fast path sends
// while its abort entry is being logged.
type earlyRollback struct {
	wg      sync.WaitGroup
	reports []fsm.Report
}

func (er *earlyRollback) wait() []fsm.Report {
	er.wg.Wait()
	return er.reports
}

// rollbackEarly sends Rollback once to every participant of txn a Prepare may have
// reached, in parallel, without waiting for the abort entry (see the package comment of
// fast.go for why that is safe). Phase two retries those that did not acknowledge.
func (e *Engine) rollbackEarly(ctx context.Context, txn *fsm.Txn, reached []bool) *earlyRollback {
	er := &earlyRollback{reports: make([]fsm.Report, len(txn.Participants))}
	req := participant.Request{TransactionID: txn.ID, Deadline: participant.FormatDeadline(timeOf(txn.Deadline))}
	for i, p := range txn.Participants {
		if !reached[i] {
			continue
		}
		er.wg.Add(1)
		go func() {
			defer er.wg.Done()
			cctx, cancel := context.WithTimeout(ctx, e.cfg.CallTimeout)
			cctx, span := e.startSpan(cctx, SpanRollback, trace.SpanKindClient)
			reply, err := e.caller.Call(cctx, p.Rollback, participant.PhaseRollback, req)
			if e.traced() {
				endAttemptSpan(span, p.Rollback, 1, reply, err)
			}
			cancel()
			switch {
			case isFenced(err) || ctx.Err() != nil:
				// Not sent, or cut short by the term's end: phase two (or the inquiry) decides.
			case err == nil && reply.Status == participant.ACK:
				er.reports[i] = fsm.Report{Acked: true, Attempts: 1}
			case err == nil:
				er.reports[i] = fsm.Report{Attempts: 1, Error: "NACK: " + reply.Reason}
			default:
				er.reports[i] = fsm.Report{Attempts: 1, Error: err.Error()}
			}
		}()
	}
	return er
}

// allAckedOf reports whether every participant that needed a Rollback acknowledged it.
func (p *phaseTwoRun) allAckedOf(ds *driveState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.reports {
		if !r.Acked && ds.reached[i] && !(i < len(ds.early) && ds.early[i].Acked) {
			return false
		}
	}
	return true
}

// timeOf is the time of ms (unix ms), the zero time for 0.
func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
