package main

import (
	"encoding/json"
	"fmt"
	"strings"
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
