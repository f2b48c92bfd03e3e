package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

func voters(t *testing.T, s *server.Server) []string {
	t.Helper()
	f := s.Node.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			ids = append(ids, string(srv.ID))
		}
	}
	return ids
}

func membershipPost(t *testing.T, base, action, body string) (int, cluster.Status) {
	t.Helper()
	resp, err := http.Post(base+"/v1/cluster/"+action, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st cluster.Status
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return resp.StatusCode, st
}

// TestMembershipJoinTransferRemove adds a fourth node through a follower's API, hands it
// leadership, removes another node twice (idempotent), and checks every step in the Raft
// configuration and in transactions that still commit.
func TestMembershipJoinTransferRemove(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	c.WaitLeader(10 * time.Second)
	fURL := c.Node(c.Follower()).URL()

	n4, raftAddr := servertest.StartJoiner(t, "n4")

	// Joins that could never name a working node, or would count one process twice or a
	// dead address in the quorum, are refused and change nothing.
	n1Raft := ""
	for _, m := range c.Node(0).Node.Status().Members {
		if m.ID == "n1" {
			n1Raft = m.RaftAddr
		}
	}
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"id":"n9","raftAddr":"not an address"}`, http.StatusBadRequest},
		{`{"id":"n9","raftAddr":"127.0.0.1:0"}`, http.StatusBadRequest},
		{`{"id":"n9","raftAddr":"0.0.0.0:7009"}`, http.StatusBadRequest},
		{`{"id":"../../x y","raftAddr":"127.0.0.1:7009"}`, http.StatusBadRequest},
		{`{"id":"n9","raftAddr":"127.0.0.1:7009","httpAddr":"nope"}`, http.StatusBadRequest},
		{`{"id":"n1","raftAddr":"127.0.0.1:7999"}`, http.StatusConflict},
		{fmt.Sprintf(`{"id":"n9","raftAddr":%q}`, n1Raft), http.StatusConflict},
	} {
		if code, _ := membershipPost(t, fURL, "join", tc.body); code != tc.code {
			t.Errorf("join %s: HTTP %d, want %d", tc.body, code, tc.code)
		}
	}
	if got := voters(t, c.Node(0)); len(got) != 3 {
		t.Fatalf("refused joins changed the voters: %v", got)
	}

	body := fmt.Sprintf(`{"id":"n4","raftAddr":%q,"httpAddr":%q}`, raftAddr, n4.HTTPAddr())
	for i := 0; i < 2; i++ { // the second join is a no-op
		if code, st := membershipPost(t, fURL, "join", body); code != http.StatusOK || len(st.Members) != 4 {
			t.Fatalf("join #%d: HTTP %d, %d members", i+1, code, len(st.Members))
		}
	}
	// n4 joined as a non-voter; autopilot promotes it once it is caught up and stable.
	if err := c.Eventually(30*time.Second, func() error {
		if !n4.Node.Ready() {
			return fmt.Errorf("n4 not ready")
		}
		if got := voters(t, n4); len(got) != 4 {
			return fmt.Errorf("voters %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code, _ := membershipPost(t, fURL, "transfer-leadership", `{"to":"n4"}`); code != http.StatusOK {
		t.Fatalf("transfer-leadership: HTTP %d", code)
	}
	if err := c.Eventually(10*time.Second, func() error {
		if !n4.Node.LeaderReady() {
			return fmt.Errorf("n4 does not lead yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code, out := post(t, c.Node(0).URL(), urls, 2000); code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("transaction with n4 leading: HTTP %d %+v", code, out)
	}
	if code, _ := membershipPost(t, fURL, "transfer-leadership", `{"to":"nobody"}`); code != http.StatusNotFound {
		t.Fatalf("transfer to an unknown id: HTTP %d, want 404", code)
	}
	for i := 0; i < 2; i++ {
		if code, st := membershipPost(t, n4.URL(), "remove", `{"id":"n2"}`); code != http.StatusOK || len(st.Members) != 3 {
			t.Fatalf("remove #%d: HTTP %d, %d members", i+1, code, len(st.Members))
		}
	}
	if got := voters(t, n4); len(got) != 3 || strings.Contains(strings.Join(got, ","), "n2") {
		t.Fatalf("voters after removing n2: %v", got)
	}
	if code, _ := membershipPost(t, n4.URL(), "remove", `{}`); code != http.StatusBadRequest {
		t.Fatalf("remove without id: HTTP %d, want 400", code)
	}
}

// TestGracefulShutdownOfLeaderLosesNoClient stops the leader the way SIGTERM does while
// clients keep sending through the other nodes: leadership is handed over first, so every
// client gets a definite answer and every transaction commits.
func TestGracefulShutdownOfLeaderLosesNoClient(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(10 * time.Second)
	var entries []string
	for i := 0; i < c.Len(); i++ {
		if i != leader {
			entries = append(entries, c.Node(i).URL())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	var done int
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				code, out := postNoFatal(entries[w%len(entries)], urls, 5000)
				mu.Lock()
				done++
				if code != http.StatusOK || out.Status != "committed" {
					bad = append(bad, fmt.Sprintf("HTTP %d %+v", code, out))
				}
				mu.Unlock()
			}
		}()
	}
	// Let some transactions through, stop the leader, let some more through.
	waitDone := func(n int) {
		_ = c.Eventually(20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if done < n {
				return fmt.Errorf("%d done", done)
			}
			return nil
		})
	}
	waitDone(20)
	c.Stop(leader)
	mu.Lock()
	after := done + 20
	mu.Unlock()
	waitDone(after)
	cancel()
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d clients got no commit across a graceful leader shutdown: %v", len(bad), done, bad[:min(len(bad), 5)])
	}
}
