package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/openapitest"
)

// fakeNode implements Node. Leader answers from a queue: each call takes the head while
// more than one entry is left, so a test can script "B, then C" leadership changes.
type fakeNode struct {
	mu          sync.Mutex
	id          string
	leaderReady bool
	leaders     []leader
	status      cluster.Status
	leaderCalls int
	// readyAfter, when > 0, makes LeaderReady true once Leader was called that many times:
	// leadership arriving while a forward retries.
	readyAfter int
}

type leader struct{ id, addr string }

func (n *fakeNode) ID() string { return n.id }

func (n *fakeNode) LeaderReady() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leaderReady || (n.readyAfter > 0 && n.leaderCalls >= n.readyAfter)
}

func (n *fakeNode) Ready() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status.Ready
}

func (n *fakeNode) Leader() (string, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.leaderCalls++
	if len(n.leaders) == 0 {
		return "", ""
	}
	l := n.leaders[0]
	if len(n.leaders) > 1 {
		n.leaders = n.leaders[1:]
	}
	return l.id, l.addr
}

func (n *fakeNode) Status() cluster.Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

func (n *fakeNode) setLeaders(ls ...leader) {
	n.mu.Lock()
	n.leaders = ls
	n.mu.Unlock()
}

func (n *fakeNode) setStatus(st cluster.Status) {
	n.mu.Lock()
	n.status = st
	n.mu.Unlock()
}

// fakeSubmitter implements Submitter: it records every call and delegates to fn.
type fakeSubmitter struct {
	mu    sync.Mutex
	calls []coordinator.Request
	fn    func(ctx context.Context, r coordinator.Request) (*fsm.Txn, error)
}

func (s *fakeSubmitter) Submit(ctx context.Context, r coordinator.Request) (*fsm.Txn, error) {
	s.mu.Lock()
	s.calls = append(s.calls, r)
	fn := s.fn
	s.mu.Unlock()
	return fn(ctx, r)
}

func (s *fakeSubmitter) setFn(fn func(ctx context.Context, r coordinator.Request) (*fsm.Txn, error)) {
	s.mu.Lock()
	s.fn = fn
	s.mu.Unlock()
}

func (s *fakeSubmitter) Calls() []coordinator.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]coordinator.Request(nil), s.calls...)
}

// env is one API server over a real FSM, a fake node that leads and a fake submitter that
// by default commits every transaction at once (Begin, Decide commit, Complete).
type env struct {
	t    *testing.T
	fsm  *fsm.FSM
	idx  atomic.Uint64
	node *fakeNode
	sub  *fakeSubmitter
	srv  *Server
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{t: t, fsm: fsm.New()}
	e.node = &fakeNode{id: "node-" + strings.ToLower(t.Name()), leaderReady: true, status: cluster.Status{NodeID: "n", Role: "leader", Ready: true}}
	e.sub = &fakeSubmitter{fn: e.commitAll}
	e.srv = New(cfg, e.node, e.fsm, e.sub)
	return e
}

func (e *env) apply(cmd fsm.Command) fsm.Result {
	return e.fsm.ApplyCommand(e.idx.Add(1), cmd)
}

// begin logs Begin for r as the engine would: a Key already bound returns the earlier
// transaction (fresh is then false).
func (e *env) begin(r coordinator.Request) (t *fsm.Txn, fresh bool) {
	if r.Key != "" {
		if t, ok := e.fsm.ByKey(r.Key); ok {
			return t, false
		}
	}
	now := time.Now()
	res := e.apply(&fsm.Begin{ID: uuid.Must(uuid.NewV7()).String(), Key: r.Key, CreatedAt: now.UnixMilli(),
		Deadline: now.Add(r.Timeout).UnixMilli(), Participants: r.Participants})
	if errors.Is(res.Err, fsm.ErrKeyExists) {
		return res.Txn, false
	}
	if res.Err != nil {
		e.t.Errorf("begin: %v", res.Err)
	}
	return res.Txn, true
}

