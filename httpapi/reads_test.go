package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

// progressFake adds Progress and ReadIndex to a fakeNode (as *cluster.Node has them).
type progressFake struct {
	*fakeNode
	commit, applied func() uint64
}

func (p progressFake) Progress() cluster.Progress {
	return cluster.Progress{Leader: p.LeaderReady(), CommitIndex: 0}
}

func (p progressFake) ReadIndex(context.Context) (uint64, error) { return p.commit(), nil }

func (p progressFake) AppliedIndex() uint64 { return p.applied() }

// settlingSubmitter is a Submitter whose Settled channels the test closes.
type settlingSubmitter struct {
	fakeSubmitter
	mu sync.Mutex
	ch map[string]chan struct{}
}

// Retry and Resolve make it an Operator, so that /v1/stuck is served.
func (*settlingSubmitter) Retry(context.Context, string, string) (*fsm.Txn, error)   { return nil, nil }
func (*settlingSubmitter) Resolve(context.Context, string, string) (*fsm.Txn, error) { return nil, nil }

func (s *settlingSubmitter) Settled(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch[id]
}

func decodeView(t *testing.T, rec *httptest.ResponseRecorder) TransactionView {
	t.Helper()
	var v TransactionView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	return v
}

// TestLeaderRead_SettledOutcomeBeforeItsCompletionEntry: on the leader, a transaction whose
// participants all acknowledged phase two reads as committed at every level although the
// FSM still holds committing (the completion entry is on its way).
func TestLeaderRead_SettledOutcomeBeforeItsCompletionEntry(t *testing.T) {
	e := newEnv(t, Config{})
	sub := &settlingSubmitter{ch: map[string]chan struct{}{}}
	e.srv = New(Config{}, e.node, e.fsm, sub)
	r := e.apply(&fsm.Begin{ID: "s1", CreatedAt: 1, Deadline: 2, Participants: threeParts()})
	e.decide(r.Txn, fsm.DecisionCommit, nil, nil)
	ch := make(chan struct{})
	sub.ch["s1"] = ch
	for _, q := range []string{"", "?consistency=stale"} {
		if v := decodeView(t, e.do(http.MethodGet, "/v1/transactions/s1"+q, nil)); v.Status != "committing" {
			t.Errorf("before settling %q: %s", q, v.Status)
		}
	}
	stuck := func() []TransactionView {
		var out StuckList
		if rec := e.do(http.MethodGet, "/v1/stuck?olderThan=0", nil); json.Unmarshal(rec.Body.Bytes(), &out) != nil {
			t.Fatalf("stuck: %d %s", rec.Code, rec.Body)
		}
		return out.Transactions
	}
	if got := stuck(); len(got) != 1 {
		t.Errorf("stuck before settling: %+v, want s1", got)
	}
	close(ch)
	if got := stuck(); len(got) != 0 {
		t.Errorf("a settled transaction listed as stuck: %+v", got)
	}
	for _, q := range []string{"", "?consistency=stale", "?consistency=linearizable"} {
		rec := e.do(http.MethodGet, "/v1/transactions/s1"+q, nil)
		v := decodeView(t, rec)
		if v.Status != "committed" || !v.Participants[0].Acknowledged || v.Read == nil || v.Read.Role != "leader" {
			t.Errorf("settled %q: %d %+v", q, rec.Code, v)
		}
		if rec.Header().Get(HeaderConsistency) == "" || rec.Header().Get(HeaderAppliedIndex) == "" {
			t.Errorf("headers %v", rec.Header())
		}
	}
	l := listPage(t, e, "?status=committing")
	if len(l.Transactions) != 0 {
		t.Errorf("a settled transaction listed under committing: %+v", l.Transactions)
	}
	if l := listPage(t, e, ""); len(l.Transactions) != 1 || l.Transactions[0].Status != "committed" || l.Read == nil {
		t.Errorf("list: %+v", l)
	}
}

// follower returns an API server that does not lead, whose leader is the leader env's
// server, and the leader env.
func follower(t *testing.T) (f *env, l *env) {
	t.Helper()
	l = newEnv(t, Config{})
	ts := httptest.NewServer(New(Config{}, progressFake{l.node, l.fsm.AppliedIndex, l.fsm.AppliedIndex}, l.fsm, l.sub).Handler())
	t.Cleanup(ts.Close)
	f = newEnv(t, Config{})
	f.node.leaderReady = false
	f.node.id = "follower"
	f.node.leaders = []leader{{id: "L", addr: ts.URL}}
	f.node.status = cluster.Status{NodeID: "follower", Role: "follower", LeaderID: "L", Ready: true}
	f.srv = New(Config{}, progressFake{f.node, func() uint64 { return 0 }, f.fsm.AppliedIndex}, f.fsm, f.sub)
	return f, l
}

