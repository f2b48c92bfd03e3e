package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/internal/loopback"
)

// Node is one coordinator process.
type Node struct {
	ID       string
	HTTPAddr string
	RaftAddr string // --raft-addr: the port the node listens on
	// RaftAdvertise is the address other nodes dial (--peers, --raft-advertise): RaftAddr,
	// or with Config.Partitions the node's proxy in front of it (netsplit.go).
	RaftAdvertise string
	URL           string // http://HTTPAddr
	Bin           string // the txcoord binary the node runs: RestartWith changes it; other goroutines use Cluster.BinaryOf
	proc          *proc
}

// Part is one demo participant process.
type Part struct {
	Kind    string
	Addr    string
	URL     string // base URL; the prepare URL is URL+"/prepare"
	Prepare string
	proc    *proc
}

// nodeStatus is the part of GET /v1/cluster the harness reads.
type nodeStatus struct {
	NodeID       string `json:"nodeId"`
	Role         string `json:"role"`
	LeaderID     string `json:"leaderId"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	Ready        bool   `json:"ready"`
	FeatureLevel uint32 `json:"featureLevel"` // the level the cluster has enabled
}

// Cluster is a running set of coordinator nodes and demo participants on loopback.
type Cluster struct {
	cfg    Config
	Dir    string
	Bin    string
	Nodes  []*Node
	Parts  []*Part
	procs  procSet
	net    *netFabric   // with Config.Partitions: the proxies in front of every Raft port, else nil
	http   *http.Client // short control-plane requests
	events *eventLog

	peers    string          // the --peers value every node gets
	helpMu   sync.Mutex      // guards tagCalls
	tagCalls map[string]bool // binary -> its serve has --participant-header
}

// BuildBinary returns the txcoord binary to run: $TXCOORD_CHAOS_BIN if set, else a fresh
// `go build -trimpath -o dir/txcoord ./cmd/txcoord` (CGO_ENABLED=0 and the commit stamped, as
// `make build`, so the build cache is shared with it and with BuildBinaryAt) of the module
// this package is in.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("TXCOORD_CHAOS_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("TXCOORD_CHAOS_BIN: %w", err)
		}
		return abs, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "txcoord")
	args := []string{"build", "-trimpath"}
	// The commit is stamped as `make build` does (GET /v1/cluster's version shows it).
	if head, err := gitIn(ctx, root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		args = append(args, "-ldflags", "-X github.com/txcoord/txcoord/version.Commit="+strings.TrimSpace(string(head)))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", bin, "./cmd/txcoord")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/txcoord: %v\n%s", err, b)
	}
	return bin, nil
}

// StartCluster starts cfg.Nodes coordinator nodes and the three demo participants, each a
// separate process on loopback with its own data directory and log file under dir, and
// waits until the cluster has a ready leader. On error everything started is killed.
func StartCluster(ctx context.Context, cfg Config, bin, dir string, ev *eventLog) (_ *Cluster, err error) {
	cfg.defaults()
	c := &Cluster{cfg: cfg, Dir: dir, Bin: bin, events: ev, http: &http.Client{Timeout: 3 * time.Second}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	kinds := []string{demo.KindFlight, demo.KindHotel, demo.KindPayment}
	// Every address is chosen before any is released (loopback's rule, as in-process
	// clusters): the nodes', then one per participant, then (with Partitions) one per
	// node's Raft proxy.
	var ports loopback.Ports
	defer ports.Close()
	lps, err := ports.Peers(cfg.Nodes, 0, 0)
	if err != nil {
		return nil, err
	}
	extra := len(kinds)
	if cfg.Partitions {
		extra += cfg.Nodes
	}
	var more []string
	for range extra {
		a, err := ports.Listen(0, 0)
		if err != nil {
			return nil, err
		}
		more = append(more, a)
	}
	ports.Close() // the processes and proxies bind them again below
	for i, kind := range kinds {
		addr := more[i]
		capacity := "1000000000"
		if kind == demo.KindPayment {
			capacity = "100000000000" // cents per account; 100 per transaction
		}
		p := &Part{Kind: kind, Addr: addr, URL: "http://" + addr, Prepare: "http://" + addr + "/prepare"}
		p.proc = c.procs.add(newProc("participant-"+kind, bin, filepath.Join(dir, "participant-"+kind+".log"),
			"participant", "--kind", kind, "--listen", addr, "--data-dir", filepath.Join(dir, "participant-"+kind),
			"--capacity", capacity, "--seed", fmt.Sprint(cfg.Seed+uint64(i)+1)))
		c.Parts = append(c.Parts, p)
	}
	nodeBin := bin
	if cfg.NodeBin != "" {
		nodeBin = cfg.NodeBin
	}
	advertised := make([]loopback.Peer, len(lps)) // what --peers names: a proxy may stand in front of a Raft port
	for i, lp := range lps {
		n := &Node{ID: lp.ID, HTTPAddr: lp.HTTPAddr, RaftAddr: lp.RaftAddr, Bin: nodeBin}
		n.URL = "http://" + n.HTTPAddr
		n.RaftAdvertise = n.RaftAddr
		if cfg.Partitions {
			if c.net == nil {
				c.net = newNetFabric()
			}
			if n.RaftAdvertise, err = c.net.add(n.ID, n.RaftAddr, more[len(kinds)+i]); err != nil {
				return nil, err
			}
		}
		advertised[i] = loopback.Peer{ID: n.ID, HTTPAddr: n.HTTPAddr, RaftAddr: n.RaftAdvertise}
		c.Nodes = append(c.Nodes, n)
	}
	if c.peers, err = loopback.PeersFlag(advertised); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		n.proc = c.procs.add(newProc("node-"+n.ID, nodeBin, filepath.Join(dir, "node-"+n.ID+".log"), c.serveArgs(ctx, n, nodeBin)...))
	}
	for _, p := range c.Parts {
		if err := p.proc.start(); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.proc.start(); err != nil {
			return nil, err
		}
	}
	for _, p := range c.Parts {
		if err := c.waitHTTP(ctx, p.URL+"/healthz", 20*time.Second); err != nil {
			return nil, fmt.Errorf("participant %s: %w", p.Kind, err)
		}
	}
	if _, _, err := c.WaitLeader(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := c.WaitAllReady(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if cfg.Mode == "fast" {
		// Fast mode needs feature level 3 (a 409 feature_unavailable before): the leader
		// raises it once every node advertises it, a moment after the cluster forms.
		if err := c.waitFeatureLevel(ctx, 3, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// waitFeatureLevel waits up to timeout until a ready leader reports the cluster at level.
func (c *Cluster) waitFeatureLevel(ctx context.Context, level uint32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if _, st, ok := c.Leader(ctx); ok && st.FeatureLevel >= level {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster did not reach feature level %d within %s", level, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serveArgs returns the `txcoord serve` arguments of node n when it runs binary bin: the
// same data directory, addresses, peers and timeouts whatever the binary, plus the flags
// only some builds know.
func (c *Cluster) serveArgs(ctx context.Context, n *Node, bin string) []string {
	cfg := c.cfg
	args := []string{"serve", "--node-id", n.ID, "--http-addr", n.HTTPAddr, "--raft-addr", n.RaftAddr,
		"--data-dir", filepath.Join(c.Dir, "node-"+n.ID), "--peers", c.peers,
		"--heartbeat-timeout", cfg.HeartbeatTimeout.String(), "--election-timeout", cfg.ElectionTimeout.String(),
		"--leader-lease-timeout", cfg.LeaderLease.String(), "--snapshot-threshold", fmt.Sprint(cfg.SnapshotThreshold),
		"--log-level", cfg.NodeLogLevel}
	if n.RaftAdvertise != n.RaftAddr {
		args = append(args, "--raft-advertise", n.RaftAdvertise)
	}
	// Tag every call with the sending node, so the participants' request logs say who sent
	// what (binaries without the flag just go without).
	if c.hasParticipantHeader(ctx, bin) {
		args = append(args, "--participant-header", demo.NodeHeader+": "+n.ID)
	}
	return append(args, cfg.ExtraServeArgs...)
}

// hasParticipantHeader reports (once per binary) whether bin's serve knows --participant-header.
func (c *Cluster) hasParticipantHeader(ctx context.Context, bin string) bool {
	c.helpMu.Lock()
	defer c.helpMu.Unlock()
	if v, ok := c.tagCalls[bin]; ok {
		return v
	}
	help, _ := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput()
	v := bytes.Contains(help, []byte("--participant-header"))
	if c.tagCalls == nil {
		c.tagCalls = map[string]bool{}
	}
	c.tagCalls[bin] = v
	return v
}

// Close kills every process. It is safe to call more than once.
func (c *Cluster) Close() {
	c.procs.killAll()
	if c.net != nil {
		c.net.Close()
	}
}

// Isolate cuts node n from every other node's Raft traffic, both ways, until Heal (only
// with Config.Partitions; see netFabric). Its HTTP API and the participants stay reachable.
func (c *Cluster) Isolate(n *Node) error {
	if c.net == nil {
		return errors.New("no network partitions without Config.Partitions")
	}
	c.net.Isolate(n.ID)
	return nil
}

// Heal ends node n's isolation.
func (c *Cluster) Heal(n *Node) {
	if c.net != nil {
		c.net.Heal(n.ID)
	}
}

// DumpLogs writes the tail of every process's log to w.
func (c *Cluster) DumpLogs(w io.Writer, lines int) { c.procs.dumpLogs(w, lines) }

func (c *Cluster) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.http.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: not ready within %s (last error %v)", url, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// getJSON GETs url into v with the given timeout.
func getJSON(ctx context.Context, client *http.Client, url string, timeout time.Duration, v any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return json.Unmarshal(body, v)
}

// Status returns node n's GET /v1/cluster (a paused or dead node fails within timeout).
func (c *Cluster) Status(ctx context.Context, n *Node, timeout time.Duration) (nodeStatus, error) {
	var st nodeStatus
	err := getJSON(ctx, c.http, n.URL+"/v1/cluster", timeout, &st)
	return st, err
}

// statuses queries every live, unpaused node at once.
func (c *Cluster) statuses(ctx context.Context, timeout time.Duration) map[*Node]nodeStatus {
	var mu sync.Mutex
	out := map[*Node]nodeStatus{}
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if !n.proc.running() || n.proc.isPaused() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := c.Status(ctx, n, timeout); err == nil {
				mu.Lock()
				out[n] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// Leader returns the node that reports itself leader and ready with the highest term.
func (c *Cluster) Leader(ctx context.Context) (*Node, nodeStatus, bool) {
	var best *Node
	var bst nodeStatus
	for n, st := range c.statuses(ctx, 500*time.Millisecond) {
		if st.Role == "leader" && st.Ready && (best == nil || st.Term > bst.Term) {
			best, bst = n, st
		}
	}
	return best, bst, best != nil
}

// WaitLeader waits up to timeout for a ready leader.
func (c *Cluster) WaitLeader(ctx context.Context, timeout time.Duration) (*Node, nodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if n, st, ok := c.Leader(ctx); ok {
			return n, st, nil
		}
		select {
		case <-ctx.Done():
			return nil, nodeStatus{}, fmt.Errorf("no ready leader within %s", timeout)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// WaitAllReady waits up to timeout until every node answers GET /readyz with 200.
func (c *Cluster) WaitAllReady(ctx context.Context, timeout time.Duration) error {
	for _, n := range c.Nodes {
		if err := c.waitHTTP(ctx, n.URL+"/readyz", timeout); err != nil {
			return fmt.Errorf("node %s: %w", n.ID, err)
		}
	}
	return nil
}

// NodeByID returns the node with the given id, or nil.
func (c *Cluster) NodeByID(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Kill SIGKILLs node n.
func (c *Cluster) Kill(n *Node) error { return n.proc.kill() }

// Restart starts node n again (a no-op if it runs).
func (c *Cluster) Restart(n *Node) error { return n.proc.start() }

// Terminate sends node n SIGTERM and waits up to grace for it to exit (then SIGKILLs it);
// it reports whether the node exited on its own within grace.
func (c *Cluster) Terminate(n *Node, grace time.Duration) bool { return n.proc.terminate(grace) }

// BinaryOf returns the binary node n runs; safe while another goroutine calls RestartWith.
func (c *Cluster) BinaryOf(n *Node) string { return n.proc.binary() }

// Running reports whether node n's process is alive.
func (c *Cluster) Running(n *Node) bool { return n.proc.running() }

// RestartWith starts the stopped node n again running binary bin, on the same data
// directory, addresses and peers (a rolling upgrade's step). It fails if n still runs.
func (c *Cluster) RestartWith(ctx context.Context, n *Node, bin string) error {
	if err := n.proc.setCommand(bin, c.serveArgs(ctx, n, bin)); err != nil {
		return err
	}
	n.Bin = bin
	return n.proc.start()
}

// UnexpectedExits lists every exit of a node or participant the harness did not cause
// (a process that stopped on its own: a crash, a fatal error, a refused start).
func (c *Cluster) UnexpectedExits() []string {
	var out []string
	for _, p := range c.procs.all() {
		out = append(out, p.unexpectedExits()...)
	}
	return out
}

// Pause SIGSTOPs node n; Resume SIGCONTs it.
func (c *Cluster) Pause(n *Node) error  { return n.proc.signal(syscall.SIGSTOP) }
func (c *Cluster) Resume(n *Node) error { return n.proc.signal(syscall.SIGCONT) }

// HealAll ends every network partition, continues every paused node and starts every dead one.
func (c *Cluster) HealAll() error {
	var errs []error
	if c.net != nil {
		c.net.HealAll()
	}
	for _, n := range c.Nodes {
		if n.proc.isPaused() {
			errs = append(errs, c.Resume(n))
		}
		if !n.proc.running() {
			errs = append(errs, c.Restart(n))
		}
	}
	for _, p := range c.Parts {
		if !p.proc.running() {
			errs = append(errs, p.proc.start())
		}
	}
	return errors.Join(errs...)
}

// SetFaults replaces participant p's fault knobs (POST /control).
func (c *Cluster) SetFaults(ctx context.Context, p *Part, f demo.Faults) error {
	body, _ := json.Marshal(f)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/control", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s/control: %w", p.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s/control: HTTP %d: %s", p.URL, resp.StatusCode, b)
	}
	return nil
}

// ClearFaults sets every participant's knobs to zero.
func (c *Cluster) ClearFaults(ctx context.Context) error {
	var errs []error
	for _, p := range c.Parts {
		errs = append(errs, c.SetFaults(ctx, p, demo.Faults{}))
	}
	return errors.Join(errs...)
}

// Requests returns participant p's request log (optionally only one transaction's).
func (c *Cluster) Requests(ctx context.Context, p *Part, txID string) ([]demo.LoggedRequest, error) {
	u := p.URL + "/requests"
	if txID != "" {
		u += "?transactionId=" + txID
	}
	var doc struct {
		Requests []demo.LoggedRequest `json:"requests"`
	}
	err := getJSON(ctx, c.http, u, 30*time.Second, &doc)
	return doc.Requests, err
}

// PrepareURLs returns the participants' prepare URLs.
func (c *Cluster) PrepareURLs() []string {
	out := make([]string, len(c.Parts))
	for i, p := range c.Parts {
		out[i] = p.Prepare
	}
	return out
}
