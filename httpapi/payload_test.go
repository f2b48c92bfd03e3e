package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

// gatedNode is a fakeNode whose cluster runs at a feature level below or at 2.
type gatedNode struct {
	*fakeNode
	level atomic.Uint32
}

func (n *gatedNode) FeatureError(need uint32, what string) error {
	if have := n.level.Load(); have < need {
		return fmt.Errorf("%w: %s needs feature level %d, the cluster has %d (servers on an earlier build: n3)", cluster.ErrFeatureUnavailable, what, need, have)
	}
	return nil
}

// TestPost_Payloads (issue 14, item 1): a services object may carry a payload, which the
// engine gets compacted, one per participant, with commit and rollback derived when absent;
// a request without payloads passes nil payloads, so the old Begin encoding is logged.
func TestPost_Payloads(t *testing.T) {
	e := newEnv(t, Config{})
	gn := &gatedNode{fakeNode: e.node}
	gn.level.Store(2)
	e.srv = New(Config{}, gn, e.fsm, e.sub)
	rec := e.post(`{"services": ["http://a/prepare", {"prepare": "http://b/x/prepare", "payload": {"seats": 2, "flight": "LH400"}}]}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	calls := e.sub.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d submits", len(calls))
	}
	c := calls[0]
	if len(c.Payloads) != 2 || c.Payloads[0] != "" || c.Payloads[1] != `{"seats":2,"flight":"LH400"}` {
		t.Fatalf("payloads %q", c.Payloads)
	}
	if c.Participants[1].Commit != "http://b/x/commit" || c.Participants[1].Rollback != "http://b/x/rollback" {
		t.Fatalf("derived URLs %+v", c.Participants[1])
	}
	if rec := e.post(threeServices); rec.Code != http.StatusOK || e.sub.Calls()[1].Payloads != nil {
		t.Fatalf("without payloads: %d, payloads %q", rec.Code, e.sub.Calls()[1].Payloads)
	}
}

// TestPost_PayloadLimitsAndErrors: a payload over the per-participant or per-transaction
// limit, or invalid JSON, is a 400 that names the limit; nothing is submitted.
func TestPost_PayloadLimitsAndErrors(t *testing.T) {
	e := newEnv(t, Config{MaxPayloadBytes: 20, MaxTxnPayloadBytes: 30})
	for name, tc := range map[string]struct{ body, want string }{
		"one too big": {`{"services": [{"prepare": "http://a/prepare", "payload": {"x": "0123456789012345678"}}]}`, "the limit is 20 bytes per participant (--max-payload-bytes)"},
		"sum too big": {`{"services": [{"prepare": "http://a/prepare", "payload": "0123456789abcdef"}, {"prepare": "http://b/prepare", "payload": "0123456789abcdef"}]}`, "the limit is 30 bytes per transaction (--max-txn-payload-bytes)"},
		"only commit": {`{"services": [{"prepare": "http://a/prepare", "commit": "http://a/c"}]}`, `both "commit" and "rollback", or neither`},
		"underivable": {`{"services": [{"prepare": "http://a/p", "payload": 1}]}`, "last path segment"},
		"no prepare":  {`{"services": [{"payload": 1}]}`, `must name "prepare"`},
		"unknown key": {`{"services": [{"prepare": "http://a/prepare", "Payload": 1}]}`, `unknown field "Payload"`},
	} {
		rec := e.post(tc.body)
		var body struct{ Detail string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(body.Detail, tc.want) {
			t.Errorf("%s: %d %s, want 400 with %q", name, rec.Code, rec.Body, tc.want)
		}
	}
	if n := len(e.sub.Calls()); n != 0 {
		t.Fatalf("%d submits for invalid requests", n)
	}
	// Compact size counts: whitespace is free.
	rec := e.post(`{"services": [{"prepare": "http://a/prepare", "payload": {  "x" :   "0123456789"   }}]}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("compact payload of 18 bytes: %d %s", rec.Code, rec.Body)
	}
}

