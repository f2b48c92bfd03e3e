package cluster

// Cluster formation: `txcoord serve --bootstrap-expect N --join ADDR,...`.
//
// Every node answers a small discovery protocol on its Raft port (a connection whose first
// byte is discoveryMagic carries one JSON request and one JSON reply): "info" returns the
// node's id, advertised Raft address, whether it has Raft state, its leader and term, and
// its view (every node it has found so far, itself included); "join" asks the leader to add
// the caller, and "remove" to remove a node, through Node.Join and Node.Remove, the same
// implementation and rules as the HTTP API's (a follower answers with the leader's address
// instead). A joined node is a non-voter until autopilot promotes it (autopilot.go).
//
// A node that has Raft state (a log, a snapshot or a configuration) never bootstraps: it is
// already a member, and restarts need nothing else. A node without state runs rounds, every
// Interval, until it has state:
//
//  1. It resolves every --join entry ("host:port"; the host may be a DNS name with many A
//     records, such as a StatefulSet's headless Service) and probes each address, plus every
//     address it has learnt from other nodes' views and from nodes that probed it. Nodes that
//     answer join its view, which only grows while the process lives.
//  2. If any node it reached has state, a cluster exists: it sends "join" to that cluster's
//     leader and waits for the leader to replicate the log to it. A node whose data was wiped
//     therefore rejoins the cluster it belonged to; it can never found a second one while any
//     member is reachable.
//  3. Otherwise, with --bootstrap-expect N: when its view holds at least N nodes, it has the
//     lowest id of its view, and every other node of the view answered this round with no
//     state and exactly the same view, it bootstraps with the whole view (every node as a
//     voter). The others never bootstrap: they get the configuration from its first
//     AppendEntries. The decision and the bootstrap happen under the lock that "info"
//     answers under, so a node reports state the moment it has bootstrapped.
//
// Why only one cluster forms: suppose X bootstraps view Vx and Y bootstraps Vy, X != Y. If
// Y is in Vx, Y answered X's last round with view Vx and no state; its view only grows, so
// from then on it contains X, whose id is lower (X is the lowest of Vx): Y can no longer be
// the lowest of its view. Y cannot have bootstrapped before answering either, since it would
// have reported state. The case X in Vy is symmetric. If neither is in the other's view, any
// node Z in both answered X with Vx and Y with Vy; views only grow, so one contains the
// other, and then one contains X or Y: impossible. So two clusters need disjoint views, i.e.
// --join lists that never lead to one another (a misconfiguration). The one remaining hole is
// a node that restarts without state in the middle of formation (its view starts over)
// while the node that bootstrapped is unreachable to it but N others are not.
//
// Nodes that start after the cluster formed (scale-up) take step 2. A node with state whose
// advertised Raft address differs from the one in the configuration (an IP that changed)
// is not re-addressed (Node.Join refuses that on every path, since the old address would
// count in the quorum): it logs what to do, remove it and bring it back empty. Advertise
// DNS names (as the Compose file and the StatefulSet do) so that addresses do not change.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/version"
)

// DiscoveryConfig configures cluster formation.
type DiscoveryConfig struct {
	// Join lists where other nodes' Raft ports may be found, "host:port" each. A host name is
	// resolved on every round to all its addresses.
	Join []string
	// BootstrapExpect is how many nodes form a new cluster; 0 means never bootstrap (only
	// join an existing cluster).
	BootstrapExpect int
	// Interval between rounds [1s], with ±20% jitter.
	Interval time.Duration
	// ProbeTimeout bounds one probe [2s].
	ProbeTimeout time.Duration
	// Resolve looks a host name up [net.DefaultResolver.LookupHost] (tests fake DNS with it).
	Resolve func(ctx context.Context, host string) ([]string, error)
	Logger  hclog.Logger
}

