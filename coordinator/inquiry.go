package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// Inquiry (issue 17): a participant that voted yes and holds a transaction past its
// deadline asks what became of it. The answer is linearizable without a read index: a
// decision in the FSM never changes once applied (the first one wins), so reading it from
// any node's FSM can contradict no earlier or later answer; "pending" promises nothing; and
// "rolled_back" for an id with no record is given only once the leader's PresumeAbort entry
// is applied, whose result says who won (it is refused if a Begin or FastDecide for the id
// came first in the log).

// Outcome is the "outcome" of an inquiry answer.
type Outcome string

// The outcomes. A participant applies committed or rolled_back (Commit or Rollback, as if
// the coordinator had sent it) and asks again after RetryAfter for pending.
const (
	OutcomeCommitted  Outcome = "committed"
	OutcomeRolledBack Outcome = "rolled_back"
	OutcomePending    Outcome = "pending"
)

// Answer is the engine's answer to one inquiry.
type Answer struct {
	Outcome Outcome
	// RetryAfter, for pending, is when to ask again: until the deadline plus the skew
	// allowance when that is later, else one second.
	RetryAfter time.Duration
	// Txn is the record the answer comes from (nil for pending without one); Archived says
	// it came from the archive (Config.Archived).
	Txn      *fsm.Txn
	Archived bool
}

// ErrNotKept: the cluster cannot tell what became of a transaction: it has no record of
// it, and its deadline is before the retention horizon (fsm.FSM.Horizon), so a record may
// have been pruned (and is not in the archive either). Nothing is logged; the participant
// must not presume either outcome (an operator settles it).
var ErrNotKept = errors.New("the cluster no longer keeps this transaction's outcome")

// OutcomeOf returns the inquiry answer a record gives: its decision, or pending while phase
// one runs.
func OutcomeOf(t *fsm.Txn) Outcome {
	switch t.Decision {
	case fsm.DecisionCommit:
		return OutcomeCommitted
	case fsm.DecisionAbort:
		return OutcomeRolledBack
	}
	return OutcomePending
}

// horizonState is implemented by *fsm.FSM (fsm.FSM.Horizon).
type horizonState interface {
	Horizon() int64
}

// Inquire answers what became of transaction id on the leader, for a participant that was
// given deadline in its Prepare (zero when the participant did not say). In order:
//
//   - a record in the FSM answers with its decision (pending while preparing);
//   - a fast transaction this leader is running and has not logged yet is pending;
//   - a record in the archive (Config.Archived) answers with its decision;
//   - without a deadline, or before deadline + Config.InquirySkew on this leader's clock,
//     the answer is pending: the transaction may still be deciding;
//   - a deadline before the retention horizon is ErrNotKept (nothing logged);
//   - otherwise the leader logs fsm.PresumeAbort, which needs feature level 3
//     (Config.FeatureGate's error, nothing logged, before that), and answers from what the
//     FSM holds after it: rolled_back, or the decision that came first in the log.
//
// Errors: ErrNotLeader (this node does not lead; ask the leader), ErrIndeterminate (the
// entry was proposed but leadership was lost: ask again), ErrNotKept, the FeatureGate's
// error, and Raft's transient errors.
func (e *Engine) Inquire(ctx context.Context, id string, deadline time.Time) (Answer, error) {
	if t, ok := e.state.Get(id); ok {
		return e.answerFrom(t, deadline), nil
	}
	if _, err := e.currentTerm(); err != nil {
		return Answer{}, err
	}
	if e.fastRunning(id) {
		return Answer{Outcome: OutcomePending, RetryAfter: e.retryAfter(deadline)}, nil
	}
	if e.cfg.Archived != nil {
		t, ok, err := e.cfg.Archived(id)
		if err != nil {
			return Answer{}, fmt.Errorf("reading the archive: %w", err)
		}
		if ok {
			a := e.answerFrom(t, deadline)
			a.Archived = true
			return a, nil
		}
	}
	now := e.cfg.Now()
	if deadline.IsZero() || now.Before(deadline.Add(e.cfg.InquirySkew)) {
		return Answer{Outcome: OutcomePending, RetryAfter: e.retryAfter(deadline)}, nil
	}
	if hs, ok := e.state.(horizonState); ok && deadline.UnixMilli() < hs.Horizon() {
		return Answer{}, fmt.Errorf("%w: no record of %s, and its deadline %s is before the retention horizon %s (records that old may have been pruned)",
			ErrNotKept, id, deadline.UTC().Format(time.RFC3339Nano), time.UnixMilli(hs.Horizon()).UTC().Format(time.RFC3339Nano))
	}
	if e.cfg.FeatureGate != nil {
		if err := e.cfg.FeatureGate(3, "presumed abort on inquiry"); err != nil {
			return Answer{}, err
		}
	}
	start := e.cfg.Now()
	res, err := e.log.Apply(ctx, &fsm.PresumeAbort{ID: id, At: now.UnixMilli(), Deadline: deadline.UnixMilli()})
	switch {
	case err == nil:
		e.markConfirmed(start)
	case errors.Is(err, raft.ErrLeadershipLost):
		return Answer{}, fmt.Errorf("%w: %v", ErrIndeterminate, err)
	case isNotLeader(err):
		return Answer{}, fmt.Errorf("%w: %v", ErrNotLeader, err)
	default:
		return Answer{}, err
	}
	switch {
	case res.Err == nil:
		e.lg.Info("presumed abort: a participant asked past its deadline and the cluster has no record", "txn", id, "deadline", deadline.UTC().Format(time.RFC3339Nano))
		return e.answerFrom(res.Txn, deadline), nil
	case errors.Is(res.Err, fsm.ErrExists) && res.Txn != nil:
		return e.answerFrom(res.Txn, deadline), nil // a Begin or FastDecide came first
	case errors.Is(res.Err, fsm.ErrBeyondHorizon):
		return Answer{}, fmt.Errorf("%w: %v", ErrNotKept, res.Err)
	}
	return Answer{}, fmt.Errorf("logging the presumed abort: %w", res.Err)
}

func (e *Engine) answerFrom(t *fsm.Txn, deadline time.Time) Answer {
	a := Answer{Outcome: OutcomeOf(t), Txn: t}
	if a.Outcome == OutcomePending {
		a.RetryAfter = e.retryAfter(deadline)
	}
	return a
}

// retryAfter is when a pending inquiry should be asked again: at deadline + InquirySkew
// when that is more than a second away, else in a second.
func (e *Engine) retryAfter(deadline time.Time) time.Duration {
	if !deadline.IsZero() {
		if d := deadline.Add(e.cfg.InquirySkew).Sub(e.cfg.Now()); d > time.Second {
			return d
		}
	}
	return time.Second
}

// fastRunning reports whether this leader is running fast transaction id and has not
// logged its decision yet.
func (e *Engine) fastRunning(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.fastUnlogged[id]
	return ok
}
