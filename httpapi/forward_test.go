package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// seen is one request a spy received and the answer its API server gave.
type seen struct {
	key, by string
	status  int
	header  http.Header
	body    []byte
	dropped bool // the connection was closed instead of answering
}

// spy serves an API handler behind a wrapper that records every request. While drop > 0
// it runs the request to completion (the transaction is created) and then closes the
// connection without answering: the reply is lost after the leader acted on the request.
type spy struct {
	inner http.Handler
	mu    sync.Mutex
	reqs  []seen
	drop  int
}

func (s *spy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	s.inner.ServeHTTP(rec, r)
	s.mu.Lock()
	drop := s.drop > 0
	if drop {
		s.drop--
	}
	s.reqs = append(s.reqs, seen{key: r.Header.Get(participant.IdempotencyKeyHeader), by: r.Header.Get(forwardedHeader),
		status: rec.Code, header: rec.Header().Clone(), body: rec.Body.Bytes(), dropped: drop})
	s.mu.Unlock()
	if drop {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (s *spy) seen() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

func (s *spy) setDrop(n int) {
	s.mu.Lock()
	s.drop = n
	s.mu.Unlock()
}

// node is one API server on a real loopback listener, behind a spy.
type node struct {
	*env
	spy  *spy
	http *httptest.Server
	addr string // host:port, as Node.Leader reports it
}

func newNode(t *testing.T, id string, leads bool, cfg Config) *node {
	t.Helper()
	e := newEnv(t, cfg)
	e.node.id = id
	e.node.leaderReady = leads
	e.srv = New(cfg, e.node, e.fsm, e.sub) // again: the server reads the node's id once
	n := &node{env: e, spy: &spy{inner: e.srv.Handler()}}
	n.http = httptest.NewServer(n.spy)
	t.Cleanup(n.http.Close)
	n.addr = strings.TrimPrefix(n.http.URL, "http://")
	return n
}

// postTo sends a client POST to n over HTTP.
func postTo(t *testing.T, n *node, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.http.URL+"/v1/transactions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// The client POSTs to follower A; A hands the request to leader B and the client sees B's
// answer byte for byte. B gets the client's key and the forwarded-by mark; A's Submitter is
// never called.
func TestC06_FollowerForwardsToLeader(t *testing.T) {
	b := newNode(t, "b", true, Config{})
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", b.addr})

	status, h, body := postTo(t, a, threeServices, participant.IdempotencyKeyHeader, "client-key-1")
	got := b.spy.seen()
	if len(got) != 1 {
		t.Fatalf("B got %d requests, want 1", len(got))
	}
	if status != got[0].status || !bytes.Equal(body, got[0].body) || h.Get("Content-Type") != got[0].header.Get("Content-Type") {
		t.Errorf("client saw %d %q (%s); B answered %d %q (%s)", status, body, h.Get("Content-Type"), got[0].status, got[0].body, got[0].header.Get("Content-Type"))
	}
	if o := outcome(t, body); status != 200 || o.Status != "committed" {
		t.Errorf("answer %d %+v", status, o)
	}
	if got[0].key != "client-key-1" || got[0].by != "a" {
		t.Errorf("B saw key %q, forwarded-by %q", got[0].key, got[0].by)
	}
	if n := len(a.sub.Calls()); n != 0 {
		t.Errorf("follower's Submitter called %d times", n)
	}
	if calls := b.sub.Calls(); len(calls) != 1 || calls[0].Key != "client-key-1" || calls[0].Timeout != time.Second || len(calls[0].Participants) != 3 {
		t.Errorf("leader's Submitter calls: %+v", calls)
	}
}

func TestC06_ForwardMintsKeyWhenClientGaveNone(t *testing.T) {
	b := newNode(t, "b", true, Config{})
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", "http://" + b.addr + "/"}) // an address with a scheme works too

	if status, _, body := postTo(t, a, threeServices); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	got := b.spy.seen()
	if len(got) != 1 || !strings.HasPrefix(got[0].key, "fwd-") || validKey(got[0].key) != nil || got[0].by != "a" {
		t.Errorf("B saw %+v; want one request with a minted fwd- key", got)
	}
}

// Bad input is refused by the node that took it and never travels.
func TestC06_FollowerValidatesBeforeForwarding(t *testing.T) {
	b := newNode(t, "b", true, Config{})
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", b.addr})
	status, h, body := postTo(t, a, withTimeout("0"))
	checkError(t, status, h, body, http.StatusBadRequest, codeBadRequest)
	if n := len(b.spy.seen()); n != 0 {
		t.Errorf("B got %d requests", n)
	}
}

// A forwarded request reaching a node that does not lead is answered 503 no_leader and is
// not forwarded again, whoever that node believes leads.
func TestC06_ForwardedRequestAtNonLeaderIsNotForwardedAgain(t *testing.T) {
	c := newNode(t, "c", true, Config{})
	b := newNode(t, "b", false, Config{})
	b.node.setLeaders(leader{"c", c.addr})

	status, h, body := postTo(t, b, threeServices, forwardedHeader, "a", participant.IdempotencyKeyHeader, "k")
	checkError(t, status, h, body, http.StatusServiceUnavailable, codeNoLeader)
	if h.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if n := len(c.spy.seen()); n != 0 {
		t.Errorf("the forwarded request travelled on: C got %d", n)
	}
	if len(b.sub.Calls())+len(c.sub.Calls()) != 0 {
		t.Error("a Submitter was called")
	}
}

// A's leader B steps down: B answers 503 no_leader (nothing written), A asks again who
// leads, and reaches C with the same key.
func TestC06_RetriesWhenLeaderChanged(t *testing.T) {
	c := newNode(t, "c", true, Config{})
	b := newNode(t, "b", false, Config{})
	b.node.setLeaders(leader{"c", c.addr})
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", b.addr}, leader{"c", c.addr})

	status, _, body := postTo(t, a, threeServices, participant.IdempotencyKeyHeader, "client-key-2")
	if o := outcome(t, body); status != 200 || o.Status != "committed" {
		t.Fatalf("answer %d %s", status, body)
	}
	bs, cs := b.spy.seen(), c.spy.seen()
	if len(bs) != 1 || bs[0].status != http.StatusServiceUnavailable || !strings.Contains(string(bs[0].body), string(codeNoLeader)) {
		t.Errorf("B saw %+v; want one request answered no_leader", bs)
	}
	if len(cs) != 1 || cs[0].key != "client-key-2" || cs[0].by != "a" {
		t.Errorf("C saw %+v", cs)
	}
	if len(b.sub.Calls()) != 0 || len(c.sub.Calls()) != 1 || len(c.txnIDs()) != 1 {
		t.Errorf("submits: B %d, C %d; C's transactions %v", len(b.sub.Calls()), len(c.sub.Calls()), c.txnIDs())
	}
}

// The leader acts on the forwarded request (the transaction is logged), then the
// connection drops before its reply reaches A. A resends with the SAME key, so the leader
// finds the transaction it already has: one key, one transaction, and the client gets it.
func TestC06_DroppedConnectionRetriesWithSameKey(t *testing.T) {
	for _, clientKey := range []string{"", "client-key-3"} {
		t.Run("key="+clientKey, func(t *testing.T) {
			b := newNode(t, "b", true, Config{})
			b.spy.setDrop(1)
			a := newNode(t, "a", false, Config{})
			a.node.setLeaders(leader{"b", b.addr})

			var hdr []string
			if clientKey != "" {
				hdr = []string{participant.IdempotencyKeyHeader, clientKey}
			}
			status, _, body := postTo(t, a, threeServices, hdr...)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			o := outcome(t, body)
			got := b.spy.seen()
			if len(got) < 2 || !got[0].dropped || got[len(got)-1].dropped {
				t.Fatalf("B saw %d requests (%+v); want a dropped one and an answered retry", len(got), got)
			}
			for _, s := range got {
				if s.key != got[0].key || s.key == "" {
					t.Errorf("attempt keys differ: %q vs %q", s.key, got[0].key)
				}
			}
			if clientKey != "" && got[0].key != clientKey {
				t.Errorf("key %q, want the client's %q", got[0].key, clientKey)
			}
			keys := map[string]bool{}
			for _, c := range b.sub.Calls() {
				keys[c.Key] = true
			}
			ids := b.txnIDs()
			if len(keys) != 1 || len(ids) != 1 || ids[0] != o.TransactionID {
				t.Errorf("submitter keys %v, transactions %v, answer %s; want one key, one transaction", keys, ids, o.TransactionID)
			}
		})
	}
}

// Every attempt's reply is lost until the bound: the client gets 503 indeterminate naming
// the key, not no_leader, and a retry with that key returns the one transaction.
func TestC06_AmbiguousForwardIsIndeterminate(t *testing.T) {
	cfg := Config{PhaseTwoWait: 10 * time.Millisecond, ForwardWait: 300 * time.Millisecond}
	b := newNode(t, "b", true, Config{})
	b.spy.setDrop(1 << 30)
	a := newNode(t, "a", false, cfg)
	a.node.setLeaders(leader{"b", b.addr})

	status, h, body := postTo(t, a, withTimeout("20"), participant.IdempotencyKeyHeader, "client-key-4")
	got := checkError(t, status, h, body, http.StatusServiceUnavailable, codeIndeterminate)
	if !strings.Contains(got["detail"], "client-key-4") {
		t.Errorf("detail %q does not name the key", got["detail"])
	}
	if h.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	ids := b.txnIDs()
	if len(ids) != 1 {
		t.Fatalf("B holds %v, want one transaction", ids)
	}

	b.spy.setDrop(0)
	status, _, body = postTo(t, b, withTimeout("20"), participant.IdempotencyKeyHeader, "client-key-4")
	if o := outcome(t, body); status != 200 || o.TransactionID != ids[0] {
		t.Errorf("retry with the key: %d %s, want %s", status, body, ids[0])
	}
}

// No leader is known for the whole bound (timeout + phase-two wait + ForwardWait): 503
// no_leader with Retry-After.
func TestC06_NoLeaderUntilBoundIs503(t *testing.T) {
	a := newNode(t, "a", false, Config{PhaseTwoWait: time.Millisecond, ForwardWait: 200 * time.Millisecond})
	start := time.Now()
	status, h, body := postTo(t, a, withTimeout("1"))
	checkError(t, status, h, body, http.StatusServiceUnavailable, codeNoLeader)
	if h.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("gave up after %v, before the bound", el)
	}
	if a.node.leaderCalls < 2 {
		t.Errorf("asked for the leader %d times; want retries", a.node.leaderCalls)
	}
	if len(a.sub.Calls()) != 0 {
		t.Error("Submitter called")
	}
}

// Only the leader's own unreachable address is known: the dial never succeeds, nothing can
// have been sent, so the answer is no_leader (not indeterminate).
func TestC06_UnreachableLeaderIsNoLeader(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(dead.URL, "http://")
	dead.Close()
	a := newNode(t, "a", false, Config{PhaseTwoWait: time.Millisecond, ForwardWait: 150 * time.Millisecond})
	a.node.setLeaders(leader{"b", addr})
	status, h, body := postTo(t, a, withTimeout("1"))
	if d := checkError(t, status, h, body, http.StatusServiceUnavailable, codeNoLeader)["detail"]; !strings.Contains(d, addr) {
		t.Errorf("detail %q does not name the leader", d)
	}
}

// The leader's other answers, 503 busy included, reach the client unchanged and are not
// retried.
func TestC06_LeaderBusyIsPassedThrough(t *testing.T) {
	b := newNode(t, "b", true, Config{})
	b.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) { return nil, coordinator.ErrBusy })
	a := newNode(t, "a", false, Config{})
	a.node.setLeaders(leader{"b", b.addr})
	status, h, body := postTo(t, a, threeServices)
	checkError(t, status, h, body, http.StatusServiceUnavailable, codeBusy)
	if h.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want the leader's", h.Get("Retry-After"))
	}
	if n := len(b.spy.seen()); n != 1 {
		t.Errorf("B got %d requests, want 1", n)
	}
}