// TestPost_PayloadsNeedLevel2: while the cluster's feature level is below 2 (a rolling
// upgrade), a POST with payloads gets 409 feature_unavailable before anything is submitted;
// one without payloads goes through.
func TestPost_PayloadsNeedLevel2(t *testing.T) {
	e := newEnv(t, Config{})
	gn := &gatedNode{fakeNode: e.node}
	gn.level.Store(1)
	e.srv = New(Config{}, gn, e.fsm, e.sub)
	rec := e.post(`{"services": [{"prepare": "http://a/prepare", "payload": {"seats": 2}}]}`)
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), `"feature_unavailable"`) || !strings.Contains(rec.Body.String(), "participant payloads needs feature level 2") {
		t.Fatalf("payloads at level 1: %d %s", rec.Code, rec.Body)
	}
	if n := len(e.sub.Calls()); n != 0 {
		t.Fatalf("submitted %d", n)
	}
	if rec := e.post(threeServices); rec.Code != http.StatusOK {
		t.Fatalf("without payloads at level 1: %d %s", rec.Code, rec.Body)
	}
}

// TestStuckAfterCountsFromTheDecision (issue 14, item 2): /v1/stuck lists a transaction
// whose phase two is unfinished StuckAfter after its decision, with the participant's last
// error, and not one decided just now.
func TestStuckAfterCountsFromTheDecision(t *testing.T) {
	e := newEnv(t, Config{StuckAfter: 50 * time.Millisecond})
	e.srv = New(Config{StuckAfter: 50 * time.Millisecond}, e.node, e.fsm, opSubmitter{e.sub})
	mk := func(decidedAgo time.Duration) string {
		now := time.Now()
		id := uuid.Must(uuid.NewV7()).String()
		ps := []fsm.Participant{{Prepare: "http://a/prepare", Commit: "http://a/commit", Rollback: "http://a/rollback"}}
		e.apply(&fsm.Begin{ID: id, CreatedAt: now.Add(-time.Hour).UnixMilli(), Deadline: now.Add(-time.Hour + time.Second).UnixMilli(), Participants: ps})
		e.apply(&fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: now.Add(-decidedAgo).UnixMilli(), Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
		e.apply(&fsm.Progress{ID: id, Reports: []fsm.Report{{Attempts: 7, Error: "HTTP 500: ledger down"}}})
		return id
	}
	old, fresh := mk(time.Minute), mk(0)
	rec := e.do(http.MethodGet, "/v1/stuck", nil)
	var out StuckList
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if len(out.Transactions) != 1 || out.Transactions[0].TransactionID != old {
		t.Fatalf("stuck %+v, want only %s (not %s)", out.Transactions, old, fresh)
	}
	if p := out.Transactions[0].Participants[0]; p.LastError != "HTTP 500: ledger down" || p.Attempts != 7 {
		t.Fatalf("participant %+v", p)
	}
	// Unknown, repeated and malformed parameters are 400s naming the parameter (QA F14).
	for _, q := range []string{"?foo=1", "?olderThan=1&olderThan=2", "?olderThan=-5"} {
		rec := e.do(http.MethodGet, "/v1/stuck"+q, nil)
		checkRec(t, rec, http.StatusBadRequest, codeBadRequest)
		if name := strings.TrimLeft(strings.SplitN(q, "=", 2)[0], "?"); !strings.Contains(rec.Body.String(), name) {
			t.Errorf("%s: %s does not name %q", q, rec.Body, name)
		}
	}
}

// opSubmitter adds the Operator methods (unused here) so that the operator routes,
// /v1/stuck among them, are served.
type opSubmitter struct{ *fakeSubmitter }

func (opSubmitter) Retry(context.Context, string, string) (*fsm.Txn, error)   { return nil, nil }
func (opSubmitter) Resolve(context.Context, string, string) (*fsm.Txn, error) { return nil, nil }
