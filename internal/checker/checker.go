// Package checker verifies, after a run, that txcoord kept two-phase commit's promises: it
// compares the coordinator's transactions with the participants' /state documents (see
// internal/demo) and lists every violation in words a human can act on.
//
// The checks (Kind of each Violation):
//   - atomicity: within one transaction, no participant committed while another rolled back,
//     voted NACK, or never heard of it (a participant that never heard of a transaction counts
//     as rolled back);
//   - agreement: participants' outcomes match the coordinator's decision (committed or
//     committing: commit; rolled_back or rolling_back: rollback), and no participant
//     committed a transaction the coordinator does not know;
//   - unfinished (quiet runs only): a transaction the coordinator has not finished;
//   - hold: resources still held when the cluster is quiet (a participant still prepared:
//     its outcome was never delivered, or a late Prepare landed after the rollback), or
//     holds that disagree with the participant's own ledger;
//   - conservation: for every pool, capacity = free + held + sold and none is negative; held
//     = the sum of the holds; sold = unit x the committed transactions in the ledger (so a
//     payment service's balances change only by committed charges).
package checker

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

// Coordinator transaction statuses the checker understands.
const (
	StatusPreparing   = "preparing"
	StatusCommitting  = "committing"
	StatusCommitted   = "committed"
	StatusRollingBack = "rolling_back"
	StatusRolledBack  = "rolled_back"
	StatusFailed      = "failed"
)

// Txn is one coordinator transaction, as the checker needs it.
type Txn struct {
	// ID is the transaction id, as sent to participants.
	ID string
	// Status is the coordinator's status: committed, rolled_back, failed, preparing,
	// committing or rolling_back (compared case-insensitively).
	Status string
	// Participants are the participants' prepare URLs.
	Participants []string
}

// Participant is one participant and its state document.
type Participant struct {
	// URL names the participant: its prepare URL or its base URL (the URL before
	// "/prepare"); either matches the prepare URLs in Txn.Participants.
	URL string
	// State is its GET /state document.
	State demo.State
}

// Options tune the checks.
type Options struct {
	// InFlight says the cluster may still be working: unfinished transactions, prepared
	// participants and holds are then not violations. Leave it false after a run has
	// quiesced, which is when the checker is meant to run.
	InFlight bool
	// Pruned says the coordinator may have pruned finished transactions (its retention):
	// a participant's committed transaction the coordinator does not list is then not a
	// violation.
	Pruned bool
}

// The kinds of Violation.
const (
	KindAtomicity    = "atomicity"
	KindAgreement    = "agreement"
	KindUnfinished   = "unfinished"
	KindHold         = "hold"
	KindConservation = "conservation"
)

// Violation is one broken promise.
type Violation struct {
	// Kind is one of the Kind constants.
	Kind string
	// Txn is the transaction concerned, or "" for a participant-wide violation.
	Txn string
	// Participant is the participant concerned (its URL), or "" for a transaction-wide one.
	Participant string
	// Detail says what is wrong, in a sentence.
	Detail string
}

// String renders the violation on one line: "kind: txn T at P: detail".
func (v Violation) String() string {
	var b strings.Builder
	b.WriteString(v.Kind + ":")
	if v.Txn != "" {
		b.WriteString(" txn " + v.Txn)
	}
	if v.Participant != "" {
		b.WriteString(" at " + v.Participant)
	}
	return b.String() + ": " + v.Detail
}

// Report is the checker's verdict.
type Report struct {
	// Transactions and Participants count what was checked.
	Transactions, Participants int
	// ByStatus counts the coordinator's transactions per status.
	ByStatus map[string]int
	// Violations, sorted by kind, transaction and participant. Empty when all is well.
	Violations []Violation
	// Warnings are things the checker could not check (a participant whose state was not
	// given, failed transactions); they are not violations.
	Warnings []string
}