// Leadership arrives at A while it waits for a leader: A serves the request itself.
func TestC06_LeadershipArrivesWhileForwarding(t *testing.T) {
	a := newNode(t, "a", false, Config{})
	a.node.readyAfter = 1 // no leader known on the first try; A leads on the second
	status, _, body := postTo(t, a, threeServices)
	if o := outcome(t, body); status != 200 || o.Status != "committed" {
		t.Fatalf("%d %s", status, body)
	}
	if calls := a.sub.Calls(); len(calls) != 1 || !strings.HasPrefix(calls[0].Key, "fwd-") {
		t.Errorf("calls %+v; want one with the minted key", calls)
	}
}

// transferringSubmitter refuses like a leader whose Raft has a leadership transfer in
// progress, for the first refuse calls, then commits; it records each call's stack depth.
type transferringSubmitter struct {
	env    *env
	mu     sync.Mutex
	refuse int
	depths []int
}

func (s *transferringSubmitter) Submit(ctx context.Context, r coordinator.Request) (*fsm.Txn, error) {
	pcs := make([]uintptr, 4096)
	depth := runtime.Callers(0, pcs)
	s.mu.Lock()
	s.depths = append(s.depths, depth)
	refuse := len(s.depths) <= s.refuse
	s.mu.Unlock()
	if refuse {
		return nil, fmt.Errorf("%w: %w", coordinator.ErrNotLeader, raft.ErrLeadershipTransferInProgress)
	}
	return s.env.commitAll(ctx, r)
}

