package httpapi

import (
	"encoding/json"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/fsm"
)

// The views are package api's wire types (aliases, so handlers and tests keep their names).
type (
	// Outcome is the answer to POST /v1/transactions (api.Outcome).
	Outcome = api.Outcome
	// ParticipantView is one participant in TransactionView (api.ParticipantView).
	ParticipantView = api.ParticipantView
	// TransactionView is GET /v1/transactions/{id} (api.TransactionView).
	TransactionView = api.TransactionView
	// TransactionList is GET /v1/transactions (api.TransactionList).
	TransactionList = api.TransactionList
)

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
		if pl := t.Payload(i); pl != "" {
			v.Participants[i].Payload = json.RawMessage(pl)
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
