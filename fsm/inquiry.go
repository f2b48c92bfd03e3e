package fsm

import (
	"errors"
	"fmt"
)

// Presumed abort with inquiry (feature level 3, issue 17). In fast mode the leader sends
// Prepare before anything is logged and then logs one FastDecide entry that holds the
// transaction and its decision; a participant that voted yes and hears nothing past its
// deadline asks any node for the outcome (the inquiry). An id the cluster has no record of
// is answered "rolled_back" only once that answer is itself in the log, as a PresumeAbort
// entry: the first of PresumeAbort and FastDecide in the log wins on every node, and the
// other is refused, so a decision still in flight from a deposed leader loses against an
// abort a participant was told (presumed abort: Mohan, Lindsay & Obermarck, "Transaction
// management in the R* distributed database management system", 1986).

// ErrPresumedAbort: a Begin, Decide or FastDecide for an id whose presumed-abort record
// is in the FSM (PresumeAbort was logged first). Result.Txn is that record. The engine
// rolls back whatever it prepared.
var ErrPresumedAbort = errors.New("transaction presumed aborted")

// ErrBeyondHorizon: a PresumeAbort or FastDecide whose deadline is before the retention
// horizon (FSM.Horizon): records of that age may have been pruned, so the FSM can no longer
// tell "never logged" from "logged and pruned", and refuses to presume either way.
var ErrBeyondHorizon = errors.New("deadline before the retention horizon: a record of it may have been pruned")

// PresumedAbortNote is the Note of every presumed-abort record.
const PresumedAbortNote = "presumed abort: a participant asked for the outcome past its deadline and the cluster had no record of the transaction"

// PresumeAbort records that transaction ID is aborted although the cluster has no record
// of it: the leader logs it when a participant asks past the deadline it was given
// (Deadline, from the participant's Prepare) and no Begin or FastDecide for ID is in the
// FSM. It creates a record in rolled_back with no participants (the presumed-abort record,
// PresumedAborted), after which every Begin, Decide or FastDecide for ID is refused with
// ErrPresumedAbort. If ID already exists the entry is refused with ErrExists and
// Result.Txn is the record that won. The record is pruned like any rolled_back
// transaction (FinishedAt = At). Feature level 3.
type PresumeAbort struct {
	ID       string
	At       int64 // unix ms, the leader's clock when it logged the entry
	Deadline int64 // unix ms, the deadline the participant named
}

// Type implements Command.
func (*PresumeAbort) Type() CommandType { return CmdPresumeAbort }

func (c *PresumeAbort) encode(e *encoder) { e.id(c.ID); e.Varint(c.At); e.Varint(c.At - c.Deadline) }
func (c *PresumeAbort) decode(d *decoder) {
	c.ID = d.id()
	c.At = d.Varint()
	c.Deadline = c.At - d.Varint()
}

func (c *PresumeAbort) apply(f *FSM, index uint64) (Result, []string) {
	if old, ok := f.txns[c.ID]; ok {
		return Result{Txn: old, Err: ErrExists}, nil
	}
	if c.ID == "" {
		return Result{Err: fmt.Errorf("%w: presumed abort without id", ErrInvalid)}, nil
	}
	if c.Deadline < f.horizon {
		return Result{Err: ErrBeyondHorizon}, nil
	}
	if ms, ok := uuidV7Millis(c.ID); ok && ms < f.horizon {
		// The deadline is the participant's word; the id is the cluster's own, and a
		// version-7 UUID carries its creation time (RFC 9562, section 5.7). A transaction
		// created before the horizon may have been logged and pruned although the deadline
		// named is after it: a Prune before level 3 (whose time the horizon starts from)
		// removed finished records whatever their deadline.
		return Result{Err: ErrBeyondHorizon}, nil
	}
	f.observe(c.At)
	t := &Txn{
		ID: c.ID, CreatedAt: c.At, Deadline: c.Deadline,
		Participants: []Participant{}, States: []ParticipantState{},
		Status: StatusRolledBack, Decision: DecisionAbort,
		DecidedAt: c.At, FinishedAt: c.At, Note: PresumedAbortNote, Index: index,
	}
	f.put(t)
	return Result{Txn: t}, []string{c.ID}
}

// PresumedAborted reports whether t is a presumed-abort record (PresumeAbort): aborted with
// no participants, a state no Begin or FastDecide produces.
func (t *Txn) PresumedAborted() bool {
	return len(t.Participants) == 0 && t.Decision == DecisionAbort
}

// FastDecide is a fast-mode transaction and its decision in one entry, logged once phase
// one has ended (the Prepare calls went out before anything was logged). It creates the
// record directly in committing or rolling_back, binds Key, and is otherwise what a Begin
// followed by a Decide would leave. It is refused, changing nothing, with
// ErrPresumedAbort when a PresumeAbort for ID came first, ErrExists when ID exists
// otherwise (the identical entry again is a no-op), ErrKeyExists when Key is bound to
// another transaction (Result.Txn is that one, nil when it was pruned), and
// ErrBeyondHorizon when Deadline is before the retention horizon. Feature level 3.
//
// Begin.Trace is not logged (the entry has no field for it).
//
// Begin.Payloads must be nil: payloads are sent in Prepare only, a decided record holds
// none (Decide drops them) and no leader ever sends a fast transaction's Prepare again, so
// logging them would write bytes nobody reads.
type FastDecide struct {
	Begin
	Decision Decision
	AfterMs  int64 // decision time minus CreatedAt, ms
	// Votes and Reasons have one entry per participant for an abort; for a commit they are
	// nil (every vote was yes) and take no bytes.
	Votes   []Vote
	Reasons []string
}

