package cluster

// Autopilot (hashicorp/raft-autopilot, as Consul and Nomad use it) runs on the leader while
// it leads (started once leadership is established, stopped before the leader loop reacts
// to the next change). Node.Join adds a server as a non-voter; autopilot promotes it to
// voter once it is healthy and has stayed so for ServerStabilizationTime. A server is
// healthy when the leader reaches it (the peer monitor's probes), it heard from the leader
// within LastContactThreshold, it is on the leader's term and no more than MaxTrailingLogs
// entries behind. Each server's health is in Status (GET /v1/cluster, members[].health).
// With CleanupDeadServers, a server the leader has not reached for DeadServerAfter is
// removed through Node.Remove, never more than keeps a quorum of the voters and never below
// MinQuorum voters.
//
// What the library gets from txcoord (apDelegate): the known servers are exactly the Raft
// configuration (txcoord has no gossip membership, so no server is ever "stale"), each
// alive or failed as the peer monitor last saw it; the stats of each server come from a
// discovery probe on its Raft port (last index, last log term, time since it last heard
// from the leader); the leader's own from its Raft. Joins do not use the library's
// AddServer, which re-addresses members and removes servers sharing an address: Node.Join
// refuses both.

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/txcoord/txcoord/api"
)

// AutopilotConfig tunes autopilot. Zero values take the defaults in brackets.
type AutopilotConfig struct {
	// ServerStabilizationTime is how long a joined server must stay healthy before it is
	// promoted to voter [10s].
	ServerStabilizationTime time.Duration
	// LastContactThreshold is the longest a server may go without hearing from the leader
	// and still count as healthy [HeartbeatTimeout: past it, a voter would start an
	// election of its own].
	LastContactThreshold time.Duration
	// MaxTrailingLogs is how many entries a server may be behind the leader and still count
	// as healthy [250].
	MaxTrailingLogs uint64
	// CleanupDeadServers removes servers the leader has not reached for DeadServerAfter
	// [false: an operator removes them with txcoord cluster remove].
	CleanupDeadServers bool
	// DeadServerAfter is how long a server must be unreachable before the cleanup removes it
	// [5m].
	DeadServerAfter time.Duration
	// MinQuorum is the fewest voters the cleanup leaves [0: only the library's rule, never
	// more removals than keep a quorum].
	MinQuorum uint
	// UpdateInterval is how often server health is measured [ProbeInterval]; promotions
	// and the cleanup are decided every ReconcileInterval [2 × UpdateInterval].
	UpdateInterval, ReconcileInterval time.Duration
}

func (c *AutopilotConfig) defaults(heartbeat, probe time.Duration) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ServerStabilizationTime, 10*time.Second)
	def(&c.LastContactThreshold, heartbeat)
	def(&c.DeadServerAfter, 5*time.Minute)
	def(&c.UpdateInterval, probe)
	def(&c.ReconcileInterval, 2*c.UpdateInterval)
	if c.MaxTrailingLogs == 0 {
		c.MaxTrailingLogs = 250
	}
}

// MemberHealth is a member's health as the leader's autopilot last measured it.
type MemberHealth = api.MemberHealth

// AutopilotStatus is the cluster's health as the leader's autopilot sees it.
type AutopilotStatus = api.AutopilotStatus

// pilot is this node's autopilot, created at Open and running only while it leads.
type pilot struct {
	ap       *autopilot.Autopilot
	removing sync.Map // server id -> struct{}: a cleanup removal in flight
	running  atomic.Bool
}

func (n *Node) newPilot() *pilot {
	p := &pilot{}
	p.ap = autopilot.New(n.Raft, &apDelegate{n: n},
		autopilot.WithLogger(n.lg),
		autopilot.WithPromoter(&apPromoter{n: n}),
		autopilot.WithUpdateInterval(n.cfg.Autopilot.UpdateInterval),
		autopilot.WithReconcileInterval(n.cfg.Autopilot.ReconcileInterval))
	return p
}

