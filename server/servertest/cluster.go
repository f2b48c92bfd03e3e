// Package servertest starts whole txcoord nodes (server.Start: real Raft over loopback
// TCP, raft-boltdb stores, the engine and the HTTP API) inside one test process, and gives
// tests the means to kill, restart and wait on them. Every wait is a condition polled
// against a deadline, never a bare sleep.
package servertest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/internal/goroutines"
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
// killed node restarts with its state, as a real process would.
type Cluster struct {
	t      testing.TB
	opts   Options
	peers  []cluster.Peer
	dirs   []string
	mu     sync.Mutex
	nodes  []*server.Server // nil while a node is down
	closed bool
}

// Start starts opts.Nodes nodes that bootstrap one cluster, and registers cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "warn"
	}
	c := &Cluster{t: t, opts: opts, nodes: make([]*server.Server, opts.Nodes)}
	base := t.TempDir()
	var held []net.Listener
	for i := 0; i < opts.Nodes; i++ {
		id := fmt.Sprintf("n%d", i+1)
		c.peers = append(c.peers, cluster.Peer{ID: id, RaftAddr: freeAddr(t, &held), HTTPAddr: freeAddr(t, &held)})
		c.dirs = append(c.dirs, filepath.Join(base, id))
	}
	for _, ln := range held {
		ln.Close()
	}
	for i := range c.nodes {
		c.StartNode(i)
	}
	t.Cleanup(c.Close)
	return c
}

// freeAddr returns a loopback address with a free port. The listener stays open (in held)
// until every address is chosen, so the kernel cannot hand the same port out twice.
func freeAddr(t testing.TB, held *[]net.Listener) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserving a port: %v", err)
	}
	*held = append(*held, ln)
	return ln.Addr().String()
}

// StartNode starts (or restarts) node i with its data directory as it was left.
func (c *Cluster) StartNode(i int) *server.Server {
	c.t.Helper()
	p := c.peers[i]
	cfg := server.Config{
		HTTPBind: p.HTTPAddr,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: p.ID, Level: hclog.LevelFromString(c.opts.LogLevel), Output: testWriter{c},
		}),
		Cluster: cluster.Config{
			NodeID: p.ID, RaftBind: p.RaftAddr, HTTPAdvertise: p.HTTPAddr, DataDir: c.dirs[i], Peers: c.peers,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond,
		},
	}
	if c.opts.Tune != nil {
		c.opts.Tune(i, &cfg)
	}
	var srv *server.Server
	// A port freed by a killed node can take a moment to be reusable.
	err := c.Eventually(10*time.Second, func() error {
		var err error
		srv, err = server.Start(cfg)
		return err
	})
	if err != nil {
		c.t.Fatalf("starting %s: %v", p.ID, err)
	}
	c.mu.Lock()
	c.nodes[i] = srv
	c.mu.Unlock()
	return srv
}

// Node returns node i, or nil while it is down.
func (c *Cluster) Node(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Peer returns node i's id and addresses (its entry of the static peer list).
func (c *Cluster) Peer(i int) cluster.Peer { return c.peers[i] }

// DataDir returns node i's data directory.
func (c *Cluster) DataDir(i int) string { return c.dirs[i] }

// Len returns the number of nodes, up or down.
func (c *Cluster) Len() int { return len(c.nodes) }

// Stop shuts node i down in order (as SIGTERM would: leadership is handed over first).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		_ = n.Close()
	}
}

// Kill stops node i abruptly, as a crash would: no leadership transfer, no draining.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		_ = n.Kill()
	}
}

// Leader returns the index of the running node that leads, or -1.
func (c *Cluster) Leader() int {
	for i := range c.nodes {
		if n := c.Node(i); n != nil && n.Node.LeaderReady() {
			return i
		}
	}
	return -1
}

// Close stops every node that is up, all at once.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.Stop(i) }()
	}
	wg.Wait()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Dump writes each running node's Raft stats and every goroutine's stack to the test log,
// prefixed with what: call it when a wait times out, so that a stall on a loaded CI machine
// is diagnosable from the log alone.
func (c *Cluster) Dump(what string) {
	c.t.Helper()
	for i := range c.nodes {
		if n := c.Node(i); n != nil {
			c.t.Logf("%s: node %d (%s): applied %d, raft %v", what, i, c.peers[i].ID, n.Node.FSM.AppliedIndex(), n.Node.Raft.Stats())
		}
	}
	c.t.Logf("%s: goroutines:\n%s", what, goroutines.Dump())
}

// Eventually calls f until it returns nil or within passes; it returns f's last error.
func (c *Cluster) Eventually(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// WaitLeader waits until one running node leads and every running node is ready (and has
// caught up with the leader's confirmed commit index since it started), and returns the
// leader's index.
func (c *Cluster) WaitLeader(within time.Duration) int {
	c.t.Helper()
	leader := -1
	err := c.Eventually(within, func() error {
		leader = -1
		for i := range c.nodes {
			n := c.Node(i)
			if n == nil {
				continue
			}
			if !n.Node.Ready() || !n.API.CaughtUp() {
				return fmt.Errorf("%s not ready", n.Node.ID())
			}
			if n.Node.LeaderReady() {
				leader = i
			}
		}
		if leader < 0 {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("waiting for a leader: %v", err)
	}
	return leader
}

// Follower returns the index of a running node that does not lead, or -1.
func (c *Cluster) Follower() int {
	for i := range c.nodes {
		if n := c.Node(i); n != nil && !n.Node.LeaderReady() {
			return i
		}
	}
	return -1
}

// StateHash returns the SHA-256 of node i's FSM in snapshot form; equal hashes mean equal
// state (oracle O4).
func (c *Cluster) StateHash(i int) string {
	h := sha256.New()
	if err := c.Node(i).Node.FSM.WriteSnapshot(h); err != nil {
		c.t.Fatalf("hashing state of node %d: %v", i, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// WaitConverged waits until the cluster is quiet (no node holds a transaction that is not
// terminal) and every running node holds the same state.
func (c *Cluster) WaitConverged(within time.Duration) {
	c.t.Helper()
	err := c.Eventually(within, func() error {
		var first string
		for i := range c.nodes {
			if c.Node(i) == nil {
				continue
			}
			if n := len(c.Node(i).Node.FSM.Active()); n > 0 {
				return fmt.Errorf("node %d holds %d transactions still in progress", i, n)
			}
			h := c.StateHash(i)
			if first == "" {
				first = h
			} else if h != first {
				return fmt.Errorf("node %d state differs", i)
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("nodes did not converge: %v", err)
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
