package fsm

import "fmt"

// Status is a transaction's place in the 2PC state machine as the Raft log records it.
//
//	preparing ──Decide(commit)──▶ committing ──Complete──▶ committed
//	    │                             │
//	    └──Decide(abort)──▶ rolling_back ──Complete──▶ rolled_back
//	                          │      (either phase-two state) ──Fail──▶ failed
//	failed ──Retry──▶ committing | rolling_back      failed ──Resolve──▶ committed | rolled_back
type Status uint8

// The statuses. Numbers are part of the encoding: only ever append.
const (
	StatusPreparing   Status = 1
	StatusCommitting  Status = 2
	StatusRollingBack Status = 3
	StatusCommitted   Status = 4
	StatusRolledBack  Status = 5
	StatusFailed      Status = 6
)

var statusNames = [...]string{
	StatusPreparing:   "preparing",
	StatusCommitting:  "committing",
	StatusRollingBack: "rolling_back",
	StatusCommitted:   "committed",
	StatusRolledBack:  "rolled_back",
	StatusFailed:      "failed",
}

// String returns the API name: "preparing", "committing", "rolling_back", "committed",
// "rolled_back" or "failed".
func (s Status) String() string {
	if int(s) < len(statusNames) && statusNames[s] != "" {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// ParseStatus is the inverse of String. It returns an error for an unknown name.
func ParseStatus(name string) (Status, error) {
	for i, n := range statusNames {
		if n != "" && n == name {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("unknown status %q (want preparing, committing, rolling_back, committed, rolled_back or failed)", name)
}

// Terminal reports whether no automatic step follows: committed, rolled_back and failed.
// A failed transaction waits for an operator (Retry or Resolve).
func (s Status) Terminal() bool {
	return s == StatusCommitted || s == StatusRolledBack || s == StatusFailed
}

// Decision is the outcome of phase one. Once logged it never changes (the first decision
// wins: Gray & Reuter, "Transaction Processing", ch. 10).
type Decision uint8

// The decisions. DecisionNone means phase one has not ended.
const (
	DecisionNone   Decision = 0
	DecisionCommit Decision = 1
	DecisionAbort  Decision = 2
)

// String returns "none", "commit" or "abort".
func (d Decision) String() string {
	switch d {
	case DecisionCommit:
		return "commit"
	case DecisionAbort:
		return "abort"
	default:
		return "none"
	}
}

// Vote is one participant's answer to Prepare as recorded with the decision.
type Vote uint8

// The votes. VoteNone: no answer reached the coordinator before the decision (a timeout, or
// phase one cut short by another participant's NACK). VoteError: an answer that was neither
// ACK nor NACK (an HTTP error, garbage, a reset); like VoteNone it counts as a no.
const (
	VoteNone  Vote = 0
	VoteYes   Vote = 1
	VoteNo    Vote = 2
	VoteError Vote = 3
)

// String returns "", "ACK", "NACK" or "error".
func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "ACK"
	case VoteNo:
		return "NACK"
	case VoteError:
		return "error"
	default:
		return ""
	}
}

// Participant holds one participant's three URLs.
type Participant struct {
	Prepare  string
	Commit   string
	Rollback string
}

// ParticipantState is what the log knows of one participant of one transaction.
type ParticipantState struct {
	Vote   Vote   // set by Decide
	Reason string // NACK reason or phase-one error, set by Decide
	// Acked reports that the participant acknowledged the phase-two message.
	Acked bool
	// Attempts counts phase-two calls made so far (as last reported by the leader).
	Attempts uint32
	// LastError is the last phase-two failure ("" once acknowledged).
	LastError string
}

// Txn is the replicated record of one transaction. Records are replaced, never mutated,
// once they are in the FSM: a *Txn obtained from the FSM may be read without locks and must
// not be changed.
type Txn struct {
	ID           string
	Key          string // client idempotency key, "" when none was given
	Participants []Participant
	States       []ParticipantState // same length and order as Participants
	CreatedAt    int64              // unix ms, stamped by the leader that accepted it
	Deadline     int64              // unix ms: the end of phase one
	Status       Status
	Decision     Decision
	DecidedAt    int64  // unix ms, 0 before the decision
	FinishedAt   int64  // unix ms when the status last became terminal, else 0
	Note         string // last operator note (Retry, Resolve)
	Index        uint64 // Raft index of the entry that produced this version
	// RetriedAt is when an operator last sent a failed transaction back to phase two
	// (Retry; unix ms, 0 if never). Phase two's retry window runs from
	// PhaseTwoSince: the later of DecidedAt and RetriedAt.
	RetriedAt int64
	// Payloads, while the transaction is preparing, has one entry per participant: the
	// compact JSON sent as "payload" in its Prepare ("" for none); nil when no participant
	// has one. Apply drops them when the decision is logged (participants keep theirs with
	// their vote), so the FSM holds payloads only for transactions in phase one.
	Payloads []string
	// Trace is the W3C traceparent of the span that began the transaction (Begin.Trace),
	// "" when it was begun untraced. A leader that resumes the transaction links its span
	// to it. Kept for the record's life.
	Trace string
}

// PhaseTwoSince returns when the current phase-two run began (unix ms): the decision, or
// the operator's last Retry if later. 0 before the decision.
func (t *Txn) PhaseTwoSince() int64 { return max(t.DecidedAt, t.RetriedAt) }

// Stuck reports whether t needs attention at now (unix ms): it is failed, or it is still
// unfinished after ms past the start of its current phase (phase two: PhaseTwoSince;
// phase one: CreatedAt).
func (t *Txn) Stuck(now int64, after int64) bool {
	switch t.Status {
	case StatusFailed:
		return true
	case StatusPreparing:
		return now-t.CreatedAt >= after
	case StatusCommitting, StatusRollingBack:
		return now-t.PhaseTwoSince() >= after
	}
	return false
}

// Payload returns participant i's payload ("" for none, or once the decision is logged).
func (t *Txn) Payload(i int) string {
	if i < len(t.Payloads) {
		return t.Payloads[i]
	}
	return ""
}

// clone returns a copy that may be changed without touching t; States is copied too
// because every command that changes a Txn may change it.
func (t *Txn) clone() *Txn {
	c := *t
	c.States = append([]ParticipantState(nil), t.States...)
	return &c
}

// Errors returns one line per participant that refused or failed, in participant order:
// its phase-one reason ("http://hotel/prepare: NACK: no rooms") and, while it has not
// acknowledged phase two, its last phase-two failure ("http://pay/commit: HTTP 500
// (attempt 3)").
func (t *Txn) Errors() []string { return t.errorLines(true) }

// VoteErrors returns only phase one's reasons, one line per participant that voted no or
// failed: "http://hotel/prepare: NACK: no rooms", "http://pay/prepare: no answer within
// 1000 ms".
func (t *Txn) VoteErrors() []string { return t.errorLines(false) }

func (t *Txn) errorLines(phaseTwo bool) []string {
	var out []string
	for i, st := range t.States {
		p := t.Participants[i]
		if st.Reason != "" {
			if st.Vote == VoteNo {
				out = append(out, p.Prepare+": NACK: "+st.Reason)
			} else {
				out = append(out, p.Prepare+": "+st.Reason)
			}
		}
		if phaseTwo && st.LastError != "" && !st.Acked {
			url := p.Commit
			if t.Decision == DecisionAbort {
				url = p.Rollback
			}
			out = append(out, fmt.Sprintf("%s: %s (attempt %d)", url, st.LastError, st.Attempts))
		}
	}
	return out
}