// TestFollowerRead_Levels: the default level serves a final local record and forwards
// anything else (404 included) to the leader; linearizable always forwards; stale forwards
// until the follower has caught up with the leader's confirmed commit index, then serves
// its own FSM.
func TestFollowerRead_Levels(t *testing.T) {
	f, l := follower(t)
	// The leader has both; the follower only the first, not yet final.
	r := l.apply(&fsm.Begin{ID: "a", CreatedAt: 1, Deadline: 2, Participants: threeParts()})
	l.decide(r.Txn, fsm.DecisionCommit, nil, nil)
	l.complete(r.Txn)
	l.apply(&fsm.Begin{ID: "b", CreatedAt: 2, Deadline: 3, Participants: threeParts()})
	f.apply(&fsm.Begin{ID: "a", CreatedAt: 1, Deadline: 2, Participants: threeParts()})

	check := func(path, status, level, node string) {
		t.Helper()
		rec := f.do(http.MethodGet, path, nil)
		v := decodeView(t, rec)
		if rec.Code != 200 || v.Status != status || v.Read == nil || v.Read.Consistency != level || v.Read.NodeID != node {
			t.Errorf("GET %s: %d %s %+v", path, rec.Code, v.Status, v.Read)
		}
	}
	check("/v1/transactions/a", "committed", "default", l.node.id)
	check("/v1/transactions/b", "preparing", "default", l.node.id) // not on the follower: no 404
	check("/v1/transactions/a?consistency=linearizable", "committed", "linearizable", l.node.id)
	// Not caught up: stale goes to the leader too.
	check("/v1/transactions/a?consistency=stale", "committed", "stale", l.node.id)
	if f.srv.CaughtUp() {
		t.Fatal("caught up before applying the leader's index")
	}
	// Once the follower holds the leader's index, stale is its own (lagging) FSM.
	for f.fsm.AppliedIndex() < l.fsm.AppliedIndex() {
		f.apply(&fsm.SetMember{NodeID: "x", HTTPAddr: "y"})
	}
	if rec := f.do(http.MethodGet, "/readyz", nil); rec.Code != 200 || !f.srv.CaughtUp() {
		t.Fatalf("readyz after catching up: %d %s", rec.Code, rec.Body)
	}
	check("/v1/transactions/a?consistency=stale", "preparing", "stale", "follower")
	// The final local record is now served without a hop.
	f.decide(r.Txn, fsm.DecisionCommit, nil, nil)
	f.complete(r.Txn)
	check("/v1/transactions/a", "committed", "default", "follower")
	// Lists follow the same rules.
	if lp := listPage(t, f, ""); len(lp.Transactions) != 2 || lp.Read.NodeID != l.node.id {
		t.Errorf("default list on a follower: %+v", lp)
	}
}

// TestFollowerRead_NoLeaderIs503NeverA404: a follower that has not caught up and knows no
// leader answers 503 with Retry-After for a record it may not have applied, at every level.
func TestFollowerRead_NoLeaderIs503NeverA404(t *testing.T) {
	f, _ := follower(t)
	f.node.leaders = nil
	f.srv.cfg.ReadForwardWait = 50_000_000 // 50 ms
	for _, q := range []string{"", "?consistency=stale", "?consistency=linearizable"} {
		rec := f.do(http.MethodGet, "/v1/transactions/unknown"+q, nil)
		checkRec(t, rec, http.StatusServiceUnavailable, codeNoLeader)
		if rec.Header().Get("Retry-After") == "" {
			t.Errorf("%q: no Retry-After", q)
		}
	}
	// A read another node forwarded is never forwarded again.
	rec := f.do(http.MethodGet, "/v1/transactions/unknown", nil, forwardedHeader, "n9")
	checkRec(t, rec, http.StatusServiceUnavailable, codeNoLeader)
}

// TestReadyz_FollowerNeedsTheLeadersCommitIndex: Raft's local counters say applied ==
// commit, but the follower is behind the index the leader confirms: not ready, until it
// applies it.
func TestReadyz_FollowerNeedsTheLeadersCommitIndex(t *testing.T) {
	f, l := follower(t)
	for i := 0; i < 5; i++ {
		l.apply(&fsm.SetMember{NodeID: "n", HTTPAddr: "a"})
	}
	f.node.setStatus(cluster.Status{NodeID: "follower", Role: "follower", LeaderID: "L", Ready: true, CommitIndex: 0, AppliedIndex: 0})
	rec := f.do(http.MethodGet, "/readyz", nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"leaderCommitIndex":5`) {
		t.Errorf("behind: %d %s", rec.Code, rec.Body)
	}
	for i := 0; i < 5; i++ {
		f.apply(&fsm.SetMember{NodeID: "n", HTTPAddr: "a"})
	}
	if rec := f.do(http.MethodGet, "/readyz", nil); rec.Code != 200 {
		t.Errorf("caught up: %d %s", rec.Code, rec.Body)
	}
}

// TestReadyz_LeaderOnAnEarlierBuild: during a rolling upgrade the leader may run a build
// without the read-index route (it answers 404). A follower on this build then falls back
// to its own view of the commit index, as those builds did, instead of never being ready
// (seen in the rolling-upgrade test: an upgraded follower stayed unready behind an old leader).
func TestReadyz_LeaderOnAnEarlierBuild(t *testing.T) {
	old := httptest.NewServer(http.NotFoundHandler()) // no /v1/cluster/read-index
	t.Cleanup(old.Close)
	f := newEnv(t, Config{})
	f.node.leaderReady = false
	f.node.id = "follower"
	f.node.leaders = []leader{{id: "L", addr: old.URL}}
	f.node.setStatus(cluster.Status{NodeID: "follower", Role: "follower", LeaderID: "L", Ready: true, CommitIndex: 3, AppliedIndex: 3})
	f.srv = New(Config{}, progressFake{f.node, func() uint64 { return 3 }, f.fsm.AppliedIndex}, f.fsm, f.sub)
	if rec := f.do(http.MethodGet, "/readyz", nil); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("behind its own commit index 3: %d %s", rec.Code, rec.Body)
	}
	for i := 0; i < 3; i++ {
		f.apply(&fsm.SetMember{NodeID: "n", HTTPAddr: "a"})
	}
	if rec := f.do(http.MethodGet, "/readyz", nil); rec.Code != http.StatusOK {
		t.Fatalf("caught up with its own commit index behind an earlier-build leader: %d %s", rec.Code, rec.Body)
	}
}
