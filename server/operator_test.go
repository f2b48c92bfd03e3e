package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// flakyCommit is a participant that ACKs prepare and rollback and answers commit with 500
// until healed.
type flakyCommit struct{ healed atomic.Bool }

func (f *flakyCommit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/commit") && !f.healed.Load() {
		http.Error(w, "ledger offline", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"ACK"}`)
}

func operatorPost(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestOperatorRetryAndResolve drives a transaction to failed (a participant refuses
// Commit past the attempt limit), then checks that it is listed as stuck, that retry
// re-drives phase two once the participant is healed, and that resolve settles another
// one by hand with its note kept in the log on every node.
func TestOperatorRetryAndResolve(t *testing.T) {
	flaky := &flakyCommit{}
	ps := httptest.NewServer(flaky)
	defer ps.Close()
	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		cfg.Engine.PhaseTwoMaxAttempts = 3
		cfg.Engine.RetryInitial = 5 * time.Millisecond
		cfg.Engine.RetryMax = 10 * time.Millisecond
	}})
	leader := c.WaitLeader(10 * time.Second)
	follower := c.Follower()
	fURL := c.Node(follower).URL()

	run := func() string {
		code, out := post(t, c.Node(leader).URL(), []string{ps.URL + "/a/prepare"}, 1000)
		if code != http.StatusOK || out.Status != "failed" {
			t.Fatalf("got HTTP %d %+v, want 200 failed", code, out)
		}
		return out.TransactionID
	}
	first, second := run(), run()

	resp, err := http.Get(fURL + "/v1/stuck?olderThan=0")
	if err != nil {
		t.Fatal(err)
	}
	var stuck struct {
		Transactions []struct {
			TransactionID string   `json:"transactionId"`
			Status        string   `json:"status"`
			Errors        []string `json:"errors"`
		} `json:"transactions"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&stuck)
	resp.Body.Close()
	c.WaitConverged(5 * time.Second)
	if len(stuck.Transactions) != 2 || !strings.Contains(strings.Join(stuck.Transactions[0].Errors, ";"), "HTTP 500") {
		t.Fatalf("stuck list %+v, want both failed transactions with their HTTP 500", stuck)
	}

	// Resolve needs a note; retry of a finished transaction is a conflict.
	if code, out := operatorPost(t, fURL+"/v1/transactions/"+second+"/resolve", `{}`); code != http.StatusBadRequest {
		t.Fatalf("resolve without note: HTTP %d %v, want 400", code, out)
	}
	flaky.healed.Store(true)
	if code, out := operatorPost(t, fURL+"/v1/transactions/"+first+"/retry", `{"note":"ledger back online"}`); code != http.StatusOK {
		t.Fatalf("retry via follower: HTTP %d %v", code, out)
	}
	final, err := c.Node(leader).Node.FSM.WaitFor(context.Background(), first, func(t *fsm.Txn) bool { return t.Status == fsm.StatusCommitted })
	if err != nil || final.Note != "ledger back online" {
		t.Fatalf("after retry: %+v (%v)", final, err)
	}
	if code, _ := operatorPost(t, fURL+"/v1/transactions/"+first+"/retry", `{}`); code != http.StatusConflict {
		t.Fatalf("retry of a committed transaction: HTTP %d, want 409", code)
	}
	if code, out := operatorPost(t, fURL+"/v1/transactions/"+second+"/resolve", `{"note":"committed by hand in the ledger"}`); code != http.StatusOK || out["status"] != "committed" {
		t.Fatalf("resolve: HTTP %d %v", code, out)
	}
	if code, _ := operatorPost(t, fURL+"/v1/transactions/nope/resolve", `{"note":"x"}`); code != http.StatusNotFound {
		t.Fatalf("resolve of an unknown id: HTTP %d, want 404", code)
	}
	c.WaitConverged(5 * time.Second)
	for i := 0; i < c.Len(); i++ {
		txn, _ := c.Node(i).Node.FSM.Get(second)
		if txn.Status != fsm.StatusCommitted || txn.Note != "committed by hand in the ledger" {
			t.Fatalf("node %d holds %+v after resolve", i, txn)
		}
	}
}
