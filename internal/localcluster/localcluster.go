// Package localcluster runs a txcoord cluster inside one process on loopback TCP, as
// production runs it: every node is a full server.Start (the Raft TCP transport,
// raft-boltdb with fsync, file snapshots, the 2PC engine and the HTTP API) with a data
// directory of its own, so a stopped or killed node restarts with its state, as a real
// process would. It is the one harness behind server/servertest (tests), internal/bench
// and `txcoord dev`; the chaos harness, which runs real processes, shares its addresses
// (internal/loopback). Every wait polls a condition against a deadline and returns an
// error; nothing here depends on package testing.
package localcluster

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/internal/loopback"
	"github.com/txcoord/txcoord/server"
)

// restartWithin bounds the retries of a node's start: a port freed by a killed node (or
// by the reservation a moment ago) can take a moment to be reusable.
const restartWithin = 10 * time.Second

// Options configures Start. Zero values take the defaults in brackets.
type Options struct {
	Nodes int    // [3]
	Dir   string // node i's data directory is Dir/n<i+1> (required)
	// HTTPPort and RaftPort are the first node's ports; node i gets HTTPPort+i and
	// RaftPort+i. 0 picks free ports [0].
	HTTPPort, RaftPort int
	// Logger is the nodes' logger; each node logs with "node" set to its id [discard].
	Logger hclog.Logger
	// Tune adjusts node i's config before each start (and restart); it sees the defaults
	// (loopback's Raft timings) already set.
	Tune func(i int, c *server.Config)
}

// Cluster is a set of in-process nodes with fixed addresses and data directories. Its
// methods are safe for concurrent use.
type Cluster struct {
	opts  Options
	peers []cluster.Peer
	dirs  []string

	mu    sync.Mutex
	nodes []*server.Server // nil while a node is down
	lns   []net.Listener   // node i's reserved API listener until its first start, then nil
}