// OK reports whether there is no violation.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// String renders the report for humans: a summary line, then one line per violation and
// warning.
func (r Report) String() string {
	var b strings.Builder
	statuses := make([]string, 0, len(r.ByStatus))
	for s, n := range r.ByStatus {
		statuses = append(statuses, fmt.Sprintf("%s=%d", s, n))
	}
	slices.Sort(statuses)
	fmt.Fprintf(&b, "checked %d transactions (%s) against %d participants: %d violations\n",
		r.Transactions, strings.Join(statuses, " "), r.Participants, len(r.Violations))
	for _, v := range r.Violations {
		b.WriteString("  VIOLATION " + v.String() + "\n")
	}
	for _, w := range r.Warnings {
		b.WriteString("  warning: " + w + "\n")
	}
	return b.String()
}

// Key returns the name under which the checker matches a participant URL: scheme and host in
// lower case and the path without a trailing "/" or "/prepare" (query dropped). Prepare and
// base URLs of one participant have the same key.
func Key(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(strings.TrimSuffix(raw, "/"), "/prepare")
	}
	p := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/"+string(participant.PhasePrepare))
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + p
}

// absent is the outcome of a participant with no record of a transaction.
const absent participant.State = "absent"

// Check runs every check on the coordinator's transactions txns and the participants' states
// parts and returns the report. It never fails: bad data is a violation or a warning.
func Check(txns []Txn, parts []Participant, opts Options) Report {
	r := Report{Transactions: len(txns), Participants: len(parts), ByStatus: map[string]int{}}
	add := func(kind, txn, part, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, Txn: txn, Participant: part, Detail: fmt.Sprintf(format, args...)})
	}
	states := make(map[string]demo.State, len(parts))
	for _, p := range parts {
		states[Key(p.URL)] = p.State
	}
	known := make(map[string]string, len(txns)) // id -> status
	unchecked := map[string]bool{}
	for _, t := range txns {
		status := strings.ToLower(t.Status)
		known[t.ID] = status
		r.ByStatus[status]++
		checkTxn(t, status, states, unchecked, opts, add)
	}
	for url := range unchecked {
		r.Warnings = append(r.Warnings, fmt.Sprintf("participant %s is named by transactions but its state was not given: not checked", url))
	}
	if n := r.ByStatus[StatusFailed]; n > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d transactions are %q: only atomicity was checked for them", n, StatusFailed))
	}
	for _, p := range parts {
		checkParticipant(p.URL, p.State, known, opts, add)
	}
	slices.Sort(r.Warnings)
	slices.SortStableFunc(r.Violations, func(a, b Violation) int {
		return strings.Compare(a.Kind+"\x00"+a.Txn+"\x00"+a.Participant, b.Kind+"\x00"+b.Txn+"\x00"+b.Participant)
	})
	return r
}

type addFunc func(kind, txn, part, format string, args ...any)

// checkTxn checks atomicity, agreement and completion of one coordinator transaction.
func checkTxn(t Txn, status string, states map[string]demo.State, unchecked map[string]bool, opts Options, add addFunc) {
	outcome := map[string]participant.State{} // participant URL -> its state for t
	var committed, notCommitted []string
	for _, u := range t.Participants {
		st, ok := states[Key(u)]
		if !ok {
			unchecked[u] = true
			continue
		}
		s, ok := st.Ledger[t.ID]
		if !ok {
			s = absent
		}
		outcome[u] = s
		switch s {
		case participant.StateCommitted:
			committed = append(committed, u)
		case participant.StateRolledBack, participant.StateRefused, absent:
			notCommitted = append(notCommitted, u)
		}
	}
	if len(committed) > 0 && len(notCommitted) > 0 {
		var parts []string
		for _, u := range notCommitted {
			parts = append(parts, fmt.Sprintf("%s is %s", u, outcome[u]))
		}
		add(KindAtomicity, t.ID, "", "committed at %s but %s", strings.Join(committed, ", "), strings.Join(parts, ", "))
	}

	var want participant.State // the decision, if any; a participant still prepared is
	// reported by checkParticipant as a hold
	switch status {
	case StatusCommitted, StatusCommitting:
		want = participant.StateCommitted
	case StatusRolledBack, StatusRollingBack:
		want = participant.StateRolledBack
	case StatusPreparing:
	case StatusFailed:
		return // no known decision: atomicity (above) is all that can be checked
	default:
		add(KindAgreement, t.ID, "", "coordinator status %q is not one the checker knows", t.Status)
		return
	}
	if !opts.InFlight && (status == StatusPreparing || status == StatusCommitting || status == StatusRollingBack) {
		add(KindUnfinished, t.ID, "", "coordinator status is still %q", status)
	}
	for _, u := range t.Participants {
		s, ok := outcome[u]
		if !ok {
			continue
		}
		switch {
		case s == participant.StatePrepared:
		case want == participant.StateCommitted && s != participant.StateCommitted:
			add(KindAgreement, t.ID, u, "coordinator decided commit (%s) but the participant is %s", status, s)
		case want != participant.StateCommitted && s == participant.StateCommitted:
			add(KindAgreement, t.ID, u, "participant committed but the coordinator's status is %s", status)
		}
	}
}