// startAutopilot runs autopilot until the returned function is called; that function
// returns once autopilot has stopped (bounded: a Raft call in flight ends when this node
// loses leadership, and the wait gives up after MembershipTimeout).
func (n *Node) startAutopilot(ctx context.Context) func() {
	if n.pilot == nil {
		return func() {}
	}
	n.pilot.ap.Start(ctx)
	n.pilot.running.Store(true)
	return func() {
		n.pilot.running.Store(false)
		t := time.NewTimer(MembershipTimeout)
		defer t.Stop()
		select {
		case <-n.pilot.ap.Stop():
		case <-t.C:
			n.lg.Warn("autopilot did not stop within the membership timeout")
		}
	}
}

// autopilotState returns the leader's autopilot state, nil on other nodes.
func (n *Node) autopilotState() *autopilot.State {
	if n.pilot == nil || !n.pilot.running.Load() || n.Raft.State() != raft.Leader {
		return nil
	}
	st := n.pilot.ap.GetState()
	if st == nil || len(st.Servers) == 0 {
		return nil
	}
	return st
}

// apDelegate is autopilot's view of txcoord (autopilot.ApplicationIntegration).
type apDelegate struct{ n *Node }

func (d *apDelegate) AutopilotConfig() *autopilot.Config {
	c := d.n.cfg.Autopilot
	return &autopilot.Config{
		CleanupDeadServers:      c.CleanupDeadServers,
		LastContactThreshold:    c.LastContactThreshold,
		MaxTrailingLogs:         c.MaxTrailingLogs,
		MinQuorum:               c.MinQuorum,
		ServerStabilizationTime: c.ServerStabilizationTime,
	}
}

func (d *apDelegate) NotifyState(*autopilot.State) {}

// KnownServers is the Raft configuration, each server alive or failed as the peer monitor
// last saw it (this node: alive).
func (d *apDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	n := d.n
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	out := map[raft.ServerID]*autopilot.Server{}
	for _, s := range f.Configuration().Servers {
		status, _ := n.peerLiveness(string(s.ID))
		out[s.ID] = &autopilot.Server{ID: s.ID, Name: string(s.ID), Address: s.Address, NodeStatus: status,
			RaftVersion: raft.ProtocolVersionMax, IsLeader: string(s.ID) == n.cfg.NodeID, NodeType: autopilot.NodeVoter}
	}
	return out
}

// FetchServerStats probes every alive server in parallel, bounded by ctx.
func (d *apDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	n := d.n
	out := map[raft.ServerID]*autopilot.ServerStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, s := range servers {
		if string(id) == n.cfg.NodeID {
			term, _ := strconv.ParseUint(n.Raft.Stats()["last_log_term"], 10, 64)
			mu.Lock()
			out[id] = &autopilot.ServerStats{LastTerm: term, LastIndex: n.Raft.LastIndex()}
			mu.Unlock()
			continue
		}
		if n.probe == nil {
			continue
		}
		wg.Add(1)
		go func(id raft.ServerID, addr string) {
			defer wg.Done()
			timeout := n.cfg.Autopilot.UpdateInterval / 2
			if dl, ok := ctx.Deadline(); ok {
				timeout = max(time.Until(dl), time.Millisecond)
			}
			pi, err := n.probe(ctx, addr, timeout)
			if err != nil || pi.ID != string(id) || !pi.Ready {
				return
			}
			st := &autopilot.ServerStats{LastTerm: pi.LastLogTerm, LastIndex: pi.LastIndex, LastContact: -1}
			if pi.LastContactUs >= 0 {
				st.LastContact = time.Duration(pi.LastContactUs) * time.Microsecond
			}
			mu.Lock()
			out[id] = st
			mu.Unlock()
		}(id, string(s.Address))
	}
	wg.Wait()
	return out
}

