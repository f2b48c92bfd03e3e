package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

func urls(c *servertest.Cluster, first int) []string {
	out := []string{c.Node(first).URL()}
	for i := 0; i < c.Len(); i++ {
		if i != first && c.Node(i) != nil {
			out = append(out, c.Node(i).URL())
		}
	}
	return out
}

// Submit, Get, List, Stuck, Retry, Resolve and Cluster against a real 3-node cluster, with
// a client token and the cluster token configured.
func TestClientAgainstCluster(t *testing.T) {
	const clientTok, clusterTok = "client-token-0123456789abcdef", "cluster-token-0123456789abcdef"
	cl := servertest.Start(t, servertest.Options{Tune: func(_ int, c *server.Config) {
		apiTok, _ := httpapi.NewTokenSet(clientTok)
		clTok, _ := httpapi.NewTokenSet(clusterTok)
		c.API.Auth = &httpapi.Auth{API: apiTok, Cluster: clTok}
	}})
	leader := cl.WaitLeader(30 * time.Second)
	a, b := participanttest.New(t), participanttest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	anon, _ := client.New(urls(cl, (leader+1)%3), client.Options{})
	if _, err := anon.Get(ctx, "x", client.ReadOptions{}); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Get without a token: %v, want ErrUnauthorized", err)
	}
	c, err := client.New(urls(cl, (leader+1)%3), client.Options{Token: clientTok})
	if err != nil {
		t.Fatal(err)
	}
	txn := client.Transaction{Services: client.Services(a.Endpoints().Prepare, b.Endpoints().Prepare), Timeout: 2 * time.Second, IdempotencyKey: "k-commit"}
	out, err := c.Submit(ctx, txn)
	if err != nil || out.Status != api.StatusCommitted {
		t.Fatalf("Submit: %+v, %v", out, err)
	}
	again, err := c.Submit(ctx, txn)
	if err != nil || again.TransactionID != out.TransactionID {
		t.Fatalf("Submit with the same key: %+v, %v; want transaction %s", again, err, out.TransactionID)
	}
	if _, err := c.Submit(ctx, client.Transaction{Services: client.Services(a.Endpoints().Prepare), IdempotencyKey: "k-commit"}); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("Submit of other services with a used key: %v, want ErrConflict", err)
	}
	b.Set(participant.PhasePrepare, participanttest.NACK("no rooms"))
	rb, err := c.Submit(ctx, client.Transaction{Services: client.Services(a.Endpoints().Prepare, b.Endpoints().Prepare), Timeout: 2 * time.Second})
	if err != nil || rb.Status != api.StatusRolledBack || len(rb.Errors) != 1 {
		t.Fatalf("Submit with a NACK: %+v, %v", rb, err)
	}
	if _, err := c.Submit(ctx, client.Transaction{Services: client.Services("http://127.0.0.1:1/nope")}); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("Submit with a bad URL: %v, want ErrBadRequest", err)
	}

	// An answer comes once every participant acknowledged; the final status follows.
	for _, id := range []string{out.TransactionID, rb.TransactionID} {
		if err := cl.Eventually(30*time.Second, func() error {
			v, err := c.Get(ctx, id, client.ReadOptions{})
			if err == nil && !api.Final(v.Status) {
				err = errors.New(v.Status)
			}
			return err
		}); err != nil {
			t.Fatalf("%s not final: %v", id, err)
		}
	}
	v, err := c.Get(ctx, out.TransactionID, client.ReadOptions{Consistency: api.ConsistencyLinearizable})
	if err != nil || v.Status != api.StatusCommitted || len(v.Participants) != 2 || v.IdempotencyKey != "k-commit" || v.Read == nil {
		t.Fatalf("Get: %+v, %v", v, err)
	}
	var ae *api.Error
	if _, err := c.Get(ctx, "no-such-id", client.ReadOptions{}); !errors.Is(err, client.ErrNotFound) || !errors.As(err, &ae) || ae.HTTPStatus != 404 {
		t.Fatalf("Get unknown: %v, want ErrNotFound with HTTP 404", err)
	}

	// List, one record per page: every transaction once, newest first.
	var seen []string
	for tv, err := range c.List(ctx, client.ListOptions{PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, tv.TransactionID)
	}
	if len(seen) != 2 || seen[0] != rb.TransactionID || seen[1] != out.TransactionID {
		t.Fatalf("List: %v, want [%s %s]", seen, rb.TransactionID, out.TransactionID)
	}
	n := 0
	for tv, err := range c.List(ctx, client.ListOptions{Key: "k-commit"}) {
		if err != nil || tv.TransactionID != out.TransactionID {
			t.Fatalf("List by key: %+v, %v", tv, err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("List by key: %d records", n)
	}

	st, err := c.Cluster(ctx)
	if err != nil || len(st.Members) != 3 || st.LeaderID == "" || st.Version == "" {
		t.Fatalf("Cluster: %+v, %v", st, err)
	}

	// Operator actions need the cluster token; retry of a committed transaction is a 409.
	if _, err := c.Retry(ctx, out.TransactionID, "why"); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Retry with a client token: %v, want ErrUnauthorized", err)
	}
	op, _ := client.New(urls(cl, leader), client.Options{Token: clusterTok})
	if _, err := op.Retry(ctx, out.TransactionID, "why"); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("Retry of a committed transaction: %v, want ErrConflict", err)
	}
	if _, err := op.Resolve(ctx, "no-such-id", "settled by hand"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Resolve unknown: %v, want ErrNotFound", err)
	}
	stuck, err := op.Stuck(ctx, time.Millisecond)
	if err != nil || len(stuck) != 0 {
		t.Fatalf("Stuck: %v, %v", stuck, err)
	}
}

