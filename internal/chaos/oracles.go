package chaos

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/txcoord/txcoord/internal/checker"
	"github.com/txcoord/txcoord/internal/demo"
)

// Quiesce heals the cluster and waits up to timeout until the leader has no unfinished
// transaction and every node holds the same transactions. It returns the converged
// transactions of every node (by node id).
func (c *Cluster) Quiesce(ctx context.Context, timeout time.Duration) (map[string][]txnView, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		_ = c.HealAll()
		views, why := c.converged(ctx)
		if why == "" {
			return views, nil
		}
		last = why
		select {
		case <-ctx.Done():
			return views, fmt.Errorf("not quiet after %s: %s", timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// converged returns every node's transactions and "" if the cluster is quiet and converged,
// or a reason why not.
func (c *Cluster) converged(ctx context.Context) (map[string][]txnView, string) {
	leader, _, ok := c.Leader(ctx)
	if !ok {
		return nil, "no ready leader"
	}
	for _, st := range []string{"preparing", "committing", "rolling_back"} {
		var page struct {
			Transactions []txnView `json:"transactions"`
		}
		if err := getJSON(ctx, c.http, leader.URL+"/v1/transactions?limit=5&status="+st, 5*time.Second, &page); err != nil {
			return nil, err.Error()
		}
		if len(page.Transactions) > 0 {
			return nil, fmt.Sprintf("leader %s still has %s transactions (e.g. %s)", leader.ID, st, page.Transactions[0].ID)
		}
	}
	if c.cfg.Mode == "fast" {
		// A participant whose leader died before logging the transaction finds out by
		// inquiry, deadline + grace (and backoff) after its Prepare; the cluster learns of
		// it only then (a presumed-abort record), so quiet waits for every hold to end
		// before it reads the nodes.
		parts, err := checker.FetchParticipants(ctx, c.http, c.PrepareURLs())
		if err != nil {
			return nil, err.Error()
		}
		for _, p := range parts {
			for id := range p.State.Holds {
				return nil, fmt.Sprintf("participant %s still holds %d transactions (e.g. %s): waiting for its inquiries", p.URL, len(p.State.Holds), id)
			}
		}
	}
	views := map[string][]txnView{}
	for _, n := range c.Nodes {
		txns, err := fetchTxns(ctx, c.http, n.URL)
		if err != nil {
			return nil, fmt.Sprintf("node %s: %v", n.ID, err)
		}
		views[n.ID] = txns
	}
	if diffs := compareNodes(views, 1); len(diffs) > 0 {
		return views, "nodes differ: " + diffs[0]
	}
	return views, ""
}

// compareNodes lists (up to limit) the differences between the nodes' transactions.
func compareNodes(views map[string][]txnView, limit int) []string {
	ids := make([]string, 0, len(views))
	for id := range views {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		return nil
	}
	ref := ids[0]
	refMap := map[string]txnView{}
	for _, t := range views[ref] {
		refMap[t.ID] = t
	}
	var diffs []string
	add := func(format string, args ...any) bool {
		diffs = append(diffs, fmt.Sprintf(format, args...))
		return len(diffs) >= limit
	}
	for _, id := range ids[1:] {
		m := map[string]txnView{}
		for _, t := range views[id] {
			m[t.ID] = t
		}
		if len(m) != len(refMap) {
			if add("node %s has %d transactions, node %s %d", id, len(m), ref, len(refMap)) {
				return diffs
			}
		}
		for tid, a := range refMap {
			b, ok := m[tid]
			switch {
			case !ok:
				if add("txn %s is on node %s but not on node %s", tid, ref, id) {
					return diffs
				}
			case !reflect.DeepEqual(a, b):
				if add("txn %s: node %s has %s/%s index %d, node %s has %s/%s index %d", tid, ref, a.Status, a.Decision, a.Index, id, b.Status, b.Decision, b.Index) {
					return diffs
				}
			}
		}
		for tid := range m {
			if _, ok := refMap[tid]; !ok {
				if add("txn %s is on node %s but not on node %s", tid, id, ref) {
					return diffs
				}
			}
		}
	}
	return diffs
}

// Oracles is the verdict of every check after a quiet cluster.
type Oracles struct {
	Violations []string
	ByStatus   map[string]int
	Checker    checker.Report
	// O5 figures: the most requests one participant got in one wall-clock second, and the
	// most one participant got for one transaction within any 1-second window.
	MaxPerSecond       map[string]int
	MaxPerTxnPerSecond map[string]int
	RequestsLogged     map[string]int
}

func (o *Oracles) add(format string, args ...any) {
	o.Violations = append(o.Violations, fmt.Sprintf(format, args...))
}

// CheckOracles runs O1-O5, the atomicity checker, and (if reqs is not nil) the client
// agreement checks on a quiet cluster whose converged transactions are views.
func (c *Cluster) CheckOracles(ctx context.Context, views map[string][]txnView, reqs []request, perTxnBound, perSecondBound int) Oracles {
	o := Oracles{ByStatus: map[string]int{}, MaxPerSecond: map[string]int{}, MaxPerTxnPerSecond: map[string]int{}, RequestsLogged: map[string]int{}}
	// O4: every node holds the same transactions, field by field.
	for _, d := range compareNodes(views, 20) {
		o.add("O4 state differs: %s", d)
	}
	var txns []txnView
	for _, n := range c.Nodes {
		if v, ok := views[n.ID]; ok {
			txns = v
			break
		}
	}
	byID := map[string]txnView{}
	byKey := map[string][]string{}
	for _, t := range txns {
		byID[t.ID] = t
		o.ByStatus[t.Status]++
		if t.Key != "" {
			byKey[t.Key] = append(byKey[t.Key], t.ID)
		}
		// O1: the one decision agrees with the status (O4 already compared it across nodes).
		want := map[string]string{"committed": "commit", "committing": "commit", "rolled_back": "abort", "rolling_back": "abort", "preparing": ""}
		if w, ok := want[t.Status]; ok && t.Decision != w {
			o.add("O1 txn %s: status %s but decision %q", t.ID, t.Status, t.Decision)
		}
		if t.Status == "failed" && t.Decision == "" {
			o.add("O1 txn %s: failed without a decision", t.ID)
		}
		if !terminal(t.Status) {
			o.add("unfinished txn %s: still %s on a quiet cluster", t.ID, t.Status)
		}
	}
	for key, ids := range byKey {
		if len(ids) > 1 {
			o.add("idempotency: key %s started %d transactions: %v", key, len(ids), ids)
		}
	}

	// O2, O1 at the participants, O5: the participants' request logs.
	for _, p := range c.Parts {
		log, err := c.Requests(ctx, p, "")
		if err != nil {
			o.add("cannot read %s's request log: %v", p.Kind, err)
			continue
		}
		o.RequestsLogged[p.Kind] = len(log)
		if len(log) >= demo.DefaultRequestLogLimit*9/10 {
			o.add("%s's request log is near its limit (%d entries): O2/O5 may miss requests", p.Kind, len(log))
		}
		checkRequestLog(&o, p.Kind, log, byID, perTxnBound, perSecondBound, c.cfg.Mode == "fast")
	}

	// O3, atomicity, agreement, conservation: the checker on the participants' states.
	parts, err := checker.FetchParticipants(ctx, c.http, c.PrepareURLs())
	if err != nil {
		o.add("cannot read participant states: %v", err)
	} else {
		ct := make([]checker.Txn, len(txns))
		for i, t := range txns {
			urls := make([]string, len(t.Participants))
			for j, p := range t.Participants {
				urls[j] = p.Prepare
			}
			ct[i] = checker.Txn{ID: t.ID, Status: t.Status, Participants: urls}
		}
		o.Checker = checker.Check(ct, parts, checker.Options{})
		for _, v := range o.Checker.Violations {
			o.add("checker %s", v.String())
		}
	}

	// Every definite client answer agrees with the final state.
	if reqs != nil {
		checkClients(&o, reqs, byID, byKey)
	}
	sort.Strings(o.Violations)
	return o
}

// checkRequestLog runs O1 (at the participants), O2 and O5 on one participant's request
// log. fast allows what fast mode does to a transaction no node has a record of: its
// Prepare was sent before anything was logged, and a leader-decided Rollback before its
// entry was, so a leader that died then leaves calls without a record. A Commit is only
// ever sent after its decision is logged, so one for an unknown transaction stays a
// violation in either mode.
func checkRequestLog(o *Oracles, kind string, log []demo.LoggedRequest, byID map[string]txnView, perTxnBound, perSecondBound int, fast bool) {
	type seen struct{ commit, rollback bool }
	phases := map[string]*seen{}
	perTxn := map[string][]time.Time{}
	perSec := map[int64]int{}
	for _, r := range log {
		if r.TransactionID == "" {
			continue
		}
		perSec[r.Received.Unix()]++
		perTxn[r.TransactionID] = append(perTxn[r.TransactionID], r.Received)
		s := phases[r.TransactionID]
		if s == nil {
			s = &seen{}
			phases[r.TransactionID] = s
		}
		t, known := byID[r.TransactionID]
		if !known && fast && r.Phase != "commit" {
			if r.Phase == "rollback" {
				s.rollback = true
			}
			continue
		}
		if !known {
			o.add("O1 %s got %s for txn %s from node %q, which the coordinator does not know", kind, r.Phase, r.TransactionID, r.Node)
			continue
		}
		switch r.Phase {
		case "commit":
			s.commit = true
			if t.Decision != "commit" {
				o.add("O1 %s got commit for txn %s from node %q at %s, but the decision is %q", kind, r.TransactionID, r.Node, r.Received.Format(timeLayout), t.Decision)
			}
		case "rollback":
			s.rollback = true
			if t.Decision != "abort" {
				o.add("O1 %s got rollback for txn %s from node %q at %s, but the decision is %q", kind, r.TransactionID, r.Node, r.Received.Format(timeLayout), t.Decision)
			}
		}
	}
	for id, s := range phases {
		if s.commit && s.rollback {
			o.add("O2 %s got both commit and rollback for txn %s", kind, id)
		}
	}
	maxSec := 0
	for _, n := range perSec {
		maxSec = max(maxSec, n)
	}
	o.MaxPerSecond[kind] = maxSec
	if perSecondBound > 0 && maxSec > perSecondBound {
		o.add("O5 %s got %d requests in one second (bound %d)", kind, maxSec, perSecondBound)
	}
	worst, worstID := 0, ""
	for id, ts := range perTxn {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		j := 0
		for i := range ts {
			for ts[i].Sub(ts[j]) >= time.Second {
				j++
			}
			if n := i - j + 1; n > worst {
				worst, worstID = n, id
			}
		}
	}
	o.MaxPerTxnPerSecond[kind] = worst
	if perTxnBound > 0 && worst > perTxnBound {
		o.add("O5 %s got %d requests for txn %s within one second (bound %d)", kind, worst, worstID, perTxnBound)
	}
}

func checkClients(o *Oracles, reqs []request, byID map[string]txnView, byKey map[string][]string) {
	for _, r := range reqs {
		for _, id := range r.IDs {
			if t, ok := byID[id]; ok && t.Key != r.Key {
				o.add("client: request %s was answered with txn %s, which has key %q", r.Key, id, t.Key)
			}
		}
		if r.Status != "" {
			t, ok := byID[r.TxnID]
			switch {
			case !ok:
				o.add("client: request %s got %s for txn %s, which no node has", r.Key, r.Status, r.TxnID)
			case t.Status != r.Status:
				o.add("client: request %s got %s for txn %s, but its final status is %s", r.Key, r.Status, r.TxnID, t.Status)
			}
			if ids := byKey[r.Key]; len(ids) == 1 && ids[0] != r.TxnID {
				o.add("client: request %s got txn %s but the key is bound to %s", r.Key, r.TxnID, ids[0])
			}
			continue
		}
		// A 202 "committing" or "rolling_back" promises that outcome (or failed); a 202 with
		// any other status (e.g. "preparing": nobody decided before the wait ran out)
		// promises nothing.
		if want, promised := map[string]string{"committing": "committed", "rolling_back": "rolled_back"}[r.Pending]; promised {
			t, ok := byID[r.TxnID]
			if ok && t.Status != want && t.Status != "failed" {
				o.add("client: request %s was told %s for txn %s, but its final status is %s", r.Key, r.Pending, r.TxnID, t.Status)
			}
		}
	}
}

// summarizeClients counts the logical client requests by how they ended.
func summarizeClients(reqs []request) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		switch {
		case r.Status != "":
			out["answered "+r.Status]++
		case r.GaveUp && r.Pending != "":
			out["gave up after 202 "+r.Pending]++
		case r.GaveUp:
			out["gave up without an answer"]++
		default:
			out["unfinished"]++
		}
	}
	return out
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