func (e *env) decide(t *fsm.Txn, d fsm.Decision, votes []fsm.Vote, reasons []string) {
	if votes == nil {
		votes = make([]fsm.Vote, len(t.Participants))
		for i := range votes {
			votes[i] = fsm.VoteYes
		}
	}
	if reasons == nil {
		reasons = make([]string, len(t.Participants))
	}
	if res := e.apply(&fsm.Decide{ID: t.ID, Decision: d, At: time.Now().UnixMilli(), Votes: votes, Reasons: reasons}); res.Err != nil {
		e.t.Errorf("decide: %v", res.Err)
	}
}

func (e *env) complete(t *fsm.Txn) {
	att := make([]uint32, len(t.Participants))
	for i := range att {
		att[i] = 1
	}
	if res := e.apply(&fsm.Complete{At: time.Now().UnixMilli(), Items: []fsm.Completion{{ID: t.ID, Attempts: att}}}); res.Err != nil {
		e.t.Errorf("complete: %v", res.Err)
	}
}

// commitAll is the default Submit: the transaction commits before Submit returns.
func (e *env) commitAll(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
	t, fresh := e.begin(r)
	if fresh {
		e.decide(t, fsm.DecisionCommit, nil, nil)
		e.complete(t)
	}
	return t, nil
}

// txnIDs returns every transaction id in the FSM.
func (e *env) txnIDs() []string {
	ts, _ := e.fsm.List(0, "", 0)
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	return ids
}

// do serves one request through the API handler, without a network.
func (e *env) do(method, path string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	openapitest.KeepBody(req)
	defer openapitest.Forget(req)
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	checkOpenAPI(e.t, req, rec)
	return rec
}

func (e *env) post(body string, hdr ...string) *httptest.ResponseRecorder {
	return e.do(http.MethodPost, "/v1/transactions", strings.NewReader(body), hdr...)
}

// checkError asserts that a response is a JSON error with the given status and code, whose
// keys are exactly error, detail and (when allowed) transactionId. It returns the body.
func checkError(t *testing.T, status int, h http.Header, body []byte, wantStatus int, wantCode api.Code) map[string]string {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status = %d, want %d (body %s)", status, wantStatus, body)
	}
	checkJSONType(t, h)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %q", err, body)
	}
	out := map[string]string{}
	var keys []string
	for k, v := range m {
		keys = append(keys, k)
		s, ok := v.(string)
		if !ok {
			t.Errorf("error body key %q is %T, want string", k, v)
		}
		out[k] = s
	}
	sort.Strings(keys)
	switch strings.Join(keys, ",") {
	case "detail,error":
	case "detail,error,transactionId":
		if wantCode != codeIndeterminate {
			t.Errorf("transactionId in a %q error: %s", wantCode, body)
		}
	default:
		t.Errorf("error body keys = %v, want error, detail [, transactionId]: %s", keys, body)
	}
	if out["error"] != string(wantCode) {
		t.Errorf("error = %q, want %q (body %s)", out["error"], wantCode, body)
	}
	if out["detail"] == "" {
		t.Errorf("empty detail: %s", body)
	}
	return out
}

func checkRec(t *testing.T, rec *httptest.ResponseRecorder, wantStatus int, wantCode api.Code) map[string]string {
	t.Helper()
	return checkError(t, rec.Code, rec.Header(), rec.Body.Bytes(), wantStatus, wantCode)
}

func checkJSONType(t *testing.T, h http.Header) {
	t.Helper()
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", h.Get("Content-Type"))
	}
}

// outcome decodes a POST answer and checks it has exactly transactionId, status and errors
// (an array, never null).
func outcome(t *testing.T, body []byte) Outcome {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %q", err, body)
	}
	if len(m) != 3 || m["transactionId"] == nil || m["status"] == nil || m["errors"] == nil {
		t.Errorf("answer keys are not exactly transactionId, status, errors: %s", body)
	}
	if string(m["errors"]) == "null" {
		t.Errorf("errors is null, want an array: %s", body)
	}
	var o Outcome
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

const (
	flight = "http://flight.example/prepare"
	hotel  = "http://hotel.example/prepare"
	pay    = "http://pay.example/prepare"
)