// A leader that is handing leadership over (LeaderReady still true, every write refused)
// waits and tries again: one frame deep every time, never forwarding to itself and never
// recursing (64 clients used to grow 103 MiB of stack that way), and the client gets the
// outcome once the node takes writes again.
func TestPostDuringTransferRetriesWithoutRecursion(t *testing.T) {
	a := newNode(t, "a", true, Config{})
	sub := &transferringSubmitter{env: a.env, refuse: 4}
	a.srv = New(Config{}, a.node, a.fsm, sub)
	a.spy.inner = a.srv.Handler()
	a.node.setLeaders(leader{"a", a.addr}) // Raft names this node as leader
	status, _, body := postTo(t, a, threeServices)
	if o := outcome(t, body); status != 200 || o.Status != "committed" {
		t.Fatalf("%d %s", status, body)
	}
	if len(sub.depths) != 5 {
		t.Fatalf("%d Submit calls, want 5", len(sub.depths))
	}
	for i, d := range sub.depths {
		if d != sub.depths[0] {
			t.Errorf("Submit call %d at stack depth %d, first at %d: the retries recurse", i, d, sub.depths[0])
		}
	}
	if n := len(a.spy.seen()); n != 1 {
		t.Errorf("node a got %d requests, want only the client's (it forwarded to itself)", n)
	}
}