// RemoveFailedServer removes a server the cleanup found dead, through Node.Remove, in the
// background (autopilot expects this call to return at once).
func (d *apDelegate) RemoveFailedServer(s *autopilot.Server) {
	n := d.n
	id := string(s.ID)
	if _, busy := n.pilot.removing.LoadOrStore(id, struct{}{}); busy {
		return
	}
	go func() {
		defer n.pilot.removing.Delete(id)
		_, down := n.peerLiveness(id)
		n.lg.Warn("autopilot: removing a dead server (--cleanup-dead-servers)", "id", id, "unreachable_for", down.Round(time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), membershipCallTimeout)
		defer cancel()
		if err := n.Remove(ctx, id); err != nil {
			n.lg.Warn("autopilot: removing a dead server failed", "id", id, "error", err)
		}
	}()
}

// apPromoter is the library's StablePromoter (every server a voter once stable), except
// that the cleanup removes only servers unreachable for DeadServerAfter, not every server
// the last probe missed.
type apPromoter struct {
	autopilot.StablePromoter
	n *Node
}

// FilterFailedServerRemovals keeps the failed servers that have been unreachable for at
// least DeadServerAfter.
func (p *apPromoter) FilterFailedServerRemovals(_ *autopilot.Config, _ *autopilot.State, failed *autopilot.FailedServers) *autopilot.FailedServers {
	keep := func(in []*autopilot.Server) []*autopilot.Server {
		var out []*autopilot.Server
		for _, s := range in {
			if _, down := p.n.peerLiveness(string(s.ID)); down >= p.n.cfg.Autopilot.DeadServerAfter {
				out = append(out, s)
			}
		}
		return out
	}
	return &autopilot.FailedServers{
		StaleNonVoters:  failed.StaleNonVoters,
		StaleVoters:     failed.StaleVoters,
		FailedNonVoters: keep(failed.FailedNonVoters),
		FailedVoters:    keep(failed.FailedVoters),
	}
}

// peerLiveness is the peer monitor's view of server id: alive when a probe was answered
// within the last three probe intervals (or the last contact threshold, if longer),
// failed after that, unknown before the first probe; down is how long the probes have
// gone unanswered (0 while alive).
func (n *Node) peerLiveness(id string) (status autopilot.NodeStatus, down time.Duration) {
	if id == n.cfg.NodeID {
		return autopilot.NodeAlive, 0
	}
	fresh := max(3*n.cfg.ProbeInterval, n.cfg.Autopilot.LastContactThreshold)
	n.peerMon.mu.Lock()
	e := n.peerMon.peers[id]
	var ok, first time.Time
	if e != nil {
		ok, first = e.okMono, e.firstMono
	}
	n.peerMon.mu.Unlock()
	switch {
	case e == nil:
		return autopilot.NodeUnknown, 0
	case !ok.IsZero() && time.Since(ok) <= fresh:
		return autopilot.NodeAlive, 0
	case ok.IsZero():
		return autopilot.NodeFailed, time.Since(first)
	default:
		return autopilot.NodeFailed, time.Since(ok)
	}
}

// memberHealth converts autopilot's view of one server. Lag is measured against the
// leader's last index of the same update, so that entries written since do not count.
func memberHealth(st *autopilot.State, id string) *MemberHealth {
	var leaderIndex uint64
	if l, ok := st.Servers[st.Leader]; ok {
		leaderIndex = l.Stats.LastIndex
	}
	s, ok := st.Servers[raft.ServerID(id)]
	if !ok {
		return nil
	}
	h := &MemberHealth{Healthy: s.Health.Healthy, Status: string(s.Server.NodeStatus), LastTerm: s.Stats.LastTerm, LastIndex: s.Stats.LastIndex}
	if !s.Health.StableSince.IsZero() {
		h.StableSince = s.Health.StableSince.UTC().Format(time.RFC3339Nano)
	}
	if s.Stats.LastContact > 0 {
		h.LastContactMs = ms(s.Stats.LastContact)
	} else if s.Stats.LastContact < 0 {
		h.LastContactMs = -1
	}
	if leaderIndex > s.Stats.LastIndex {
		h.Lag = leaderIndex - s.Stats.LastIndex
	}
	return h
}
