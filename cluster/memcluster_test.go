package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// memCluster is this package's in-process cluster: every node on raft's in-memory transport
// with in-memory stores, each running its leader loop (Run). Tests of the leader loop use it;
// the formation tests need real TCP and discovery and keep their own harness.
type memCluster struct {
	t     *testing.T
	quiet atomic.Bool
	nodes []*memNode
}

type memNode struct {
	id  string
	n   *Node
	tr  *raft.InmemTransport
	ran chan struct{} // closed when Run has returned
}

type memOptions struct {
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

func newMemCluster(t *testing.T, o memOptions) *memCluster {
	t.Helper()
	if o.size == 0 {
		o.size = 3
	}
	c := &memCluster{t: t}
	t.Cleanup(func() { c.quiet.Store(true) }) // runs last
	var peers []Peer
	for i := 0; i < o.size; i++ {
		id := fmt.Sprintf("n%d", i+1)
		addr, tr := raft.NewInmemTransport(raft.ServerAddress("mem-" + id))
		c.nodes = append(c.nodes, &memNode{id: id, tr: tr, ran: make(chan struct{})})
		peers = append(peers, Peer{ID: id, RaftAddr: string(addr), HTTPAddr: fmt.Sprintf("10.0.0.%d:8080", i+1)})
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.tr.Connect(b.tr.LocalAddr(), b.tr)
			}
		}
	}
	t.Cleanup(c.close)
	for i, mn := range c.nodes {
		cfg := Config{
			NodeID: mn.id, HTTPAdvertise: peers[i].HTTPAddr, Peers: peers,
			Transport: mn.tr, InMemory: true, Logger: c.logger(mn.id),
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 150 * time.Millisecond,
		}
		if o.config != nil {
			o.config(i, &cfg)
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatalf("open %s: %v", mn.id, err)
		}
		n.policy = testPolicy
		if o.node != nil {
			o.node(i, n)
		}
		mn.n = n
		lead := func(ctx context.Context) { <-ctx.Done() }
		if o.lead != nil {
			lead = o.lead(i, n)
		}
		go func() {
			defer close(mn.ran)
			n.Run(context.Background(), lead)
		}()
	}
	return c
}

func (c *memCluster) close() {
	var wg sync.WaitGroup
	for _, mn := range c.nodes {
		if mn.n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = mn.n.Kill()
			<-mn.ran
			_ = mn.tr.Close()
		}()
	}
	wg.Wait()
}

type memLogWriter struct{ c *memCluster }

func (w memLogWriter) Write(p []byte) (int, error) {
	if !w.c.quiet.Load() {
		w.c.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (c *memCluster) logger(id string) hclog.Logger {
	var out io.Writer = memLogWriter{c}
	if os.Getenv("TXCOORD_TEST_QUIET") != "" {
		out = io.Discard
	}
	return hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Warn, Output: out})
}

// readyLeader returns the node that is LeaderReady while every node is Ready, or nil.
func (c *memCluster) readyLeader() *memNode {
	var leader *memNode
	for _, mn := range c.nodes {
		if !mn.n.Ready() {
			return nil
		}
		if mn.n.LeaderReady() {
			leader = mn
		}
	}
	return leader
}

// waitReadyLeader waits until some node is LeaderReady and every node Ready, and returns
// the leader; ok, when set, must also accept it.
func (c *memCluster) waitReadyLeader(within time.Duration, ok func(*memNode) bool, what string) *memNode {
	c.t.Helper()
	var leader *memNode
	waitFor(c.t, within, func() bool {
		leader = c.readyLeader()
		return leader != nil && (ok == nil || ok(leader))
	}, what)
	return leader
}

// transferUntil asks the current Raft leader to hand leadership to "to" ("" for any other
// voter) until done reports true; transfers fail now and then under load and are retried.
func (c *memCluster) transferUntil(within time.Duration, to string, done func() bool, what string) {
	c.t.Helper()
	waitFor(c.t, within, func() bool {
		if done() {
			return true
		}
		for _, mn := range c.nodes {
			if mn.n.Raft.State() == raft.Leader && mn.id != to {
				_ = mn.n.TransferLeadership(to)
				break
			}
		}
		return done()
	}, what)
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