// The node Submit waits on is the leader, and it is killed while phase two is held: Submit
// moves to another node with the same key and returns the transaction's outcome, and the
// cluster holds exactly one transaction (participants saw one Prepare each, for one id).
func TestSubmitSurvivesLeaderKill(t *testing.T) {
	cl := servertest.Start(t, servertest.Options{})
	leader := cl.WaitLeader(30 * time.Second)
	a, b := participanttest.New(t), participanttest.New(t)
	b.Set(participant.PhaseCommit, participanttest.Hang())
	c, err := client.New(urls(cl, leader), client.Options{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type res struct {
		out *api.Outcome
		err error
	}
	done := make(chan res, 1)
	go func() {
		out, err := c.Submit(ctx, client.Transaction{Services: client.Services(a.Endpoints().Prepare, b.Endpoints().Prepare), Timeout: 3 * time.Second})
		done <- res{out, err}
	}()
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if err := b.Wait(wctx, func() bool { return b.Count(participant.PhaseCommit) >= 1 }); err != nil {
		t.Fatalf("no commit reached the participant: %v", err)
	}
	b.Set(participant.PhaseCommit, participanttest.ACK())
	cl.Kill(leader)
	b.Release(participant.PhaseCommit)

	var r res
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("Submit did not return")
	}
	if r.err != nil || r.out.Status != api.StatusCommitted {
		t.Fatalf("Submit across the leader kill: %+v, %v", r.out, r.err)
	}
	newLeader := cl.WaitLeader(30 * time.Second)
	c2, _ := client.New([]string{cl.Node(newLeader).URL()}, client.Options{})
	var ids []string
	for tv, err := range c2.List(ctx, client.ListOptions{Consistency: api.ConsistencyLinearizable}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tv.TransactionID)
	}
	if len(ids) != 1 || ids[0] != r.out.TransactionID {
		t.Fatalf("transactions in the cluster: %v, want only %s", ids, r.out.TransactionID)
	}
	for _, fp := range []*participanttest.FP{a, b} {
		prepared := map[string]bool{}
		for _, call := range fp.Log() {
			if call.Phase == participant.PhasePrepare {
				prepared[call.TxnID] = true
			}
		}
		if len(prepared) != 1 || !prepared[r.out.TransactionID] {
			t.Errorf("participant saw Prepares for %v, want only %s", prepared, r.out.TransactionID)
		}
	}
}

// Retry-After and the 503 codes: a node that answers busy twice, then the outcome. The
// client waits (capped by MaxBackoff) and sends the same key each time.
func TestSubmitRetriesBusyWithSameKey(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"busy","detail":"too many transactions in flight"}`))
			return
		}
		_, _ = w.Write([]byte(`{"transactionId":"t1","status":"committed","errors":[]}`))
	}))
	defer srv.Close()
	// The first node refuses connections: the client moves on to the second.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	c, _ := client.New([]string{deadURL, srv.URL}, client.Options{InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Submit(ctx, client.Transaction{Services: client.Services("http://p/prepare")})
	if err != nil || out.TransactionID != "t1" {
		t.Fatalf("Submit: %+v, %v", out, err)
	}
	mu.Lock()
	got := keys
	mu.Unlock()
	var first string
	n := 0
	for _, k := range got {
		if first == "" {
			first = k
		}
		if k == "" || k != first {
			t.Errorf("attempt %d sent key %q, want %q", n, k, first)
		}
		n++
	}
	if n != 3 {
		t.Errorf("%d attempts reached the node, want 3", n)
	}

	// When the context ends first, the error says which key to resume with. (One node only:
	// with the dead one too, the last error could be either node's, whatever the timing.)
	calls.Store(-1000)
	c1, _ := client.New([]string{srv.URL}, client.Options{InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err = c1.Submit(short, client.Transaction{Services: client.Services("http://p/prepare"), IdempotencyKey: "resume-me"})
	var inc *client.IncompleteError
	if !errors.As(err, &inc) || inc.IdempotencyKey != "resume-me" || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrBusy) {
		t.Fatalf("Submit past its context: %v, want an IncompleteError with the key, the deadline and busy", err)
	}
}

// TestSubmitSendsMode: Transaction.Mode travels as "mode" in the body; empty, it is left
// out (the server's default applies).
func TestSubmitSendsMode(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		bodies = append(bodies, m)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"transactionId":"t1","status":"committed","errors":[]}`))
	}))
	defer srv.Close()
	c, _ := client.New([]string{srv.URL}, client.Options{})
	for _, mode := range []string{api.ModeFast, ""} {
		if _, err := c.Submit(context.Background(), client.Transaction{Services: client.Services("http://p/prepare"), Mode: mode}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0]["mode"] != "fast" {
		t.Fatalf("bodies %v", bodies)
	}
	if _, ok := bodies[1]["mode"]; ok {
		t.Fatalf("empty mode sent: %v", bodies[1])
	}
}
