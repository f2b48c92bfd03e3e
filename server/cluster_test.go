package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// participants starts the three demo services over loopback.
func participants(t *testing.T) ([]*demo.Service, []string) {
	t.Helper()
	return participantsWith(t, nil)
}

// participantsWith starts the demo services; gate, when set, is each service's Config.Gate
// (kind is the service's kind).
func participantsWith(t *testing.T, gate func(kind string, ctx context.Context, p participant.Phase, txID string)) ([]*demo.Service, []string) {
	t.Helper()
	dir := t.TempDir()
	var svcs []*demo.Service
	var urls []string
	for _, k := range []string{demo.KindFlight, demo.KindHotel, demo.KindPayment} {
		cfg := demo.Config{Kind: k, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Exit: func(int) {}}
		if gate != nil {
			cfg.Gate = func(ctx context.Context, p participant.Phase, txID string) { gate(k, ctx, p, txID) }
		}
		svc, err := demo.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(svc.Handler())
		t.Cleanup(func() { ts.Close(); _ = svc.Close() })
		svcs = append(svcs, svc)
		urls = append(urls, ts.URL+"/prepare")
	}
	return svcs, urls
}

type outcome struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
}

func post(t *testing.T, base string, services []string, timeoutMs int) (int, outcome) {
	t.Helper()
	code, out := postNoFatal(base, services, timeoutMs)
	if code == 0 {
		t.Fatalf("POST %s: %v", base, out.Errors)
	}
	return code, out
}

// postNoFatal sends a transaction; a transport or decoding failure comes back as code 0
// with the error in Errors.
func postNoFatal(base string, services []string, timeoutMs int) (int, outcome) {
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
	resp, err := http.Post(base+"/v1/transactions", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, outcome{Errors: []string{err.Error()}}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out outcome
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, outcome{Errors: []string{fmt.Sprintf("answer %q: %v", raw, err)}}
	}
	return resp.StatusCode, out
}

// ledgerOf returns what a participant's ledger says of id ("" when it has no record).
func ledgerOf(t *testing.T, svc *demo.Service, id string) participant.State {
	t.Helper()
	st, err := svc.State()
	if err != nil {
		t.Fatal(err)
	}
	return st.Ledger[id]
}

func prepareCount(svcs []*demo.Service) int {
	n := 0
	for _, s := range svcs {
		n += len(s.Requests())
	}
	return n
}

func TestClusterCommitsThroughLeaderAndFollower(t *testing.T) {
	svcs, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(10 * time.Second)
	follower := c.Follower()

	for name, i := range map[string]int{"leader": leader, "follower": follower} {
		code, out := post(t, c.Node(i).URL(), urls, 2000)
		if code != http.StatusOK || out.Status != "committed" || len(out.Errors) != 0 {
			t.Fatalf("via %s: HTTP %d %+v, want 200 committed", name, code, out)
		}
		c.WaitConverged(5 * time.Second)
		for n := 0; n < c.Len(); n++ {
			txn, ok := c.Node(n).Node.FSM.Get(out.TransactionID)
			if !ok || txn.Status != fsm.StatusCommitted {
				t.Fatalf("via %s: node %d holds %+v, want committed", name, n, txn)
			}
		}
		for _, svc := range svcs {
			if got := ledgerOf(t, svc, out.TransactionID); got != participant.StateCommitted {
				t.Fatalf("via %s: %s ledger says %q, want committed", name, svc.Kind(), got)
			}
		}
	}
}

func TestClusterCommitsWithOneFollowerDown(t *testing.T) {
	svcs, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	c.WaitLeader(10 * time.Second)
	down := c.Follower()
	c.Stop(down)
	leader := c.WaitLeader(10 * time.Second)

	code, out := post(t, c.Node(leader).URL(), urls, 2000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("with node %d down: HTTP %d %+v, want 200 committed", down, code, out)
	}
	c.StartNode(down)
	c.WaitLeader(10 * time.Second)
	c.WaitConverged(10 * time.Second)
	if txn, ok := c.Node(down).Node.FSM.Get(out.TransactionID); !ok || txn.Status != fsm.StatusCommitted {
		t.Fatalf("restarted node holds %+v, want the committed transaction", txn)
	}
	for _, svc := range svcs {
		if got := ledgerOf(t, svc, out.TransactionID); got != participant.StateCommitted {
			t.Fatalf("%s ledger says %q, want committed", svc.Kind(), got)
		}
	}
}

