package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// envLog is a coordinator.Log over the env's FSM.
type envLog struct{ e *env }

func (l envLog) Apply(_ context.Context, cmd fsm.Command) (fsm.Result, error) {
	return l.e.apply(cmd), nil
}

// inquirySub is the fake submitter with a real engine's Inquire.
type inquirySub struct {
	*fakeSubmitter
	eng *coordinator.Engine
}

func (s inquirySub) Inquire(ctx context.Context, id string, deadline time.Time) (coordinator.Answer, error) {
	return s.eng.Inquire(ctx, id, deadline)
}

// inquiryEnv is an env whose submitter answers inquiries with a leading engine; gate is
// the engine's FeatureGate (nil: every level enabled). The FSM is at feature level 3.
func inquiryEnv(t *testing.T, gate func(uint32, string) error) *env {
	e := newEnv(t, Config{})
	e.apply(&fsm.SetFeatures{Level: 3, At: time.Now().Add(-time.Hour).UnixMilli()})
	eng := coordinator.New(coordinator.Config{FeatureGate: gate}, envLog{e}, e.fsm, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Lead(ctx, 1) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); !eng.Leading(); {
		if time.Now().After(deadline) {
			t.Fatal("engine not leading")
		}
		time.Sleep(time.Millisecond)
	}
	e.srv = New(Config{}, e.node, e.fsm, inquirySub{e.sub, eng})
	return e
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func outcomePath(id string, deadline time.Time) string {
	p := "/v1/transactions/" + id + "/outcome"
	if !deadline.IsZero() {
		p += "?deadline=" + url.QueryEscape(participant.FormatDeadline(deadline))
	}
	return p
}

func inquiryAnswer(t *testing.T, rec *httptest.ResponseRecorder) InquiryAnswer {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || len(m) != 2 {
		t.Fatalf("answer is not exactly transactionId and outcome: %s", rec.Body)
	}
	var a InquiryAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestInquiryRoute(t *testing.T) {
	e := inquiryEnv(t, nil)
	committed, _ := e.commitAll(context.Background(), coordinator.Request{Participants: []fsm.Participant{{Prepare: flight, Commit: flight + "c", Rollback: flight + "r"}}, Timeout: time.Second})
	past := time.Now().Add(-time.Minute)
	neverSeen := uuid.NewString()

	if a := inquiryAnswer(t, e.do(http.MethodGet, outcomePath(committed.ID, past), nil)); a.Outcome != "committed" || a.TransactionID != committed.ID {
		t.Fatalf("committed: %+v", a)
	}
	// Unknown, without a deadline or before it: pending, with Retry-After; nothing logged.
	idx := e.fsm.AppliedIndex()
	rec := e.do(http.MethodGet, outcomePath(neverSeen, time.Time{}), nil)
	if a := inquiryAnswer(t, rec); a.Outcome != "pending" || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("no deadline: %+v, Retry-After %q", a, rec.Header().Get("Retry-After"))
	}
	rec = e.do(http.MethodGet, outcomePath(neverSeen, time.Now().Add(20*time.Second)), nil)
	if a := inquiryAnswer(t, rec); a.Outcome != "pending" || atoi(rec.Header().Get("Retry-After")) < 19 {
		t.Fatalf("before the deadline: %+v, Retry-After %q", a, rec.Header().Get("Retry-After"))
	}
	if e.fsm.AppliedIndex() != idx {
		t.Fatal("a pending inquiry logged something")
	}
	// Unknown past its deadline: presumed aborted through the log.
	if a := inquiryAnswer(t, e.do(http.MethodGet, outcomePath(neverSeen, past), nil)); a.Outcome != "rolled_back" {
		t.Fatalf("past the deadline: %+v", a)
	}
	if tx, ok := e.fsm.Get(neverSeen); !ok || !tx.PresumedAborted() {
		t.Fatalf("no presumed-abort record: %+v", tx)
	}
	// GET of the transaction shows the record, with its note.
	rec = e.do(http.MethodGet, "/v1/transactions/"+neverSeen, nil)
	if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("GET the presumed-abort record: %d %s", rec.Code, rec.Body)
	}
	var v TransactionView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.Status != "rolled_back" || v.Note != fsm.PresumedAbortNote || len(v.Participants) != 0 {
		t.Fatalf("view %+v (%v)", v, err)
	}
	// Bad input.
	checkRec(t, e.do(http.MethodGet, "/v1/transactions/"+neverSeen+"/outcome?deadline=yesterday", nil), http.StatusBadRequest, codeBadRequest)
	checkRec(t, e.do(http.MethodGet, "/v1/transactions/"+neverSeen+"/outcome?consistency=stale", nil), http.StatusBadRequest, codeBadRequest)
}