// Start chooses every node's addresses, then starts the nodes, which bootstrap one
// cluster. It returns once each node's API listens, before a leader is elected (see
// WaitLeader). On error nothing is left running. A port that cannot be had is a
// *loopback.ListenError.
func Start(o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Dir == "" {
		return nil, errors.New("localcluster: Options.Dir is required")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	var ports loopback.Ports
	defer ports.Close() // the Raft ports: each node's transport binds its own again
	lps, err := ports.Peers(o.Nodes, o.HTTPPort, o.RaftPort)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: o, nodes: make([]*server.Server, o.Nodes)}
	for _, p := range lps {
		c.peers = append(c.peers, cluster.Peer{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr})
		c.dirs = append(c.dirs, filepath.Join(o.Dir, p.ID))
		// The API's port stays open from now until the node serves on it.
		c.lns = append(c.lns, ports.Take(p.HTTPAddr))
	}
	ports.Close()
	for i := range c.nodes {
		if _, err := c.StartNode(i); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// config returns the config node i starts with: the production server.Config on its
// reserved addresses and data directory, with loopback's quick Raft timings, then Tune.
func (c *Cluster) config(i int) server.Config {
	cfg := nodeConfig(c.peers[i], c.dirs[i], c.peers, c.opts.Logger)
	if c.opts.Tune != nil {
		c.opts.Tune(i, &cfg)
	}
	return cfg
}

// nodeConfig is the one server.Config of a local node: p's addresses, data directory dir,
// the static peer list peers (none for a node that waits to be joined) and loopback's
// quick Raft timings.
func nodeConfig(p cluster.Peer, dir string, peers []cluster.Peer, lg hclog.Logger) server.Config {
	return server.Config{
		HTTPBind: p.HTTPAddr,
		Logger:   lg.With("node", p.ID),
		Cluster: cluster.Config{
			NodeID: p.ID, RaftBind: p.RaftAddr, HTTPAdvertise: p.HTTPAddr, DataDir: dir, Peers: peers,
			HeartbeatTimeout: loopback.HeartbeatTimeout, ElectionTimeout: loopback.ElectionTimeout,
			LeaderLeaseTimeout: loopback.LeaderLeaseTimeout,
		},
	}
}

// StartJoiner starts one node outside any cluster, to be added to one (POST
// /v1/cluster/join): id, an empty store in dir, no peers, free loopback ports and the
// local Raft timings. It returns the node and its id and addresses (what a join names).
// lg may be nil.
func StartJoiner(id, dir string, lg hclog.Logger) (*server.Server, cluster.Peer, error) {
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	var ports loopback.Ports
	defer ports.Close()
	h, err := ports.Listen(0, 0)
	if err != nil {
		return nil, cluster.Peer{}, err
	}
	r, err := ports.Listen(0, 0)
	if err != nil {
		return nil, cluster.Peer{}, err
	}
	p := cluster.Peer{ID: id, RaftAddr: r, HTTPAddr: h}
	cfg := nodeConfig(p, dir, nil, lg)
	cfg.Listener = ports.Take(h)
	ports.Close()
	srv, err := server.Start(cfg)
	if err != nil {
		return nil, cluster.Peer{}, fmt.Errorf("starting node %s: %w", id, err)
	}
	return srv, p, nil
}

// StartNode starts (or restarts) node i with its data directory as it was left. It is a
// no-op returning the node if it runs.
func (c *Cluster) StartNode(i int) (*server.Server, error) {
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("localcluster: no node %d in a cluster of %d", i, len(c.nodes))
	}
	c.mu.Lock()
	if n := c.nodes[i]; n != nil {
		c.mu.Unlock()
		return n, nil
	}
	ln := c.lns[i]
	c.lns[i] = nil
	c.mu.Unlock()
	cfg := c.config(i)
	var srv *server.Server
	err := Eventually(restartWithin, func() error {
		cfg.Listener = ln
		ln = nil // server.Start closes it on failure: a retry binds HTTPBind
		var err error
		srv, err = server.Start(cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("starting node %s: %w", c.peers[i].ID, err)
	}
	c.mu.Lock()
	c.nodes[i] = srv
	c.mu.Unlock()
	return srv, nil
}

// Node returns node i, or nil while it is down.
func (c *Cluster) Node(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Running returns the nodes that are up, in index order.
func (c *Cluster) Running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Peer returns node i's id and addresses (its entry of the static peer list).
func (c *Cluster) Peer(i int) cluster.Peer { return c.peers[i] }

// DataDir returns node i's data directory.
func (c *Cluster) DataDir(i int) string { return c.dirs[i] }

// Len returns the number of nodes, up or down.
func (c *Cluster) Len() int { return len(c.nodes) }

// URLs returns the API base URLs of the nodes that are up.
func (c *Cluster) URLs() []string {
	var out []string
	for _, n := range c.Running() {
		out = append(out, n.URL())
	}
	return out
}

// take marks node i down and returns it (nil if it was).
func (c *Cluster) take(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	c.nodes[i] = nil
	if c.lns[i] != nil { // never started: release its port
		c.lns[i].Close()
		c.lns[i] = nil
	}
	return n
}

// Stop shuts node i down in order, as SIGTERM would: leadership is handed over first. It
// is a no-op on a node that is down.
func (c *Cluster) Stop(i int) error {
	if n := c.take(i); n != nil {
		return n.Close()
	}
	return nil
}

// Kill stops node i abruptly, as a crash would: no leadership transfer, no draining.
func (c *Cluster) Kill(i int) error {
	if n := c.take(i); n != nil {
		return n.Kill()
	}
	return nil
}

// Close stops every node that is up, all at once: one by one, the survivors would hold
// elections as they go. It is safe to call more than once.
func (c *Cluster) Close() error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.Stop(i) }()
	}
	wg.Wait()
	return errors.Join(errs...)
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

// Follower returns the index of a running node that does not lead, or -1.
func (c *Cluster) Follower() int {
	for i := range c.nodes {
		if n := c.Node(i); n != nil && !n.Node.LeaderReady() {
			return i
		}
	}
	return -1
}

// pollEvery is how often the waits check their condition.
const pollEvery = 10 * time.Millisecond

// Eventually calls f until it returns nil or within has passed, and returns f's last error.
func Eventually(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// WaitLeader waits up to within until one running node leads and every running node is
// ready and has caught up with the leader's confirmed commit index since it started, and
// returns the leader's index. The error says what was still missing.
func (c *Cluster) WaitLeader(within time.Duration) (int, error) {
	leader := -1
	err := Eventually(within, func() error {
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
			return errors.New("no leader")
		}
		return nil
	})
	if err != nil {
		return -1, fmt.Errorf("no ready leader within %s: %w", within, err)
	}
	return leader, nil
}

// WaitLevel waits up to within until every running node has feature level lv enabled (the
// leader raises it once it has seen every node's build, a moment after the election).
func (c *Cluster) WaitLevel(lv uint32, within time.Duration) error {
	err := Eventually(within, func() error {
		for _, n := range c.Running() {
			if got := n.Node.FSM.FeatureLevel(); got < lv {
				return fmt.Errorf("%s is at level %d", n.Node.ID(), got)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("feature level %d not enabled within %s: %w", lv, within, err)
	}
	return nil
}

// StateHash returns the SHA-256 (hex) of node i's FSM in snapshot form; equal hashes mean
// equal state (oracle O4).
func (c *Cluster) StateHash(i int) (string, error) {
	n := c.Node(i)
	if n == nil {
		return "", fmt.Errorf("node %d is down", i)
	}
	h := sha256.New()
	if err := n.Node.FSM.WriteSnapshot(h); err != nil {
		return "", fmt.Errorf("hashing the state of node %d: %w", i, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Converged checks, once, that the cluster is quiet (no running node holds a transaction
// that is not terminal) and every running node holds the same state.
func (c *Cluster) Converged() error {
	var first string
	for i := range c.nodes {
		n := c.Node(i)
		if n == nil {
			continue
		}
		if k := len(n.Node.FSM.Active()); k > 0 {
			return fmt.Errorf("node %d holds %d transactions still in progress", i, k)
		}
		h, err := c.StateHash(i)
		if err != nil {
			return err
		}
		if first == "" {
			first = h
		} else if h != first {
			return fmt.Errorf("node %d state differs", i)
		}
	}
	return nil
}

// WaitConverged waits up to within until Converged holds.
func (c *Cluster) WaitConverged(within time.Duration) error {
	if err := Eventually(within, c.Converged); err != nil {
		return fmt.Errorf("nodes did not converge within %s: %w", within, err)
	}
	return nil
}

// WaitReady waits up to within for WaitLeader and then WaitLevel(lv) (payloads need level
// 2, fast mode 3; version.FeatureLevel is this build's), and returns the leader's index.
func (c *Cluster) WaitReady(lv uint32, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	if _, err := c.WaitLeader(within); err != nil {
		return -1, err
	}
	if err := c.WaitLevel(lv, time.Until(deadline)); err != nil {
		return -1, err
	}
	if l := c.Leader(); l >= 0 {
		return l, nil
	}
	return c.WaitLeader(time.Until(deadline)) // leadership moved meanwhile
}
