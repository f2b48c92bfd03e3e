package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/api"
)

// Every cluster command against a real cluster with tokens: --token and the environment,
// --output table|json, and the documented exit statuses.
func TestClusterCommands(t *testing.T) {
	cl, leader := tokenCluster(t)
	follower := (leader + 1) % 3
	node := cl.Node(follower).URL()

	if _, stderr, code := run(t, "cluster", "status", "--node", node); code != exitError || !strings.Contains(stderr, "unauthorized") {
		t.Fatalf("status without a token: exit %d, %s", code, stderr)
	}
	stdout, stderr, code := run(t, "cluster", "status", "--node", node, "--token", clientTok, "-o", "json")
	var st struct {
		Cluster api.ClusterStatus    `json:"cluster"`
		Nodes   []*api.ClusterStatus `json:"nodes"`
		Errors  map[string]string    `json:"errors"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &st) != nil || len(st.Nodes) != 3 || len(st.Errors) != 0 {
		t.Fatalf("status -o json: exit %d, %s %s", code, stdout, stderr)
	}
	for i, v := range st.Nodes {
		if v == nil || v.NodeID != st.Cluster.Members[i].ID {
			t.Fatalf("status -o json: node %d is %+v, want member %s", i, v, st.Cluster.Members[i].ID)
		}
	}
	t.Setenv(envClusterToken, clusterTok) // the environment works as well as --token
	if stdout, stderr, code := run(t, "cluster", "status", "--node", "http://127.0.0.1:1,"+node); code != exitOK || !strings.Contains(stdout, "leader n") || strings.Count(stdout, "voter") != 3 {
		t.Fatalf("status table (first node down): exit %d\n%s%s", code, stdout, stderr)
	}

	// Bad flags and arguments: 64, before anything is sent.
	for _, args := range [][]string{
		{"cluster", "join", "--node", node, "--id", "n4"},
		{"cluster", "remove", "--node", node, "n4", "n5"},
		{"cluster", "status", "--node", node, "-o", "yaml"},
		{"cluster", "transfer-leadership", "--node", node, "--bogus"},
	} {
		if _, stderr, code := run(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
	// A client token is not enough for a change when the cluster has a cluster token.
	if _, stderr, code := run(t, "cluster", "remove", "n9", "--node", node, "--token", clientTok); code != exitError || !strings.Contains(stderr, "unauthorized") {
		t.Errorf("remove with a client token: exit %d, %s", code, stderr)
	}
	// A 400 from the node is 64; no such voter is 4.
	if _, stderr, code := run(t, "cluster", "join", "--node", node, "--id", "n4", "--raft-addr", "not an address"); code != exitUsage {
		t.Errorf("join with a bad address: exit %d, %s", code, stderr)
	}
	if _, stderr, code := run(t, "cluster", "transfer-leadership", "--node", node, "--to", "n9"); code != exitNotFound {
		t.Errorf("transfer-leadership --to n9: exit %d, want %d (%s)", code, exitNotFound, stderr)
	}
	if stdout, stderr, code := run(t, "cluster", "remove", "n9", "--node", node); code != exitOK || !strings.Contains(stdout, "remove done") {
		t.Errorf("remove of an unknown id (idempotent): exit %d, %s%s", code, stdout, stderr)
	}

	// Hand leadership to the follower asked, through it.
	to := fmt.Sprintf("n%d", follower+1)
	stdout, stderr, code = run(t, "cluster", "transfer-leadership", "--node", node, "--to", to, "-o", "json")
	var after api.ClusterStatus
	if code != exitOK || json.Unmarshal([]byte(stdout), &after) != nil {
		t.Fatalf("transfer-leadership: exit %d, %s %s", code, stdout, stderr)
	}
	if err := cl.Eventually(30*time.Second, func() error {
		if l := cl.Leader(); l != follower {
			return fmt.Errorf("leader is node %d, want %d", l, follower)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// QA F21: with the leader wedged (it accepts connections and never answers, as a paused
// process does), cluster status through a healthy follower still shows every healthy
// member's own view, and only the wedged one unreachable.
func TestClusterStatusWithAWedgedLeader(t *testing.T) {
	wedged, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wedged.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := wedged.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	var healthy [2]*httptest.Server
	var addrs [2]string
	members := func() []api.Member {
		return []api.Member{
			{ID: "n1", RaftAddr: "127.0.0.1:1", HTTPAddr: addrs[0], Suffrage: "voter"},
			{ID: "n2", RaftAddr: "127.0.0.1:2", HTTPAddr: wedged.Addr().String(), Suffrage: "voter", Leader: true},
			{ID: "n3", RaftAddr: "127.0.0.1:3", HTTPAddr: addrs[1], Suffrage: "voter"},
		}
	}
	for i, id := range []string{"n1", "n3"} {
		healthy[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(api.ClusterStatus{NodeID: id, Role: "follower", LeaderID: "n2", LeaderHTTP: wedged.Addr().String(), Term: 7, Ready: true, Members: members()})
		}))
		t.Cleanup(healthy[i].Close)
		addrs[i] = strings.TrimPrefix(healthy[i].URL, "http://")
	}
	t.Setenv("TXCOORD_NODE", "")
	stdout, stderr, code := run(t, "cluster", "status", "--node", healthy[0].URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[0], "n") {
			rows[f[0]] = f[4] // ROLE
		}
	}
	if rows["n1"] != "follower" || rows["n3"] != "follower" || rows["n2"] != "unreachable" {
		t.Fatalf("roles %v, want n1 and n3 follower, the wedged n2 unreachable:\n%s", rows, stdout)
	}
}