// ParseJoin splits a comma-separated --join list and checks that every entry is host:port.
func ParseJoin(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		host, port, err := net.SplitHostPort(e)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("--join entry %q: want host:port (a peer's Raft address, or a DNS name and the Raft port)", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// ViewEntry is one node found during formation.
type ViewEntry struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
}

// PeerInfo is a node's answer to a discovery probe.
type PeerInfo struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	HTTPAddr string `json:"httpAddr,omitempty"`
	// Ready is false while the node is still opening its stores; the rest is then unknown.
	Ready bool `json:"ready"`
	// HasState: the node has a Raft log, snapshot or configuration, or has bootstrapped.
	HasState        bool        `json:"hasState"`
	Role            string      `json:"role,omitempty"`
	Term            uint64      `json:"term"`
	LastIndex       uint64      `json:"lastIndex"`
	LeaderID        string      `json:"leaderId,omitempty"`
	LeaderRaftAddr  string      `json:"leaderRaftAddr,omitempty"`
	Members         int         `json:"members"`
	BootstrapExpect int         `json:"bootstrapExpect"`
	View            []ViewEntry `json:"view,omitempty"`
	// Version and FeatureLevel name the node's build (version.Version, version.FeatureLevel);
	// builds before them leave both out. TimeUnixMicro is the node's wall clock as it
	// answered, for the peers' clock-offset estimate.
	Version       string `json:"version,omitempty"`
	FeatureLevel  uint32 `json:"featureLevel,omitempty"`
	TimeUnixMicro int64  `json:"timeUnixMicro,omitempty"`
	// LastLogTerm is the term of the node's last log entry; LastContactUs how long ago it
	// last heard from a leader (µs; 0 on the leader, -1 when it never did). The leader's
	// autopilot measures health from them.
	LastLogTerm   uint64 `json:"lastLogTerm,omitempty"`
	LastContactUs int64  `json:"lastContactUs,omitempty"`
}

type discoveryRequest struct {
	Op        string    `json:"op"` // "info", "join" or "remove"
	From      ViewEntry `json:"from"`
	LastIndex uint64    `json:"lastIndex,omitempty"`
	ID        string    `json:"id,omitempty"` // remove: the node to remove
	// HTTPAddr is the joining node's API address (join), recorded by the leader.
	HTTPAddr string `json:"httpAddr,omitempty"`
}

