package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/loopback"
)

// This package's one test-cluster harness. Every node runs the production transport
// (NewTransport: hashicorp/raft's NetworkTransport over the StreamLayer, with the discovery
// protocol on the same loopback port) and its leader loop (Run). Two ways to form a cluster:
//
//   - startCluster: a static --peers cluster, every node given the same Peers (the leader
//     loop, storage and shutdown tests; in-memory stores by default, as they test neither
//     durability nor restarts);
//   - newTestCluster, then start/startAll per node: discovery mode (--join,
//     --bootstrap-expect) with bolt stores in a directory, so nodes can be stopped, wiped
//     and restarted with their data (the formation, membership and recovery tests).

// tnode is one node of a test cluster.
type tnode struct {
	id, dir, bind, adv string
	tr                 *Transport
	n                  *Node
	d                  *Discovery    // nil for a startCluster node (Open answers discovery itself)
	ran                chan struct{} // closed when Run has returned
	stopped            bool
}

type testCluster struct {
	t     *testing.T
	quiet atomic.Bool // set when the test is over: late log lines are dropped
	mu    sync.Mutex
	all   map[string]*tnode // every node started, stopped at cleanup
	nodes []*tnode          // startCluster's nodes, in order
	dc    DiscoveryConfig
	dial  func(ctx context.Context, addr string) (net.Conn, error)
	level hclog.Level
}

// newTestCluster returns an empty harness whose nodes (start) use dc's discovery settings
// by default; every node it starts is stopped when the test ends.
func newTestCluster(t *testing.T, dc DiscoveryConfig) *testCluster {
	if dc.Interval == 0 {
		dc.Interval = 100 * time.Millisecond
	}
	if dc.ProbeTimeout == 0 {
		dc.ProbeTimeout = time.Second
	}
	c := &testCluster{t: t, all: map[string]*tnode{}, dc: dc, level: hclog.Info}
	t.Cleanup(func() { c.quiet.Store(true) }) // runs last
	t.Cleanup(c.stopAll)
	return c
}

// stopAll stops every node at once, as `docker compose down` would.
func (c *testCluster) stopAll() {
	c.mu.Lock()
	nodes := make([]*tnode, 0, len(c.all))
	for _, n := range c.all {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(n) }()
	}
	wg.Wait()
}

type testLogWriter struct{ c *testCluster }