// A transfer that does not end within the request's bound gives 503 no_leader with
// Retry-After, after a bounded number of tries (a capped backoff, not a busy loop).
func TestPostDuringEndlessTransferIs503(t *testing.T) {
	a := newNode(t, "a", true, Config{ForwardWait: 300 * time.Millisecond})
	sub := &transferringSubmitter{env: a.env, refuse: 1 << 30}
	a.srv = New(Config{ForwardWait: 300 * time.Millisecond}, a.node, a.fsm, sub)
	a.spy.inner = a.srv.Handler()
	status, h, body := postTo(t, a, `{"services": ["http://127.0.0.1:1/prepare"], "timeout": 1}`)
	checkError(t, status, h, body, 503, codeNoLeader)
	if n := len(sub.depths); n > 20 {
		t.Errorf("%d Submit calls in about 300 ms: a busy loop", n)
	}
}

// Raft names this node as leader but it is not ready (establishing its term, or handing
// over): it never forwards to itself; it waits, then answers 503 no_leader.
func TestLeaderNotReadyNeverForwardsToItself(t *testing.T) {
	a := newNode(t, "a", false, Config{ForwardWait: 200 * time.Millisecond})
	a.srv = New(Config{ForwardWait: 200 * time.Millisecond}, a.node, a.fsm, a.sub)
	a.spy.inner = a.srv.Handler()
	a.node.setLeaders(leader{"a", a.addr})
	status, h, body := postTo(t, a, `{"services": ["http://127.0.0.1:1/prepare"], "timeout": 1}`)
	checkError(t, status, h, body, 503, codeNoLeader)
	if n := len(a.spy.seen()); n != 1 {
		t.Errorf("node a got %d requests, want only the client's", n)
	}
}