// Type implements Command.
func (*FastDecide) Type() CommandType { return CmdFastDecide }

func (c *FastDecide) encode(e *encoder) {
	b := c.Begin
	b.Payloads = nil // never logged (see FastDecide)
	// A FastDecide has no trace context: type 15's body is type 1's, and a trace would
	// need another command type (docs/observability.md, what is not promised).
	b.Trace = ""
	b.encode(e)
	e.Byte(byte(c.Decision))
	e.Varint(c.AfterMs)
	if c.Decision == DecisionCommit {
		return
	}
	e.votes(c.Votes, c.Reasons)
}

func (c *FastDecide) decode(d *decoder) {
	c.Begin.decode(d)
	c.Decision = Decision(d.Byte())
	c.AfterMs = d.Varint()
	if c.Decision == DecisionCommit {
		return
	}
	c.Votes, c.Reasons = d.votes()
}

func (c *FastDecide) apply(f *FSM, index uint64) (Result, []string) {
	if old, ok := f.txns[c.ID]; ok {
		switch {
		case old.PresumedAborted():
			return Result{Txn: old, Err: ErrPresumedAbort}, nil
		case old.CreatedAt == c.CreatedAt && old.Deadline == c.Deadline && old.Key == c.Key && old.Decision == c.Decision &&
			old.DecidedAt == c.CreatedAt+c.AfterMs && len(old.Participants) == len(c.Participants):
			return Result{Txn: old}, nil // the leader proposed the same entry again
		}
		return Result{Txn: old, Err: ErrExists}, nil
	}
	if c.Key != "" {
		if k, ok := f.keys[c.Key]; ok {
			return Result{Txn: f.txns[k.ID], Err: ErrKeyExists}, nil
		}
	}
	n := len(c.Participants)
	switch {
	case c.ID == "" || n == 0:
		return Result{Err: fmt.Errorf("%w: fast decision without id or participants", ErrInvalid)}, nil
	case c.Payloads != nil:
		return Result{Err: fmt.Errorf("%w: fast decision with payloads", ErrInvalid)}, nil
	case c.Decision != DecisionCommit && c.Decision != DecisionAbort:
		return Result{Err: fmt.Errorf("%w: decision %d", ErrInvalid, c.Decision)}, nil
	case c.Decision == DecisionAbort && len(c.Votes) != n:
		return Result{Err: fmt.Errorf("%w: %d votes for %d participants", ErrInvalid, len(c.Votes), n)}, nil
	case c.Deadline < f.horizon:
		return Result{Err: ErrBeyondHorizon}, nil
	}
	parts, ok := f.resolveRefs(&c.Begin)
	if !ok {
		return Result{Err: fmt.Errorf("%w: fast decision names an endpoint that is not defined", ErrInvalid)}, nil
	}
	at := c.CreatedAt + c.AfterMs
	f.observe(c.CreatedAt)
	f.observe(at)
	t := &Txn{
		ID: c.ID, Key: c.Key, CreatedAt: c.CreatedAt, Deadline: c.Deadline,
		Participants: append([]Participant(nil), parts...),
		States:       make([]ParticipantState, n),
		Decision:     c.Decision, DecidedAt: at, Index: index,
	}
	if c.Decision == DecisionCommit {
		t.Status = StatusCommitting
		for i := range t.States {
			t.States[i].Vote = VoteYes
		}
	} else {
		t.Status = StatusRollingBack
		for i := range t.States {
			t.States[i].Vote = c.Votes[i]
			if i < len(c.Reasons) {
				t.States[i].Reason = c.Reasons[i]
			}
		}
	}
	f.put(t)
	if c.Key != "" {
		f.keys[c.Key] = keyEntry{ID: c.ID, CreatedAt: c.CreatedAt}
	}
	return Result{Txn: t}, []string{c.ID}
}

// Horizon returns the retention horizon (unix ms): no record whose deadline is at or after
// it has been pruned, because Prune removes only transactions that finished before its
// FinishedBefore, and a transaction finishes after its deadline. It is the highest
// FinishedBefore of the Prune entries applied since the cluster enabled feature level 3,
// and at least the time of the SetFeatures entry that enabled it (what was pruned before is
// not counted). Deterministic: every node has the same value at the same index. 0 before
// level 3.
func (f *FSM) Horizon() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.horizon
}

// uuidV7Millis returns the unix ms a version-7 UUID in canonical form was minted at; ok false
// for any other id.
func uuidV7Millis(id string) (int64, bool) {
	b, ok := uuidBytes(id)
	if !ok || b[6]>>4 != 7 {
		return 0, false
	}
	return int64(b[0])<<40 | int64(b[1])<<32 | int64(b[2])<<24 | int64(b[3])<<16 | int64(b[4])<<8 | int64(b[5]), true
}