// checkParticipant checks one participant's holds, ledger and inventory.
func checkParticipant(u string, st demo.State, known map[string]string, opts Options, add addFunc) {
	var held, heldByHolds, sold, committed int64
	pools := make([]string, 0, len(st.Inventory))
	for name := range st.Inventory {
		pools = append(pools, name)
	}
	slices.Sort(pools)
	for _, name := range pools {
		inv := st.Inventory[name]
		if inv.Free < 0 || inv.Held < 0 || inv.Sold < 0 {
			add(KindConservation, "", u, "pool %s has a negative count: %+v", name, inv)
		}
		if inv.Free+inv.Held+inv.Sold != inv.Capacity {
			add(KindConservation, "", u, "pool %s: free %d + held %d + sold %d = %d, not its capacity %d",
				name, inv.Free, inv.Held, inv.Sold, inv.Free+inv.Held+inv.Sold, inv.Capacity)
		}
		held += inv.Held
		sold += inv.Sold
	}
	for id, h := range st.Holds {
		heldByHolds += h.Units
		if _, ok := st.Inventory[h.Pool]; !ok {
			add(KindHold, id, u, "holds %d units of unknown pool %q", h.Units, h.Pool)
		}
		if s := st.Ledger[id]; s != participant.StatePrepared {
			add(KindHold, id, u, "holds %d units of %s but its ledger says %q, not prepared", h.Units, h.Pool, s)
		} else if !opts.InFlight {
			add(KindHold, id, u, "still holds %d units of %s (coordinator status %q)", h.Units, h.Pool, statusOrUnknown(known, id))
		}
	}
	var committedUnits int64
	for id, s := range st.Ledger {
		switch s {
		case participant.StateCommitted:
			committed++
			if n, ok := st.Units[id]; ok {
				committedUnits += n
			} else {
				committedUnits += st.Unit
			}
			if _, ok := known[id]; !ok && !opts.Pruned {
				add(KindAgreement, id, u, "participant committed a transaction the coordinator does not know")
			}
		case participant.StatePrepared:
			if _, ok := st.Holds[id]; !ok {
				add(KindHold, id, u, "ledger says prepared but nothing is held for it")
			}
		}
	}
	if held != heldByHolds {
		add(KindConservation, "", u, "pools hold %d units but the holds add up to %d", held, heldByHolds)
	}
	if want := committedUnits; sold != want {
		what := "sold"
		if st.Kind == demo.KindPayment {
			what = "charged (balances went down by)"
		}
		add(KindConservation, "", u, "%s %d units, but %d committed transactions ordered %d (payload units, else unit %d)", what, sold, committed, want, st.Unit)
	}
}

func statusOrUnknown(known map[string]string, id string) string {
	if s, ok := known[id]; ok {
		return s
	}
	return "unknown to the coordinator"
}
