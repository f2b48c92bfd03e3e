package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/version"
)

// Cluster is an in-process txcoord cluster on loopback TCP, started the way `txcoord dev`
// starts one: every node is a full server.Start (real Raft TCP transport, raft-boltdb with
// fsync, log cache, file snapshots, the 2PC engine and the HTTP API), each with its own
// data directory under Dir.
type Cluster struct {
	Dir   string
	Nodes []*server.Server
}

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	Nodes  int    // [3]
	Dir    string // data directories go in Dir/n1, Dir/n2, ... (required)
	Logger hclog.Logger
	// Tune adjusts each node's config before it starts (the CLI's tuning flags).
	Tune func(i int, c *server.Config)
}

// StartCluster starts the nodes and waits until a leader is established and every node
// is ready.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Dir == "" {
		return nil, fmt.Errorf("cluster: Dir is required")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	var peers []cluster.Peer
	httpLns := make([]net.Listener, o.Nodes)
	var raftLns []net.Listener
	closeRaftLns := func() {
		for _, l := range raftLns {
			l.Close()
		}
		raftLns = nil
	}
	defer closeRaftLns()
	closeLns := func(from int) {
		for _, l := range httpLns[from:] {
			if l != nil {
				l.Close()
			}
		}
	}
	for i := 0; i < o.Nodes; i++ {
		hl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeLns(0)
			return nil, err
		}
		httpLns[i] = hl
		// Reserve a Raft port; raft's transport binds it again below.
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeLns(0)
			return nil, err
		}
		raftAddr := rl.Addr().String()
		raftLns = append(raftLns, rl) // held until every port is chosen: none is handed out twice
		peers = append(peers, cluster.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: raftAddr, HTTPAddr: hl.Addr().String()})
	}
	closeRaftLns() // raft's transports bind these ports again below
	c := &Cluster{Dir: o.Dir}
	for i, p := range peers {
		cfg := server.Config{
			Listener: httpLns[i],
			Logger:   o.Logger.With("node", p.ID),
			Cluster: cluster.Config{
				NodeID: p.ID, RaftBind: p.RaftAddr, HTTPAdvertise: p.HTTPAddr,
				DataDir: filepath.Join(o.Dir, p.ID), Peers: peers,
				// As `txcoord dev`: quick elections on loopback. These timeouts do not
				// change the steady-state commit path.
				HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
				LeaderLeaseTimeout: 150 * time.Millisecond,
			},
		}
		if o.Tune != nil {
			o.Tune(i, &cfg)
		}
		srv, err := server.Start(cfg)
		if err != nil {
			closeLns(i + 1)
			c.Close()
			return nil, fmt.Errorf("starting node %s: %w", p.ID, err)
		}
		c.Nodes = append(c.Nodes, srv)
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// WaitReady waits until every node is ready, one leads, and every node has this build's
// feature level enabled (payloads need level 2).
func (c *Cluster) WaitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ready, leader := 0, false
		for _, n := range c.Nodes {
			if n.Node.Ready() && n.Node.FSM.FeatureLevel() >= version.FeatureLevel {
				ready++
			}
			if n.Node.LeaderReady() {
				leader = true
			}
		}
		if ready == len(c.Nodes) && leader {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: no leader within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Leader returns the node that leads, or nil.
func (c *Cluster) Leader() *server.Server {
	for _, n := range c.Nodes {
		if n.Node.LeaderReady() {
			return n
		}
	}
	return nil
}

// Follower returns a node that does not lead, or nil.
func (c *Cluster) Follower() *server.Server {
	for _, n := range c.Nodes {
		if !n.Node.LeaderReady() {
			return n
		}
	}
	return nil
}

// URLs returns the nodes' API base URLs.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL()
	}
	return out
}

// Close stops every node at once (one by one, the survivors would hold elections).
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Close() }()
	}
	wg.Wait()
	c.Nodes = nil
}

// FindLeader asks the nodes at urls for the leader's API base URL (GET /v1/cluster).
func FindLeader(ctx context.Context, hc *http.Client, urls []string) (string, error) {
	var lastErr error
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/v1/cluster", nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var st cluster.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			lastErr = fmt.Errorf("%s/v1/cluster: %v", u, err)
			continue
		}
		if st.Role == "leader" {
			return strings.TrimRight(u, "/"), nil
		}
		if st.LeaderHTTP != "" {
			return baseURL(st.LeaderHTTP), nil
		}
		lastErr = fmt.Errorf("%s knows no leader", u)
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no node given")
	}
	return "", lastErr
}

// baseURL turns "host:port" or a URL into "http://host:port" without a trailing slash.
func baseURL(s string) string {
	s = strings.TrimRight(s, "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}
