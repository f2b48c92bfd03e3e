// Package servertest starts whole txcoord nodes (server.Start: real Raft over loopback
// TCP, raft-boltdb stores, the engine and the HTTP API) inside one test process, and gives
// tests the means to kill, restart and wait on them. It is a testing.TB wrapper over
// internal/localcluster, the harness `txcoord dev` and bench run too: an error fails the
// test, the cluster is closed at cleanup, node logs go to the test log. Every wait is a
// condition polled against a deadline, never a bare sleep.
package servertest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/internal/goroutines"
	"github.com/txcoord/txcoord/internal/localcluster"
	"github.com/txcoord/txcoord/server"
)

// Options tunes a test cluster. Zero values take the defaults in brackets.
type Options struct {
	Nodes int // [3]
	// Tune is called on each node's config before it starts (and restarts).
	Tune func(i int, c *server.Config)
	// LogLevel for node logs written to the test log ["warn"].
	LogLevel string
}

// Cluster is a set of in-process nodes with fixed addresses and data directories, so a
// killed node restarts with its state, as a real process would. The methods it does not
// redefine (Node, Peer, DataDir, Len, Leader, Follower, URLs, ...) are localcluster's.
type Cluster struct {
	*localcluster.Cluster
	t      testing.TB
	mu     sync.Mutex
	closed bool // the test has ended: later log lines are dropped
}

// Start starts opts.Nodes nodes that bootstrap one cluster, and registers cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.LogLevel == "" {
		opts.LogLevel = "warn"
	}
	c := &Cluster{t: t}
	lc, err := localcluster.Start(localcluster.Options{
		Nodes: opts.Nodes,
		Dir:   t.TempDir(),
		Logger: hclog.New(&hclog.LoggerOptions{
			Level: hclog.LevelFromString(opts.LogLevel), Output: testWriter{c},
		}),
		Tune: opts.Tune,
	})
	if err != nil {
		t.Fatalf("starting a test cluster: %v", err)
	}
	c.Cluster = lc
	t.Cleanup(c.Close)
	return c
}

// StartJoiner starts node id outside the cluster, with an empty store and no peers, to be
// joined to it (POST /v1/cluster/join), closes it at cleanup, and returns it with its Raft
// address.
func StartJoiner(t testing.TB, id string) (*server.Server, string) {
	t.Helper()
	srv, p, err := localcluster.StartJoiner(id, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, p.RaftAddr
}

// StartNode starts (or restarts) node i with its data directory as it was left.
func (c *Cluster) StartNode(i int) *server.Server {
	c.t.Helper()
	srv, err := c.Cluster.StartNode(i)
	if err != nil {
		c.t.Fatal(err)
	}
	return srv
}

// Stop shuts node i down in order (as SIGTERM would: leadership is handed over first).
func (c *Cluster) Stop(i int) { _ = c.Cluster.Stop(i) }

// Kill stops node i abruptly, as a crash would: no leadership transfer, no draining.
func (c *Cluster) Kill(i int) { _ = c.Cluster.Kill(i) }

// Close stops every node that is up, all at once.
func (c *Cluster) Close() {
	_ = c.Cluster.Close()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Dump writes each running node's Raft stats and every goroutine's stack to the test log,
// prefixed with what: call it when a wait times out, so that a stall on a loaded CI machine
// is diagnosable from the log alone.
func (c *Cluster) Dump(what string) {
	c.t.Helper()
	for i := 0; i < c.Len(); i++ {
		if n := c.Node(i); n != nil {
			c.t.Logf("%s: node %d (%s): applied %d, raft %v", what, i, c.Peer(i).ID, n.Node.FSM.AppliedIndex(), n.Node.Raft.Stats())
		}
	}
	c.t.Logf("%s: goroutines:\n%s", what, goroutines.Dump())
}

// Eventually calls f until it returns nil or within passes; it returns f's last error.
func (c *Cluster) Eventually(within time.Duration, f func() error) error {
	return localcluster.Eventually(within, f)
}

// WaitLeader waits until one running node leads and every running node is ready (and has
// caught up with the leader's confirmed commit index since it started), and returns the
// leader's index.
func (c *Cluster) WaitLeader(within time.Duration) int {
	c.t.Helper()
	leader, err := c.Cluster.WaitLeader(within)
	if err != nil {
		c.t.Fatal(err)
	}
	return leader
}

// StateHash returns the SHA-256 of node i's FSM in snapshot form; equal hashes mean equal
// state (oracle O4).
func (c *Cluster) StateHash(i int) string {
	c.t.Helper()
	h, err := c.Cluster.StateHash(i)
	if err != nil {
		c.t.Fatal(err)
	}
	return h
}

// WaitConverged waits until the cluster is quiet (no node holds a transaction that is not
// terminal) and every running node holds the same state.
func (c *Cluster) WaitConverged(within time.Duration) {
	c.t.Helper()
	if err := c.Cluster.WaitConverged(within); err != nil {
		c.t.Fatal(err)
	}
}

// testWriter sends node logs to the test log until the test ends; later lines (a Raft
// goroutine finishing after cleanup) are dropped, since testing.T panics on them.
type testWriter struct{ c *Cluster }

func (w testWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if !w.c.closed {
		w.c.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// PastDeadlines waits until every transaction posted so far with phase-one timeout timeout
// is past its deadline, then calls post n times. From feature level 3 a finished record is
// kept until its deadline is also before the prune's cut-off (the retention horizon,
// docs/fast-path.md), and a count limit's cut-off moves only with newer transactions: n
// more than the limit move it past every earlier deadline.
func PastDeadlines(timeout time.Duration, n int, post func()) {
	time.Sleep(timeout + 50*time.Millisecond) // the condition is the wall clock itself
	for range n {
		post()
	}
}