func (w testLogWriter) Write(p []byte) (int, error) {
	if !w.c.quiet.Load() {
		w.c.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (c *testCluster) logger(id string) hclog.Logger {
	var out io.Writer = testLogWriter{c}
	if os.Getenv("TXCOORD_TEST_QUIET") != "" {
		out = io.Discard
	}
	return hclog.New(&hclog.LoggerOptions{Name: id, Level: c.level, Output: out})
}

// testTimeouts are the Raft timeouts of every test node: fast failover, still generous
// enough for a loaded 2-core machine under -race.
func testTimeouts(cfg *Config) {
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
}

// run starts n's leader loop with lead as the leader's work and registers the node.
func (c *testCluster) run(tn *tnode, lead func(ctx context.Context)) {
	tn.ran = make(chan struct{})
	go func() {
		defer close(tn.ran)
		tn.n.Run(context.Background(), lead)
	}()
	c.mu.Lock()
	c.all[tn.id] = tn
	c.mu.Unlock()
}

// start opens discovery-mode node id with its data in dir, listening on bind and
// advertising adv, and runs its leader loop as serve does (establishment, and autopilot on
// the leader).
func (c *testCluster) start(id, dir, bind, adv string, dc DiscoveryConfig) *tnode {
	c.t.Helper()
	if dc.Interval == 0 {
		dc.Interval = c.dc.Interval
	}
	if dc.ProbeTimeout == 0 {
		dc.ProbeTimeout = c.dc.ProbeTimeout
	}
	lg := c.logger(id)
	tr, err := NewTransport(bind, adv, lg.Named("transport"))
	if err != nil {
		c.t.Fatalf("transport for %s: %v", id, err)
	}
	if c.dial != nil {
		tr.Stream.SetDialer(c.dial)
	}
	d := NewDiscovery(tr, id, fakeHTTP(id), dc)
	cfg := Config{NodeID: id, RaftBind: bind, DataDir: dir, Transport: tr, Logger: lg, HTTPAdvertise: fakeHTTP(id)}
	testTimeouts(&cfg)
	n, err := Open(cfg)
	if err != nil {
		tr.Close()
		c.t.Fatalf("open %s: %v", id, err)
	}
	d.Start(n)
	tn := &tnode{id: id, dir: dir, bind: bind, adv: tr.Stream.Addr().String(), tr: tr, n: n, d: d}
	c.run(tn, func(ctx context.Context) { <-ctx.Done() })
	return tn
}

// clusterOptions tunes startCluster.
type clusterOptions struct {
	size int // [3]
	// config tunes node i's Config before Open.
	config func(i int, c *Config)
	// node tunes node i after Open and before Run (steps and policy).
	node func(i int, n *Node)
	// lead returns node i's leader work [block until ctx ends].
	lead func(i int, n *Node) func(ctx context.Context)
}

// testPolicy retries fast, so tests see several rounds of backoff in well under a second.
var testPolicy = leaderPolicy{minBackoff: 10 * time.Millisecond, maxBackoff: 200 * time.Millisecond, tries: 3, barrierTimeout: 5 * time.Second}

// startCluster starts a static cluster of o.size nodes n1..nN (every node given the same
// Peers, as with --peers) on the production transport over loopback, each running its
// leader loop; their logs are written to the test log from warn up.
func startCluster(t *testing.T, o clusterOptions) *testCluster {
	t.Helper()
	if o.size == 0 {
		o.size = 3
	}
	c := newTestCluster(t, DiscoveryConfig{})
	c.level = hclog.Warn
	var peers []Peer
	for i, addr := range reservePorts(t, o.size) {
		id := fmt.Sprintf("n%d", i+1)
		peers = append(peers, Peer{ID: id, RaftAddr: addr, HTTPAddr: fmt.Sprintf("10.0.0.%d:8080", i+1)})
	}
	for i, p := range peers {
		lg := c.logger(p.ID)
		tr, err := NewTransport(p.RaftAddr, "", lg.Named("transport"))
		if err != nil {
			t.Fatalf("transport for %s: %v", p.ID, err)
		}
		cfg := Config{
			NodeID: p.ID, RaftBind: p.RaftAddr, HTTPAdvertise: p.HTTPAddr, Peers: peers,
			Transport: tr, InMemory: true, Logger: lg, StaticBootstrapInterval: 50 * time.Millisecond,
		}
		testTimeouts(&cfg)
		if o.config != nil {
			o.config(i, &cfg)
		}
		n, err := Open(cfg)
		if err != nil {
			tr.Close()
			t.Fatalf("open %s: %v", p.ID, err)
		}
		n.policy = testPolicy
		if o.node != nil {
			o.node(i, n)
		}
		lead := func(ctx context.Context) { <-ctx.Done() }
		if o.lead != nil {
			lead = o.lead(i, n)
		}
		tn := &tnode{id: p.ID, bind: p.RaftAddr, adv: p.RaftAddr, tr: tr, n: n}
		c.nodes = append(c.nodes, tn)
		c.run(tn, lead)
	}
	return c
}

// openStatic opens node id of a --peers cluster exactly as serve does (Open builds the
// transport on RaftBind and answers discovery itself) and runs its leader loop until the
// test ends.
func (c *testCluster) openStatic(id string, peers []Peer, dir string) *Node {
	t := c.t
	t.Helper()
	var self Peer
	for _, p := range peers {
		if p.ID == id {
			self = p
		}
	}
	n, err := Open(Config{
		NodeID: id, RaftBind: self.RaftAddr, HTTPAdvertise: self.HTTPAddr, DataDir: dir, Peers: peers, Logger: c.logger(id),
		HeartbeatTimeout: loopback.HeartbeatTimeout, ElectionTimeout: loopback.ElectionTimeout, LeaderLeaseTimeout: loopback.LeaderLeaseTimeout,
		StaticBootstrapInterval: 50 * time.Millisecond, ProbeInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.Run(context.Background(), func(ctx context.Context) { <-ctx.Done() }) }()
	t.Cleanup(func() { _ = n.Kill(); wg.Wait() })
	return n
}

// fakeHTTP is the HTTP address a discovery-mode node advertises (nothing listens there).
func fakeHTTP(id string) string { return id + ".api.test:8080" }

// stop stops n as a crash would (Kill) and waits for its leader loop to return.
func (c *testCluster) stop(n *tnode) {
	c.mu.Lock()
	if n.stopped {
		c.mu.Unlock()
		return
	}
	n.stopped = true
	c.mu.Unlock()
	if n.d != nil {
		n.d.Close()
	}
	_ = n.n.Kill()
	<-n.ran
	_ = n.tr.Close()
}

// reservePorts returns n loopback addresses that were free a moment ago (loopback's rule,
// the one every local cluster follows).
func reservePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := loopback.Free(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// waitCluster waits until every running node sees the same leader and a configuration of
// exactly want voters (ids), and returns the leader.
func (c *testCluster) waitCluster(nodes []*tnode, want []string, timeout time.Duration) *tnode {
	c.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var leader *tnode
		ok := true
		for _, n := range nodes {
			if n.n.Raft.State() == raft.Leader {
				if leader != nil {
					ok, last = false, "two leaders: "+leader.id+" and "+n.id
				}
				leader = n
			}
		}
		if leader == nil {
			ok, last = false, "no leader"
		}
		for _, n := range nodes {
			if !ok {
				break
			}
			_, lid := n.n.Raft.LeaderWithID()
			if string(lid) != leader.id {
				ok, last = false, fmt.Sprintf("%s sees leader %q, not %s", n.id, lid, leader.id)
				break
			}
			got := voters(n.n)
			if !slices.Equal(got, want) {
				ok, last = false, fmt.Sprintf("%s has voters %v, want %v", n.id, got, want)
			}
		}
		if ok {
			return leader
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no single cluster of %v within %s: %s", want, timeout, last)
	return nil
}

// readyLeader returns the startCluster node that is LeaderReady while every node is Ready,
// or nil.
func (c *testCluster) readyLeader() *tnode {
	var leader *tnode
	for _, tn := range c.nodes {
		if !tn.n.Ready() {
			return nil
		}
		if tn.n.LeaderReady() {
			leader = tn
		}
	}
	return leader
}

// waitReadyLeader waits until some node is LeaderReady and every node Ready, and returns
// the leader; ok, when set, must also accept it.
func (c *testCluster) waitReadyLeader(within time.Duration, ok func(*tnode) bool, what string) *tnode {
	c.t.Helper()
	var leader *tnode
	waitFor(c.t, within, func() bool {
		leader = c.readyLeader()
		return leader != nil && (ok == nil || ok(leader))
	}, what)
	return leader
}

// waitOtherLeader waits for a ready leader other than not, and returns it.
func (c *testCluster) waitOtherLeader(not *tnode, within time.Duration) *tnode {
	c.t.Helper()
	var got *tnode
	waitFor(c.t, within, func() bool {
		for _, tn := range c.nodes {
			if tn != not && tn.n.LeaderReady() {
				got = tn
				return true
			}
		}
		return false
	}, "a ready leader other than "+not.id)
	return got
}

// transferUntil asks the current Raft leader to hand leadership to "to" ("" for any other
// voter) until done reports true; transfers fail now and then under load and are retried.
func (c *testCluster) transferUntil(within time.Duration, to string, done func() bool, what string) {
	c.t.Helper()
	waitFor(c.t, within, func() bool {
		if done() {
			return true
		}
		for _, tn := range c.nodes {
			if tn.n.Raft.State() == raft.Leader && tn.id != to {
				_ = tn.n.TransferLeadership(to)
				break
			}
		}
		return done()
	}, what)
}

func voters(n *Node) []string {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	slices.Sort(ids)
	return ids
}

func bootstraps(nodes []*tnode) int {
	total := 0
	for _, n := range nodes {
		total += int(n.d.Bootstraps.Load())
	}
	return total
}

// applyAndCheck writes one entry through the leader and waits until every node applied it.
func applyAndCheck(t *testing.T, leader *tnode, nodes []*tnode, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := leader.n.Apply(ctx, &fsm.SetMember{NodeID: key, HTTPAddr: "127.0.0.1:1"}); err != nil {
		t.Fatalf("apply on %s: %v", leader.id, err)
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if _, ok := n.n.FSM.Members()[key]; !ok {
				return false
			}
		}
		return true
	}, "entry "+key+" applied everywhere")
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for: %s", timeout, what)
}

// startAll starts the nodes concurrently, as a StatefulSet with Parallel pod management or
// `docker compose up` does.
func (c *testCluster) startAll(ids, addrs []string, dirs []string, dc DiscoveryConfig) []*tnode {
	out := make([]*tnode, len(ids))
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c.start(ids[i], dirs[i], addrs[i], "", dc)
		}()
	}
	wg.Wait()
	return out
}

func tempDirs(t *testing.T, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = t.TempDir()
	}
	return out
}

// counter is a set of named counts shared by hooks on several nodes.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(k string, d int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k] += d
	return c.m[k]
}

func (c *counter) get(k string) int { return c.add(k, 0) }