// TestInquiryIDs: an inquiry names a transaction by its UUID. Another spelling of a
// committed transaction's id (upper case, urn:uuid:, braces, no hyphens) is that
// transaction: committed, never a presumed abort of a second record; a string that is no
// UUID (a name, 5,000 characters, a path segment) is a 400 and nothing is logged.
func TestInquiryIDs(t *testing.T) {
	e := inquiryEnv(t, nil)
	committed, _ := e.commitAll(context.Background(), coordinator.Request{Participants: []fsm.Participant{{Prepare: flight, Commit: flight + "c", Rollback: flight + "r"}}, Timeout: time.Second})
	past := time.Now().Add(-time.Minute)
	idx := e.fsm.AppliedIndex()
	for _, spelling := range []string{
		strings.ToUpper(committed.ID),
		"urn:uuid:" + committed.ID,
		"{" + committed.ID + "}",
		strings.ReplaceAll(committed.ID, "-", ""),
	} {
		a := inquiryAnswer(t, e.do(http.MethodGet, outcomePath(url.PathEscape(spelling), past), nil))
		if a.Outcome != "committed" || a.TransactionID != spelling {
			t.Errorf("inquiry as %q: %+v, want committed, echoing the id asked", spelling, a)
		}
		rec := e.do(http.MethodGet, "/v1/transactions/"+url.PathEscape(spelling), nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"status":"committed"`) {
			t.Errorf("GET as %q: %d %s", spelling, rec.Code, rec.Body)
		}
	}
	for _, bad := range []string{"notanid", strings.Repeat("a", 5000), "%2e%2e", "01a23815-af51-77a0-99c2-e5597d12125"} {
		checkRec(t, e.do(http.MethodGet, outcomePath(bad, past), nil), http.StatusBadRequest, codeBadRequest)
	}
	if e.fsm.AppliedIndex() != idx {
		t.Fatalf("inquiries logged %d entries, want none", e.fsm.AppliedIndex()-idx)
	}
	if n := len(e.fsm.Active()); n != 0 {
		t.Fatalf("%d records in progress", n)
	}
}

// TestInquiryRefusals: 409 feature_unavailable before level 3, 404 not_found past the
// horizon; nothing is logged for either.
func TestInquiryRefusals(t *testing.T) {
	past := time.Now().Add(-time.Minute)
	gated := inquiryEnv(t, func(need uint32, what string) error {
		return fmt.Errorf("%w: %s needs feature level %d", cluster.ErrFeatureUnavailable, what, need)
	})
	idx := gated.fsm.AppliedIndex()
	checkRec(t, gated.do(http.MethodGet, outcomePath(uuid.NewString(), past), nil), http.StatusConflict, codeFeature)
	if gated.fsm.AppliedIndex() != idx {
		t.Fatal("logged without the feature level")
	}
	old := inquiryEnv(t, nil)
	old.apply(&fsm.Prune{FinishedBefore: time.Now().UnixMilli()})
	checkRec(t, old.do(http.MethodGet, outcomePath(uuid.NewString(), past), nil), http.StatusNotFound, codeNotFound)
}

// TestInquiryOnFollower: a follower answers a decision it holds itself and forwards the
// rest to the leader, whose presumed abort it then answers with.
func TestInquiryOnFollower(t *testing.T) {
	lead := inquiryEnv(t, nil)
	ls := httptest.NewServer(lead.srv.Handler())
	t.Cleanup(ls.Close)
	f := newEnv(t, Config{})
	f.node.leaderReady = false
	f.node.status.Role = "follower"
	f.node.setLeaders(leader{id: "leader", addr: ls.URL})
	committed, _ := f.commitAll(context.Background(), coordinator.Request{Participants: []fsm.Participant{{Prepare: flight, Commit: flight + "c", Rollback: flight + "r"}}, Timeout: time.Second})
	past := time.Now().Add(-time.Minute)
	elsewhere := uuid.NewString()
	if a := inquiryAnswer(t, f.do(http.MethodGet, outcomePath(committed.ID, past), nil)); a.Outcome != "committed" {
		t.Fatalf("follower's own decision: %+v", a)
	}
	if a := inquiryAnswer(t, f.do(http.MethodGet, outcomePath(elsewhere, past), nil)); a.Outcome != "rolled_back" {
		t.Fatalf("forwarded: %+v", a)
	}
	if tx, ok := lead.fsm.Get(elsewhere); !ok || !tx.PresumedAborted() {
		t.Fatal("the leader did not log the presumed abort")
	}
}

// QA F5: a pending answer's Retry-After is capped (a year-9999 deadline does not say
// "ask again in 292 years"), and the zero instant 0001-01-01 is a deadline long past (404
// past the horizon), not "no deadline".
func TestInquiryDeadlineExtremes(t *testing.T) {
	e := inquiryEnv(t, nil)
	rec := e.do(http.MethodGet, "/v1/transactions/"+uuid.NewString()+"/outcome?deadline=9999-12-31T23:59:59Z", nil)
	if a := inquiryAnswer(t, rec); a.Outcome != "pending" || atoi(rec.Header().Get("Retry-After")) != 60 {
		t.Fatalf("far-future deadline: %+v, Retry-After %q, want pending and 60", a, rec.Header().Get("Retry-After"))
	}
	e.apply(&fsm.Prune{FinishedBefore: time.Now().UnixMilli()}) // the horizon is now
	checkRec(t, e.do(http.MethodGet, "/v1/transactions/"+uuid.NewString()+"/outcome?deadline=0001-01-01T00:00:00Z", nil), http.StatusNotFound, codeNotFound)
}
