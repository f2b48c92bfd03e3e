package httpapi

import (
	"time"

	"github.com/txcoord/txcoord/fsm"
)

// Outcome is the answer to POST /v1/transactions: {"transactionId", "status", "errors"}.
type Outcome struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
}

// ParticipantView is one participant in TransactionView.
type ParticipantView struct {
	Prepare      string `json:"prepare"`
	Commit       string `json:"commit"`
	Rollback     string `json:"rollback"`
	Vote         string `json:"vote,omitempty"`   // "ACK", "NACK", "error" or absent
	Reason       string `json:"reason,omitempty"` // NACK reason or phase-one error
	Acknowledged bool   `json:"acknowledged"`     // phase two acknowledged
	Attempts     uint32 `json:"attempts"`         // phase-two calls made
	LastError    string `json:"lastError,omitempty"`
}

// TransactionView is GET /v1/transactions/{id}. Times are RFC 3339 UTC with ms, omitted
// while unset.
type TransactionView struct {
	TransactionID  string            `json:"transactionId"`
	Status         string            `json:"status"`
	Decision       string            `json:"decision,omitempty"` // "commit" or "abort"
	IdempotencyKey string            `json:"idempotencyKey,omitempty"`
	TimeoutMs      int64             `json:"timeoutMs"`
	CreatedAt      string            `json:"createdAt"`
	Deadline       string            `json:"deadline"`
	DecidedAt      string            `json:"decidedAt,omitempty"`
	FinishedAt     string            `json:"finishedAt,omitempty"`
	Note           string            `json:"note,omitempty"`
	Index          uint64            `json:"index"` // Raft index of the last change
	Participants   []ParticipantView `json:"participants"`
	Errors         []string          `json:"errors"`
	// Read says how a GET was served (level, node, applied index); absent elsewhere.
	Read *ReadInfo `json:"read,omitempty"`
}

// TransactionList is GET /v1/transactions: a page and the cursor of the next one ("" on
// the last page; a page may be short, even empty, with "next" set when a participant
// filter examined its bound of records).
type TransactionList struct {
	Transactions []TransactionView `json:"transactions"`
	Next         string            `json:"next"`
	Read         *ReadInfo         `json:"read,omitempty"`
}

func msTime(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func outcomeOf(t *fsm.Txn) Outcome {
	errs := t.Errors()
	if errs == nil {
		errs = []string{}
	}
	return Outcome{TransactionID: t.ID, Status: t.Status.String(), Errors: errs}
}

func viewOf(t *fsm.Txn) TransactionView {
	v := TransactionView{
		TransactionID: t.ID, Status: t.Status.String(), IdempotencyKey: t.Key,
		TimeoutMs: t.Deadline - t.CreatedAt, CreatedAt: msTime(t.CreatedAt), Deadline: msTime(t.Deadline),
		DecidedAt: msTime(t.DecidedAt), FinishedAt: msTime(t.FinishedAt), Note: t.Note, Index: t.Index,
		Participants: make([]ParticipantView, len(t.Participants)),
		Errors:       t.Errors(),
	}
	if t.Decision != fsm.DecisionNone {
		v.Decision = t.Decision.String()
	}
	if v.Errors == nil {
		v.Errors = []string{}
	}
	for i, p := range t.Participants {
		st := t.States[i]
		v.Participants[i] = ParticipantView{
			Prepare: p.Prepare, Commit: p.Commit, Rollback: p.Rollback,
			Vote: st.Vote.String(), Reason: st.Reason, Acknowledged: st.Acked, Attempts: st.Attempts, LastError: st.LastError,
		}
	}
	return v
}

// settledOutcome is the answer for a transaction whose participants all acknowledged
// phase two while its completion entry is still on its way into the log: the final status
// follows from the decision, and errors are phase one's reasons.
func settledOutcome(t *fsm.Txn) Outcome {
	status := fsm.StatusRolledBack
	if t.Decision == fsm.DecisionCommit {
		status = fsm.StatusCommitted
	}
	errs := t.VoteErrors()
	if errs == nil {
		errs = []string{}
	}
	return Outcome{TransactionID: t.ID, Status: status.String(), Errors: errs}
}
