package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// postKey sends a transaction with an Idempotency-Key.
func postKey(t *testing.T, base string, services []string, key string) (int, outcome) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": 5000})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/transactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(participant.IdempotencyKeyHeader, key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", base, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out outcome
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: answer %q: %v", base, raw, err)
	}
	return resp.StatusCode, out
}

// fastAutopilot promotes joined servers soon after they are healthy (tests).
func fastAutopilot(_ int, c *server.Config) {
	c.Cluster.Autopilot.ServerStabilizationTime = 300 * time.Millisecond
	c.Cluster.ProbeInterval = 100 * time.Millisecond
	c.Cluster.StaticBootstrapInterval = 100 * time.Millisecond
}

// TestPeersRecoveryRejoinsTheSurvivorsCluster runs docs/operations.md section 9 on a --peers
// cluster exactly as an operator reads it: two of three nodes are lost with their data, the
// survivor is recovered with a peers.json naming only itself, and the two lost nodes are
// restarted EMPTY with their original --peers. The property: they join the survivor's
// cluster and never form a new one, so every transaction and idempotency key committed
// before the loss is on every node afterwards, a retry with an old key answers the old
// transaction, and neither restarted node bootstrapped.
func TestPeersRecoveryRejoinsTheSurvivorsCluster(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{Tune: fastAutopilot})
	leader := c.WaitLeader(20 * time.Second)
	keys := map[string]string{} // idempotency key -> transaction id
	for i := 0; i < 5; i++ {
		key := fmt.Sprintf("before-loss-%d", i)
		code, out := postKey(t, c.Node(leader).URL(), urls, key)
		if code != http.StatusOK || out.Status != "committed" {
			t.Fatalf("POST %s: HTTP %d %+v", key, code, out)
		}
		keys[key] = out.TransactionID
	}
	c.WaitConverged(20 * time.Second)

	// n2 and n3 are lost for good, data and all; n1 survives without a quorum.
	c.Kill(1)
	c.Kill(2)
	for _, i := range []int{1, 2} {
		if err := os.RemoveAll(c.DataDir(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Section 9, steps 2 and 3: peers.json naming the survivor, then restart it.
	c.Stop(0)
	if err := cluster.WritePeersJSON(c.DataDir(0), []cluster.Peer{{ID: c.Peer(0).ID, RaftAddr: c.Peer(0).RaftAddr}}); err != nil {
		t.Fatal(err)
	}
	if done, err := cluster.RecoverIfRequested(c.DataDir(0), c.Peer(0).ID, hclog.NewNullLogger()); err != nil || !done {
		t.Fatalf("recovery: %v %v", done, err)
	}
	c.StartNode(0)
	if err := c.Eventually(20*time.Second, func() error {
		if !c.Node(0).Node.LeaderReady() {
			return fmt.Errorf("the recovered survivor does not lead yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Step 4 read literally: the lost nodes come back empty with their original --peers.
	c.StartNode(1)
	c.StartNode(2)
	if err := c.Eventually(60*time.Second, func() error {
		for i := 0; i < 3; i++ {
			if got := voters(t, c.Node(i)); len(got) != 3 {
				return fmt.Errorf("node %d sees voters %v", i, got)
			}
			if !c.Node(i).Node.Ready() {
				return fmt.Errorf("node %d not ready", i)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("the lost nodes did not join the survivor's cluster: %v", err)
	}
	for _, i := range []int{1, 2} {
		if c.Node(i).Node.Bootstrapped() {
			t.Fatalf("node %d bootstrapped a new cluster over the survivor's", i)
		}
	}
	// Every transaction and key from before the loss is on every node.
	if err := c.Eventually(20*time.Second, func() error {
		for i := 0; i < 3; i++ {
			f := c.Node(i).Node.FSM
			for key, id := range keys {
				tx, ok := f.ByKey(key)
				if !ok || tx.ID != id || tx.Status != fsm.StatusCommitted {
					return fmt.Errorf("node %d: key %s: %v %+v", i, key, ok, tx)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A retry with an old key, through a node that was wiped, answers the old transaction.
	for key, id := range keys {
		code, out := postKey(t, c.Node(2).URL(), urls, key)
		if code != http.StatusOK || out.TransactionID != id {
			t.Fatalf("retry of %s on a rejoined node: HTTP %d %+v, want transaction %s", key, code, out, id)
		}
		break
	}
	// The cluster goes on: a new transaction commits and reaches every node.
	code, out := post(t, c.Node(1).URL(), urls, 5000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("transaction after recovery: HTTP %d %+v", code, out)
	}
	c.WaitConverged(20 * time.Second)
}
