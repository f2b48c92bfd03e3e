package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/server/servertest"
)

// ackNackParticipant answers ACK to every call, except Prepare on paths under /no/, which it
// refuses: "/yes/prepare" and "/yes/2/prepare" commit, "/no/prepare" rolls back.
func ackNackParticipant(t *testing.T) (yes, yes2, no string) {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.URL.Path, "/no/") && strings.HasSuffix(r.URL.Path, "/prepare") {
			_, _ = io.WriteString(w, `{"status":"NACK","reason":"refused by the test"}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/yes/prepare", ts.URL + "/yes/2/prepare", ts.URL + "/no/prepare"
}

type readView struct {
	TransactionID string `json:"transactionId"`
	Status        string `json:"status"`
	Read          struct {
		Consistency  string `json:"consistency"`
		NodeID       string `json:"nodeId"`
		Role         string `json:"role"`
		AppliedIndex uint64 `json:"appliedIndex"`
	} `json:"read"`
	Error string `json:"error"`
}

var readClient = &http.Client{Timeout: 10 * time.Second}

// getTxn reads one transaction; code 0 is a transport error (in Error).
func getTxn(base, id, query string) (int, readView) {
	resp, err := readClient.Get(base + "/v1/transactions/" + id + query)
	if err != nil {
		return 0, readView{Error: err.Error()}
	}
	defer resp.Body.Close()
	var v readView
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &v); err != nil {
		return resp.StatusCode, readView{Error: fmt.Sprintf("%q: %v", raw, err)}
	}
	return resp.StatusCode, v
}

// TestReadYourWrites_EveryNodeAgreesWithTheAnswer is issue 13's acceptance check: right
// after each of many sequential POSTs (half committed, half rolled back, sent in turn to
// every node), a default-level GET on the leader and on each follower answers the very
// status the POST answered: never an earlier one, never 404.
func TestReadYourWrites_EveryNodeAgreesWithTheAnswer(t *testing.T) {
	yes, yes2, no := ackNackParticipant(t)
	c := servertest.Start(t, servertest.Options{})
	c.WaitLeader(20 * time.Second)
	n := 500
	if testing.Short() {
		n = 100
	}
	disagree := 0
	for i := 0; i < n; i++ {
		services := []string{yes, yes2}
		want := "committed"
		if i%2 == 1 {
			services = []string{yes, no}
			want = "rolled_back"
		}
		node := c.Node(i % c.Len())
		code, out := post(t, node.URL(), services, 5000)
		if code != http.StatusOK || out.Status != want {
			t.Fatalf("POST %d on %s: %d %+v, want 200 %s", i, node.Node.ID(), code, out, want)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for j := 0; j < c.Len(); j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, v := getTxn(c.Node(j).URL(), out.TransactionID, "")
				if code != http.StatusOK || v.Status != want || v.Read.Consistency != "default" {
					mu.Lock()
					disagree++
					if disagree <= 10 {
						t.Errorf("POST %d (%s, answered %s on %s): GET on n%d = %d %s (read %+v) %s", i, out.TransactionID, want, node.Node.ID(), j+1, code, v.Status, v.Read, v.Error)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if disagree > 10 {
			t.Fatalf("stopping after %d disagreements", disagree)
		}
	}
}

// TestReadLevels_WhoServesAndWhat: stale is served by the node asked, linearizable and the
// default for a record not final there by the leader; the answer names the level, the node
// and its applied index, in the body and the headers.
func TestReadLevels_WhoServesAndWhat(t *testing.T) {
	yes, _, _ := ackNackParticipant(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(20 * time.Second)
	_, out := post(t, c.Node(leader).URL(), []string{yes}, 5000)
	f := c.Follower()
	base := c.Node(f).URL()
	leaderID := c.Node(leader).Node.ID()
	followerID := c.Node(f).Node.ID()
	c.WaitConverged(10 * time.Second) // a stale read may lag: let the follower apply the completion

	for _, tc := range []struct {
		query, level, node, role string
	}{
		{"?consistency=stale", "stale", followerID, "follower"},
		{"?consistency=linearizable", "linearizable", leaderID, "leader"},
	} {
		code, v := getTxn(base, out.TransactionID, tc.query)
		if code != http.StatusOK || v.Status != "committed" || v.Read.Consistency != tc.level || v.Read.NodeID != tc.node || v.Read.Role != tc.role || v.Read.AppliedIndex == 0 {
			t.Errorf("GET %s on follower: %d %+v", tc.query, code, v)
		}
	}
	resp, err := readClient.Get(base + "/v1/transactions/" + out.TransactionID + "?consistency=linearizable")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Txcoord-Consistency") != "linearizable" || resp.Header.Get("X-Txcoord-Served-By") != leaderID || resp.Header.Get("X-Txcoord-Applied-Index") == "" {
		t.Errorf("headers: %v", resp.Header)
	}
	// A transaction no node has: 404 from the leader, after the follower asked it.
	if code, v := getTxn(base, "no-such-id", ""); code != http.StatusNotFound || v.Error != "not_found" {
		t.Errorf("unknown id: %d %+v", code, v)
	}
	if code, v := getTxn(base, out.TransactionID, "?consistency=strong"); code != http.StatusBadRequest || v.Error != "bad_request" {
		t.Errorf("unknown level: %d %+v", code, v)
	}
}

// TestRestartEveryNode_NoAcknowledgedTransactionIs404: after every node is killed and
// restarted, no node ever answers 404 (at any level) for a transaction whose creation was
// acknowledged; it answers the transaction or 503 with Retry-After until it has caught up.
// A node whose /readyz says 200 holds every acknowledged transaction.
func TestRestartEveryNode_NoAcknowledgedTransactionIs404(t *testing.T) {
	yes, _, no := ackNackParticipant(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(20 * time.Second)
	var ids []string
	for i := 0; i < 30; i++ {
		services := []string{yes}
		if i%2 == 1 {
			services = []string{yes, no}
		}
		_, out := post(t, c.Node(leader).URL(), services, 5000)
		ids = append(ids, out.TransactionID)
	}
	for round := 0; round < 2; round++ {
		for i := 0; i < c.Len(); i++ {
			c.Kill(i)
		}
		for i := 0; i < c.Len(); i++ {
			c.StartNode(i)
		}
		deadline := time.Now().Add(30 * time.Second)
		readySeen := map[int]bool{}
		lastReady := map[int]string{}
		for polls := 0; ; polls++ {
			for i := 0; i < c.Len(); i++ {
				base := c.Node(i).URL()
				for k, id := range ids {
					if k%5 != polls%5 {
						continue // a fifth of the ids per poll keeps each round short
					}
					for _, q := range []string{"", "?consistency=stale"} {
						code, v := getTxn(base, id, q)
						switch code {
						case http.StatusOK, http.StatusServiceUnavailable:
						case 0:
							// The listener may not accept yet.
						default:
							t.Fatalf("round %d: n%d answered %d %+v for acknowledged %s (%q)", round, i+1, code, v, id, q)
						}
					}
				}
				resp, err := readClient.Get(base + "/readyz")
				if err == nil {
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					lastReady[i] = string(raw)
					if resp.StatusCode == http.StatusOK {
						fsm := c.Node(i).Node.FSM
						for _, id := range ids {
							if _, ok := fsm.Get(id); !ok {
								t.Fatalf("round %d: n%d said ready without %s (applied %d)", round, i+1, id, fsm.AppliedIndex())
							}
						}
						readySeen[i] = true
					}
				}
			}
			if len(readySeen) == c.Len() && polls >= 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: nodes ready: %v; last /readyz: %v", round, readySeen, lastReady)
			}
		}
	}
}