// unavailableNode is a node that says it cannot serve (removed, shut down).
type unavailableNode struct {
	*fakeNode
	err error
}

func (n *unavailableNode) Unavailable() error { return n.err }

// A removed or shut-down node answers 503 unavailable at once, with Retry-After and the
// reason; it neither submits nor waits for a leader.
func TestUnavailableNodeAnswers503AtOnce(t *testing.T) {
	e := newEnv(t, Config{})
	e.node.leaderReady = false
	n := &unavailableNode{fakeNode: e.node, err: fmt.Errorf("%w: node a is not in the cluster configuration (was it removed?)", cluster.ErrNodeUnavailable)}
	e.srv = New(Config{ForwardWait: time.Minute}, n, e.fsm, e.sub)
	start := time.Now()
	rec := e.post(threeServices)
	m := checkRec(t, rec, 503, codeUnavailable)
	if !strings.Contains(m["detail"], "removed") {
		t.Errorf("detail %q does not say why", m["detail"])
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("answered after %s, want at once", d)
	}
	if len(e.sub.Calls()) != 0 {
		t.Errorf("Submit called on an unavailable node")
	}
}

// A storage error (the leader's log write failed: disk full) is 503 unavailable with
// Retry-After: nothing was logged and a retry is safe. Never 500.
func TestStorageErrorIs503Unavailable(t *testing.T) {
	for name, err := range map[string]error{
		"storage":  fmt.Errorf("%w: write raft.db: no space left on device", cluster.ErrStorage),
		"shutdown": raft.ErrRaftShutdown,
		"enqueue":  raft.ErrEnqueueTimeout,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Config{})
			e.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) { return nil, err })
			checkRec(t, e.post(threeServices), 503, codeUnavailable)
		})
	}
}

// watchNode is a fakeNode that also reports the leader it knows (LeaderWatcher), as
// cluster.Node does, independently of Leader's scripted queue.
type watchNode struct {
	*fakeNode
	leader atomic.Value
}

func (w *watchNode) LeaderID() string { id, _ := w.leader.Load().(string); return id }

// QA F6: A's leader B holds the forwarded POST without answering (paused, or cut off from
// its followers), and C is elected meanwhile. A stops waiting for B once it knows C and
// hands the request to C with the same key, so the client gets C's answer while B still
// holds the first attempt (without the watch A waits out its whole bound: timeout, phase-two
// wait and ForwardWait, then 503).
func TestForwardMovesOnWhenLeaderReplaced(t *testing.T) {
	release := make(chan struct{})
	var heldKey atomic.Value
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		heldKey.Store(r.Header.Get(participant.IdempotencyKeyHeader))
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(b.Close)
	t.Cleanup(func() { close(release) })
	c := newNode(t, "c", true, Config{})
	a := newNode(t, "a", false, Config{})
	w := &watchNode{fakeNode: a.node}
	w.leader.Store("b")
	a.srv = New(Config{}, w, a.fsm, a.sub)
	a.spy.inner = a.srv.Handler()
	a.node.setLeaders(leader{"b", strings.TrimPrefix(b.URL, "http://")}, leader{"c", c.addr})
	go func() {
		for heldKey.Load() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		w.leader.Store("c") // the election A learns of while B holds the request
	}()

	status, _, body := postTo(t, a, threeServices, participant.IdempotencyKeyHeader, "client-key-f6")
	select {
	case <-release:
		t.Fatal("B was released: the answer did not come while it held the request")
	default:
	}
	if o := outcome(t, body); status != http.StatusOK || o.Status != "committed" {
		t.Fatalf("answer %d %s, want C's commit", status, body)
	}
	cs := c.spy.seen()
	if heldKey.Load() != "client-key-f6" || len(cs) != 1 || cs[0].key != "client-key-f6" || len(c.txnIDs()) != 1 {
		t.Fatalf("B held key %v; C saw %+v with transactions %v: want the client's key at both, one transaction", heldKey.Load(), cs, c.txnIDs())
	}
}