type discoveryReply struct {
	Info   *PeerInfo `json:"info,omitempty"`
	Joined bool      `json:"joined,omitempty"`
	// Leader is the leader's Raft address when a join reached a follower.
	Leader string `json:"leader,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Discovery runs cluster formation for one node and answers other nodes' probes.
type Discovery struct {
	cfg      DiscoveryConfig
	id       string
	raftAddr string
	httpAddr string
	lg       hclog.Logger
	dial     func(context.Context, string) (net.Conn, error)
	node     atomic.Pointer[Node]

	mu           sync.Mutex // formation: the decision to bootstrap and the answers to "info"
	view         map[string]string
	learned      map[string]bool
	bootstrapped bool

	// Bootstraps counts BootstrapCluster calls made here (tests).
	Bootstraps atomic.Int32

	cancel context.CancelFunc
	done   chan struct{}
}

// NewDiscovery answers probes on tr from now on (as "not ready" until Start). id and
// httpAddr are this node's; its Raft address is tr's advertised address.
func NewDiscovery(tr *Transport, id, httpAddr string, cfg DiscoveryConfig) *Discovery {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 2 * time.Second
	}
	if cfg.Resolve == nil {
		cfg.Resolve = net.DefaultResolver.LookupHost
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	d := &Discovery{cfg: cfg, id: id, raftAddr: tr.Stream.Addr().String(), httpAddr: httpAddr, dial: tr.Stream.DialContext,
		lg: cfg.Logger.Named("discovery"), view: map[string]string{}, learned: map[string]bool{}}
	tr.Stream.SetDiscoveryHandler(d.serve)
	return d
}

// Attach makes the node known to the protocol (probes, joins and removals are answered)
// without running formation: a node started with a static --peers list.
func (d *Discovery) Attach(n *Node) { d.node.Store(n) }

// Start runs formation for n in the background until Close.
func (d *Discovery) Start(n *Node) {
	d.node.Store(n)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		d.run(ctx)
	}()
}

// Close stops formation (probes are still answered until the transport closes).
func (d *Discovery) Close() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
}

// hasState reports whether n is, or is becoming, a cluster member.
func hasState(n *Node) bool {
	if n.Raft.LastIndex() > 0 {
		return true
	}
	f := n.Raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func (d *Discovery) run(ctx context.Context) {
	n := d.node.Load()
	if hasState(n) {
		d.lg.Info("node has raft state: not bootstrapping", "last_index", n.Raft.LastIndex())
		d.maintain(ctx, n)
		return
	}
	d.lg.Info("no raft state: looking for peers", "join", strings.Join(d.cfg.Join, ","), "bootstrap_expect", d.cfg.BootstrapExpect)
	for i := 0; ; i++ {
		if d.round(ctx, n, i) {
			d.lg.Info("node is a cluster member", "last_index", n.Raft.LastIndex())
			d.maintain(ctx, n)
			return
		}
		if !sleep(ctx, jitter(d.cfg.Interval)) {
			return
		}
	}
}

// maintain makes sure the configuration holds this node's current Raft address (it may
// have changed with an IP). It returns when it does, or when this node is not a member.
func (d *Discovery) maintain(ctx context.Context, n *Node) {
	for i := 0; ; i++ {
		// Give the log time to be applied after a restart before reading the configuration.
		if !sleep(ctx, jitter(d.cfg.Interval)) {
			return
		}
		f := n.Raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		var addr raft.ServerAddress
		found := false
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == d.id {
				addr, found = s.Address, true
			}
		}
		switch {
		case !found:
			// Either the log is still catching up to the entry that added this node, or this
			// node was removed: a removed node never rejoins by itself.
			if i == 30 {
				d.lg.Warn("this node has raft state but is not in the cluster configuration (was it removed?): not rejoining by itself")
				return
			}
		case string(addr) == d.raftAddr:
			return
		default:
			// Re-addressing a member is refused on every path (Node.Join): the old address
			// would count in the quorum until it is removed.
			d.lg.Error("the cluster configuration holds another raft address for this node: it is not re-addressed by itself; remove it (txcoord cluster remove "+d.id+"), wipe its data directory and restart it to join at the new address",
				"configured", addr, "advertised", d.raftAddr)
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func jitter(d time.Duration) time.Duration {
	return d*8/10 + rand.N(d*4/10+1)
}

// round runs one formation round; it reports whether this node is now a member.
func (d *Discovery) round(ctx context.Context, n *Node, i int) bool {
	if hasState(n) {
		return true
	}
	infos := d.probeAll(ctx, d.targets(ctx))
	byID := map[string]PeerInfo{}
	for _, pi := range infos {
		if !pi.Ready || pi.ID == d.id {
			continue
		}
		if prev, dup := byID[pi.ID]; dup && prev.RaftAddr != pi.RaftAddr {
			d.lg.Error("two nodes report the same id: not bootstrapping until it is fixed", "id", pi.ID, "addr1", prev.RaftAddr, "addr2", pi.RaftAddr)
			return false
		}
		byID[pi.ID] = pi
	}
	d.mu.Lock()
	before := len(d.view)
	for id, pi := range byID {
		d.view[id] = pi.RaftAddr
		for _, v := range pi.View {
			if v.ID != d.id && len(d.learned) < 256 {
				d.learned[v.RaftAddr] = true
			}
		}
	}
	grew := len(d.view) != before
	d.mu.Unlock()

	// A cluster exists: join it (through its leader) rather than found another.
	var members []PeerInfo
	for _, pi := range byID {
		if pi.HasState {
			members = append(members, pi)
		}
	}
	if len(members) > 0 {
		slices.SortFunc(members, func(a, b PeerInfo) int { return strings.Compare(a.ID, b.ID) })
		for _, pi := range members {
			if d.join(ctx, n, pi) {
				break
			}
		}
		return hasState(n)
	}
	if d.cfg.BootstrapExpect <= 0 {
		if i%10 == 0 {
			d.lg.Info("no cluster member found yet; waiting (this node never bootstraps: --bootstrap-expect is 0)", "found", len(byID))
		}
		return false
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if hasState(n) {
		return true
	}
	ids := []string{d.id}
	for id := range d.view {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	logWait := func(msg string, args ...any) {
		if grew || i%10 == 0 {
			d.lg.Info(msg, append([]any{"view", strings.Join(ids, ","), "expect", d.cfg.BootstrapExpect}, args...)...)
		}
	}
	if len(ids) < d.cfg.BootstrapExpect {
		logWait("waiting for more nodes")
		return false
	}
	if ids[0] != d.id {
		logWait("waiting for the node with the lowest id to bootstrap", "lowest", ids[0])
		return false
	}
	for _, id := range ids[1:] {
		pi, ok := byID[id]
		if !ok {
			logWait("waiting: a node of the view did not answer this round", "peer", id)
			return false
		}
		if !sameView(pi.View, ids) {
			logWait("waiting: views differ", "peer", id, "its_view", viewIDs(pi.View))
			return false
		}
	}
	conf := raft.Configuration{}
	for _, id := range ids {
		addr := d.raftAddr
		if id != d.id {
			addr = d.view[id]
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	d.Bootstraps.Add(1)
	if err := n.Raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		d.lg.Error("bootstrap failed", "error", err)
		return false
	}
	d.bootstrapped = true
	d.lg.Info("bootstrapped a new cluster", "voters", strings.Join(ids, ","))
	return true
}

func viewIDs(v []ViewEntry) string {
	s := make([]string, len(v))
	for i, e := range v {
		s[i] = e.ID
	}
	return strings.Join(s, ",")
}

// sameView reports whether v names exactly the ids (sorted).
func sameView(v []ViewEntry, ids []string) bool {
	if len(v) != len(ids) {
		return false
	}
	got := make([]string, len(v))
	for i, e := range v {
		got[i] = e.ID
	}
	slices.Sort(got)
	return slices.Equal(got, ids)
}

// targets lists the addresses to probe this round.
func (d *Discovery) targets(ctx context.Context) []string {
	set := map[string]bool{}
	for _, j := range d.cfg.Join {
		host, port, err := net.SplitHostPort(j)
		if err != nil {
			continue
		}
		if net.ParseIP(host) != nil {
			set[j] = true
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
		addrs, err := d.cfg.Resolve(rctx, host)
		cancel()
		if err != nil {
			d.lg.Debug("resolving a join entry failed", "entry", j, "error", err)
			continue
		}
		for _, a := range addrs {
			set[net.JoinHostPort(a, port)] = true
		}
	}
	d.mu.Lock()
	for _, a := range d.view {
		set[a] = true
	}
	for a := range d.learned {
		set[a] = true
	}
	d.mu.Unlock()
	delete(set, d.raftAddr)
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// probeAll probes the targets concurrently and returns the answers.
func (d *Discovery) probeAll(ctx context.Context, targets []string) []PeerInfo {
	var (
		mu  sync.Mutex
		out []PeerInfo
		wg  sync.WaitGroup
	)
	me := ViewEntry{ID: d.id, RaftAddr: d.raftAddr}
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := call(ctx, d.dial, t, discoveryRequest{Op: "info", From: me}, d.cfg.ProbeTimeout)
			if err != nil || rep.Info == nil {
				return
			}
			mu.Lock()
			out = append(out, *rep.Info)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// join asks pi's cluster to add this node as a voter, following one redirect to the leader.
func (d *Discovery) join(ctx context.Context, n *Node, pi PeerInfo) bool {
	target := pi.RaftAddr
	if pi.LeaderRaftAddr != "" {
		target = pi.LeaderRaftAddr
	}
	for hop := 0; hop < 3; hop++ {
		ok, next := askToJoin(ctx, d.dial, d.lg, target, discoveryRequest{Op: "join", From: ViewEntry{ID: d.id, RaftAddr: d.raftAddr}, HTTPAddr: d.httpAddr, LastIndex: n.Raft.LastIndex()})
		if ok || next == "" {
			return ok
		}
		target = next
	}
	return false
}

// askToJoin sends one join request to target. It reports whether the node was added, or
// else the leader to ask next ("" when there is none: the request failed or was refused).
func askToJoin(ctx context.Context, dial func(context.Context, string) (net.Conn, error), lg hclog.Logger, target string, req discoveryRequest) (bool, string) {
	rep, err := call(ctx, dial, target, req, membershipCallTimeout)
	switch {
	case err != nil:
		lg.Info("join request failed", "via", target, "error", err)
		return false, ""
	case rep.Joined:
		lg.Info("the leader added this node to the cluster", "leader", target)
		return true, ""
	case rep.Leader != "" && rep.Leader != target:
		return false, rep.Leader
	default:
		lg.Info("join refused", "via", target, "reason", rep.Error)
		return false, ""
	}
}

// RemovePeer asks the cluster, through the node whose Raft port is at addr (a follower
// redirects to the leader), to remove node id from the Raft configuration. Removing a node
// that is not a member succeeds.
func RemovePeer(ctx context.Context, addr, id string, timeout time.Duration) error {
	var dl net.Dialer
	dial := func(ctx context.Context, a string) (net.Conn, error) { return dl.DialContext(ctx, "tcp", a) }
	// While no leader is known (an election: the previous remove took out the leader
	// itself, or it was just killed) the request is repeated from addr until timeout, so
	// that scale-down steps can run back to back.
	deadline := time.Now().Add(max(timeout, membershipCallTimeout))
	wait := 100 * time.Millisecond
	target := addr
	var last string
	for hop := 0; ; hop++ {
		rep, err := call(ctx, dial, target, discoveryRequest{Op: "remove", ID: id}, max(timeout, membershipCallTimeout))
		switch {
		case err != nil:
			return err
		case rep.Joined:
			return nil
		case rep.Leader != "" && rep.Leader != target && hop < 3:
			target = rep.Leader
			continue
		case electing(rep.Error):
			last = fmt.Sprintf("remove %s via %s: %s", id, target, rep.Error)
		default:
			return fmt.Errorf("remove %s via %s: %s", id, target, rep.Error)
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%s (still so after %s)", last, max(timeout, membershipCallTimeout))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", last, ctx.Err())
		case <-time.After(wait):
		}
		wait, target, hop = min(2*wait, time.Second), addr, 0
	}
}

// electing reports whether a membership refusal means "no leader to act right now" (an
// election is on, or the node that leads is not ready yet), which passes by itself.
func electing(reply string) bool {
	for _, s := range []string{"no leader known", "node is starting", ErrNotLeader.Error()} {
		if strings.Contains(reply, s) {
			return true
		}
	}
	return false
}

// handleRemove removes req.ID through Node.Remove when this node leads ("joined" in the
// reply means done); a follower points the caller at the leader.
func (d *Discovery) handleRemove(req discoveryRequest) discoveryReply {
	n := d.node.Load()
	if n == nil {
		return discoveryReply{Error: "node is starting"}
	}
	if req.ID == "" {
		return discoveryReply{Error: "remove: no node id"}
	}
	if rep, ok := redirectToLeader(n); !ok {
		return rep
	}
	ctx, cancel := context.WithTimeout(context.Background(), membershipCallTimeout)
	defer cancel()
	if err := n.Remove(ctx, req.ID); err != nil {
		return discoveryReply{Error: "remove: " + err.Error()}
	}
	return discoveryReply{Joined: true}
}

// Probe asks the node whose Raft port is at addr for its PeerInfo.
func Probe(ctx context.Context, addr string, timeout time.Duration) (PeerInfo, error) {
	var dl net.Dialer
	dial := func(ctx context.Context, a string) (net.Conn, error) { return dl.DialContext(ctx, "tcp", a) }
	return probeWith(ctx, dial, addr, timeout)
}

// probeWith is Probe over the given dialer (the transport's, so TLS applies).
func probeWith(ctx context.Context, dial func(context.Context, string) (net.Conn, error), addr string, timeout time.Duration) (PeerInfo, error) {
	rep, err := call(ctx, dial, addr, discoveryRequest{Op: "info"}, timeout)
	if err != nil {
		return PeerInfo{}, err
	}
	if rep.Info == nil {
		return PeerInfo{}, fmt.Errorf("probe %s: %s", addr, rep.Error)
	}
	return *rep.Info, nil
}

func call(ctx context.Context, dial func(context.Context, string) (net.Conn, error), addr string, req discoveryRequest, timeout time.Duration) (discoveryReply, error) {
	var rep discoveryReply
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(dctx, addr)
	if err != nil {
		return rep, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	body, _ := json.Marshal(req)
	if _, err := c.Write(append(append([]byte{discoveryMagic}, body...), '\n')); err != nil {
		return rep, err
	}
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&rep); err != nil {
		return rep, fmt.Errorf("discovery reply from %s: %w", addr, err)
	}
	return rep, nil
}

// serve answers one discovery connection.
func (d *Discovery) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	var req discoveryRequest
	if err := json.NewDecoder(io.LimitReader(c, 64<<10)).Decode(&req); err != nil {
		return
	}
	if req.Op == "join" || req.Op == "remove" {
		_ = c.SetDeadline(time.Now().Add(membershipCallTimeout))
	}
	var rep discoveryReply
	switch req.Op {
	case "info":
		if req.From.ID != "" && req.From.ID != d.id && CheckAdvertise(req.From.RaftAddr) == nil {
			d.mu.Lock()
			if len(d.learned) < 256 {
				d.learned[req.From.RaftAddr] = true
			}
			d.mu.Unlock()
		}
		pi := d.Info()
		rep.Info = &pi
	case "join":
		rep = d.handleJoin(req)
	case "remove":
		rep = d.handleRemove(req)
	default:
		rep.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	_ = json.NewEncoder(c).Encode(rep)
}

// Info is this node's answer to a probe.
func (d *Discovery) Info() PeerInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	pi := PeerInfo{ID: d.id, RaftAddr: d.raftAddr, HTTPAddr: d.httpAddr, BootstrapExpect: d.cfg.BootstrapExpect,
		Version: version.String(), FeatureLevel: version.FeatureLevel}
	pi.View = append(pi.View, ViewEntry{ID: d.id, RaftAddr: d.raftAddr})
	for id, a := range d.view {
		pi.View = append(pi.View, ViewEntry{ID: id, RaftAddr: a})
	}
	slices.SortFunc(pi.View, func(a, b ViewEntry) int { return strings.Compare(a.ID, b.ID) })
	n := d.node.Load()
	if n == nil {
		pi.TimeUnixMicro = time.Now().UnixMicro()
		return pi
	}
	pi.TimeUnixMicro = n.now().UnixMicro()
	r := n.Raft
	pi.Ready = true
	pi.Role = roleName(r.State())
	pi.Term = r.CurrentTerm()
	pi.LastIndex = r.LastIndex()
	addr, id := r.LeaderWithID()
	pi.LeaderID, pi.LeaderRaftAddr = string(id), string(addr)
	if f := r.GetConfiguration(); f.Error() == nil {
		pi.Members = len(f.Configuration().Servers)
	}
	pi.HasState = pi.LastIndex > 0 || pi.Members > 0 || d.bootstrapped
	pi.LastLogTerm, _ = strconv.ParseUint(r.Stats()["last_log_term"], 10, 64)
	if r.State() != raft.Leader {
		pi.LastContactUs = -1
		if lc := r.LastContact(); !lc.IsZero() {
			pi.LastContactUs = max(time.Since(lc).Microseconds(), 1)
		}
	}
	return pi
}

// handleJoin adds the caller through Node.Join (the rules every membership change
// follows) when this node leads; a follower points the caller at the leader.
func (d *Discovery) handleJoin(req discoveryRequest) discoveryReply {
	n := d.node.Load()
	if n == nil {
		return discoveryReply{Error: "node is starting"}
	}
	if req.From.ID == "" {
		return discoveryReply{Error: "join: no node id"}
	}
	if rep, ok := redirectToLeader(n); !ok {
		return rep
	}
	ctx, cancel := context.WithTimeout(context.Background(), membershipCallTimeout)
	defer cancel()
	if err := n.Join(ctx, JoinRequest{ID: req.From.ID, RaftAddr: req.From.RaftAddr, HTTPAddr: req.HTTPAddr}); err != nil {
		return discoveryReply{Error: "join: " + err.Error()}
	}
	if req.LastIndex == 0 && isVoter(n, req.From.ID) {
		d.lg.Warn("a voter asked to join with an empty log (its data was lost?); it catches up from this leader", "peer", req.From.ID)
	}
	return discoveryReply{Joined: true}
}

func isVoter(n *Node, id string) bool {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// redirectToLeader returns ok on the leader; elsewhere the reply that points the caller at
// the leader (or says none is known).
func redirectToLeader(n *Node) (discoveryReply, bool) {
	if n.Raft.State() == raft.Leader {
		return discoveryReply{}, true
	}
	leader, _ := n.Raft.LeaderWithID()
	if leader == "" {
		return discoveryReply{Error: "no leader known"}, false
	}
	return discoveryReply{Leader: string(leader), Error: "not the leader"}, false
}