// TestC07_ReplayIsSilent runs 100 transactions, restarts a follower and then the whole
// cluster, and checks that rebuilding state from snapshot and log sends participants
// nothing, that every node ends with the same state (O4) and that nothing is re-prepared.
//
// What it asserts is the property, not a count that depends on timing: before the restarts
// every transaction committed, and each participant saw at least a Prepare and a Commit for
// it and no Rollback (leader changes on a loaded machine legitimately add re-prepares and
// repeated commits, so the total is not fixed); after the restarts no participant saw a
// single new call for any transaction: every call is accounted for by transaction id and
// phase, before and after, and the two tallies are equal.
func TestC07_ReplayIsSilent(t *testing.T) {
	svcs, urls := participants(t)
	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		cfg.Cluster.SnapshotThreshold = 64 // so that restarts restore a snapshot and replay a tail
		cfg.Cluster.TrailingLogs = 16
		cfg.Cluster.SnapshotInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader(60 * time.Second)
	base := c.Node(leader).URL()

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				if err := postCommitted(base, urls, fmt.Sprintf("c07-%d-%d", w, k)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.WaitConverged(60 * time.Second)
	before := callsByTxn(svcs)
	if len(before) != 100 {
		t.Fatalf("participants saw calls for %d transactions, want 100", len(before))
	}
	for id, calls := range before {
		for _, svc := range svcs {
			k := svc.Kind()
			if calls[k+"/"+string(participant.PhasePrepare)] == 0 || calls[k+"/"+string(participant.PhaseCommit)] == 0 || calls[k+"/"+string(participant.PhaseRollback)] != 0 {
				t.Fatalf("transaction %s: %s saw %v, want a Prepare and a Commit and no Rollback", id, k, calls)
			}
		}
	}

	f := c.Follower()
	c.Stop(f)
	c.StartNode(f)
	c.WaitLeader(60 * time.Second)
	c.WaitConverged(60 * time.Second)
	if diff := newCalls(before, callsByTxn(svcs)); diff != "" {
		t.Fatalf("restarting a follower sent participant calls: %s", diff)
	}

	c.Close()
	for i := 0; i < c.Len(); i++ {
		c.StartNode(i)
	}
	c.WaitLeader(60 * time.Second)
	c.WaitConverged(60 * time.Second)
	if diff := newCalls(before, callsByTxn(svcs)); diff != "" {
		t.Fatalf("restarting the cluster sent participant calls: %s", diff)
	}
	counts := c.Node(0).Node.FSM.Counts()
	if counts[fsm.StatusCommitted] != 100 || len(counts) != 1 {
		t.Fatalf("after restarts the FSM holds %v, want 100 committed", counts)
	}
}

// postCommitted sends one transaction with an Idempotency-Key and wants it committed
// (postDefinite's retries).
func postCommitted(base string, services []string, key string) error {
	out, err := postDefinite(base, services, 5000, key)
	if err != nil {
		return err
	}
	if out.Status != "committed" {
		return fmt.Errorf("transaction %s %s, want committed", key, out.Status)
	}
	return nil
}

// postDefinite sends one transaction with an Idempotency-Key until it gets a definite
// answer (HTTP 200) and returns it. A 503 (no leader for a moment, or an outcome not known
// yet: a loaded machine) or a 202 (still running) is retried with the same key after its
// Retry-After, a bounded number of times; the key makes the retries one transaction, as the
// API promises a client that retries.
func postDefinite(base string, services []string, timeoutMs int, key string) (outcome, error) {
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
	var last string
	for attempt := 0; attempt < 20; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/transactions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(participant.IdempotencyKeyHeader, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return outcome{}, err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out outcome
		_ = json.Unmarshal(raw, &out)
		switch resp.StatusCode {
		case http.StatusOK:
			return out, nil
		case http.StatusServiceUnavailable, http.StatusAccepted:
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, raw)
			<-time.After(time.Second) // Retry-After: 1, as the API asks
		default:
			return outcome{}, fmt.Errorf("HTTP %d %s", resp.StatusCode, raw)
		}
	}
	return outcome{}, fmt.Errorf("transaction %s without a definite answer after 20 attempts; last %s", key, last)
}

// callsByTxn tallies every participant call: transaction id -> "kind/phase" -> count.
func callsByTxn(svcs []*demo.Service) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, svc := range svcs {
		for _, r := range svc.Requests() {
			if out[r.TransactionID] == nil {
				out[r.TransactionID] = map[string]int{}
			}
			out[r.TransactionID][svc.Kind()+"/"+string(r.Phase)]++
		}
	}
	return out
}

// newCalls describes the calls in after that are not in before ("" when there are none).
func newCalls(before, after map[string]map[string]int) string {
	var diffs []string
	for id, calls := range after {
		for k, n := range calls {
			if n != before[id][k] {
				diffs = append(diffs, fmt.Sprintf("%s %s: %d -> %d", id, k, before[id][k], n))
			}
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}
