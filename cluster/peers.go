package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/version"
)

// The peer monitor: every node probes every other server of the Raft configuration once a
// ProbeInterval, over the discovery protocol on the Raft port (op "info"). Each answer gives
// the peer's build (version and feature level, which gate new command types: Nomad learns
// the same from its servers' gossip tags) and its wall clock, from which this node estimates
// the peer's clock offset the way NTP does (the peer's time minus the midpoint of the round
// trip). Builds before version reporting answer without these fields: they count as
// feature level 0 and give no clock reading.

// ErrFeatureUnavailable is returned by Apply for a command whose feature level the cluster
// has not enabled yet (some server runs an earlier build).
var ErrFeatureUnavailable = errors.New("feature not enabled in this cluster yet")

// ErrFeaturePending is returned by FeatureError while this node cannot yet tell whether a
// feature level is enabled: it is still replaying the log after a restart, or no peer is
// known to run an earlier build (the level is being raised, or this node has not applied
// the entry that raised it). A transient condition: ask again in a moment.
var ErrFeaturePending = errors.New("feature level not known on this node yet")

// ErrClockOffset is returned by the clock check when this node's wall clock is further
// than MaxClockOffset from a majority of the cluster's.
var ErrClockOffset = errors.New("wall clock offset beyond --max-clock-offset")

// PeerStatus is what this node last learnt from one other server.
type PeerStatus struct {
	ID       string
	RaftAddr string
	// Reached: the peer answered at least once; the fields below are from its last answer.
	Reached      bool
	Version      string // "" for a build before version reporting
	FeatureLevel uint32 // highest level its build supports (0 for such builds)
	// ClockKnown: Offset and RTT are from an answer within the last few intervals.
	ClockKnown bool
	Offset     time.Duration // the peer's clock minus this node's
	RTT        time.Duration // round trip of that probe; Offset is uncertain by RTT/2
	LastSeen   time.Time     // this node's clock at that answer
	Error      string        // last probe error, "" after a success
}

type peerEntry struct {
	PeerStatus
	seenMono  time.Time // monotonic time of the last clock reading
	okMono    time.Time // monotonic time of the last answer
	firstMono time.Time // monotonic time of the first probe at this address
	httpAddr  string    // the HTTP address the peer last advertised
	log       peerLog   // the peer's Raft log as it last answered (stall.go)
}

type peerMonitor struct {
	mu    sync.Mutex
	peers map[string]*peerEntry
}

// probeFunc asks the server at addr for its PeerInfo.
type probeFunc func(ctx context.Context, addr string) (PeerInfo, error)

func (n *Node) now() time.Time { return n.cfg.Clock() }

// runPeerMonitor probes the other servers until the node stops.
func (n *Node) runPeerMonitor() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-n.stop
		cancel()
	}()
	t := time.NewTicker(n.cfg.ProbeInterval)
	defer t.Stop()
	for {
		n.sampleLogClock()
		if n.probe != nil {
			n.probeRound(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeRound probes every other server once, in parallel, then acts on what it learnt:
// the clock warning, and on the leader the feature level.
func (n *Node) probeRound(ctx context.Context) {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	n.probeAll(ctx, servers)
	n.peerMon.forget(servers)
	n.checkClock()
	if n.LeaderReady() {
		n.raiseFeatureLevel(ctx, servers)
		n.recordAdvertisedAddrs(ctx, servers)
		n.repairStalledFollowers()
	}
}

// recordAdvertisedAddrs (the leader only) records in the log the HTTP address each member
// advertised in its last answer, when the log holds none or another: members that formed
// the cluster together (discovery's bootstrap, --peers without HTTP addresses) never
// joined through Node.Join, and a member restarted with a new --http-advertise says so.
func (n *Node) recordAdvertisedAddrs(ctx context.Context, servers []raft.Server) {
	inConf := map[string]bool{}
	for _, s := range servers {
		inConf[string(s.ID)] = true
	}
	have := n.FSM.Members()
	var todo [][2]string
	n.peerMon.mu.Lock()
	for id, e := range n.peerMon.peers {
		if inConf[id] && e.Error == "" && e.httpAddr != "" && have[id] != e.httpAddr {
			todo = append(todo, [2]string{id, e.httpAddr})
		}
	}
	n.peerMon.mu.Unlock()
	for _, t := range todo {
		if err := n.recordMember(ctx, t[0], t[1]); err != nil {
			n.lg.Warn("recording a member's HTTP address failed", "id", t[0], "http", t[1], "error", err)
			return
		}
		n.lg.Info("recorded a member's HTTP address", "id", t[0], "http", t[1])
	}
}

// probeAll probes every server but this one, in parallel, and returns when all answered
// or timed out.
func (n *Node) probeAll(ctx context.Context, servers []raft.Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			n.probeOne(ctx, id, addr)
		}(string(s.ID), string(s.Address))
	}
	wg.Wait()
}

func (n *Node) probeOne(ctx context.Context, id, addr string) {
	timeout := n.cfg.ProbeInterval
	start := time.Now()
	sent := n.now()
	info, err := n.probe(ctx, addr, timeout)
	rtt := time.Since(start)
	n.peerMon.mu.Lock()
	defer n.peerMon.mu.Unlock()
	e := n.peerMon.peers[id]
	if e == nil || e.RaftAddr != addr {
		e = &peerEntry{PeerStatus: PeerStatus{ID: id, RaftAddr: addr}, firstMono: start}
		n.peerMon.peers[id] = e
	}
	if err != nil {
		e.Error = err.Error()
		return
	}
	if info.ID != "" && info.ID != id {
		e.Error = fmt.Sprintf("%s answers as %q", addr, info.ID)
		return
	}
	e.Error = ""
	e.okMono, e.httpAddr = time.Now(), info.HTTPAddr
	e.log.observe(info, e.okMono)
	e.Reached, e.Version, e.FeatureLevel = true, info.Version, info.FeatureLevel
	if info.TimeUnixMicro != 0 {
		mid := sent.Add(rtt / 2)
		e.Offset = time.UnixMicro(info.TimeUnixMicro).Sub(mid)
		e.RTT, e.LastSeen, e.seenMono = rtt, n.now(), time.Now()
	}
}

func (m *peerMonitor) forget(servers []raft.Server) {
	keep := map[string]bool{}
	for _, s := range servers {
		keep[string(s.ID)] = true
	}
	m.mu.Lock()
	for id := range m.peers {
		if !keep[id] {
			delete(m.peers, id)
		}
	}
	m.mu.Unlock()
}

// Peers returns what this node last learnt of every other server, ordered by id.
func (n *Node) Peers() []PeerStatus {
	fresh := 5 * n.cfg.ProbeInterval
	n.peerMon.mu.Lock()
	out := make([]PeerStatus, 0, len(n.peerMon.peers))
	for _, e := range n.peerMon.peers {
		ps := e.PeerStatus
		ps.ClockKnown = !e.seenMono.IsZero() && time.Since(e.seenMono) <= fresh
		out = append(out, ps)
	}
	n.peerMon.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ClockOffset estimates this node's wall-clock offset from the cluster: the median of 0
// (itself) and the offsets it measured to the other servers, negated (a peer that reads
// ahead of this node means this node is behind). peers is how many readings it used; with
// none the estimate is 0.
func (n *Node) ClockOffset() (offset time.Duration, peers int) {
	offs := []time.Duration{0}
	for _, p := range n.Peers() {
		if p.ClockKnown {
			offs = append(offs, -p.Offset)
		}
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	return offs[len(offs)/2], len(offs) - 1
}

// LeaderClockOffset returns this node's clock minus the leader's as last measured, and
// whether a fresh reading exists (false on the leader itself).
func (n *Node) LeaderClockOffset() (time.Duration, bool) {
	_, lid := n.Raft.LeaderWithID()
	for _, p := range n.Peers() {
		if p.ID == string(lid) && p.ClockKnown {
			return -p.Offset, true
		}
	}
	return 0, false
}

// CheckClock returns an error wrapping ErrClockOffset when this node's clock is off by more
// than MaxClockOffset from a majority of the servers: more than half of them (this node
// counting as one that agrees with itself) read, beyond the uncertainty of the measurement
// (half the round trip), further than MaxClockOffset from this node's clock. This is
// CockroachDB's rule: a node cannot tell whether its own clock or one peer's is wrong, but
// it can tell when it disagrees with most. A node that leads uses this node's clock for
// every deadline and retention cut-off, so such a node must not lead.
func (n *Node) CheckClock() error {
	max := n.cfg.MaxClockOffset
	if max <= 0 {
		return nil
	}
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	total := len(f.Configuration().Servers)
	var far []string
	for _, p := range n.Peers() {
		if p.ClockKnown && absDur(p.Offset)-p.RTT/2 > max {
			far = append(far, fmt.Sprintf("%s %+v", p.ID, p.Offset.Round(time.Millisecond)))
		}
	}
	if len(far) > total/2 {
		off, _ := n.ClockOffset()
		return fmt.Errorf("%w (%s): this node's clock is %v off the cluster's (peers read: %s)", ErrClockOffset, max, off.Round(time.Millisecond), strings.Join(far, ", "))
	}
	return nil
}

// clockGuard is CheckClock for the leader loop (Config.CanLead). A node that has no fresh
// clock reading of any peer yet (a cluster that has just started) probes them first, once,
// bounded by ProbeInterval, so that it cannot take leadership before its clock was checked.
func (n *Node) clockGuard() error {
	if n.cfg.MaxClockOffset <= 0 || n.probe == nil {
		return nil
	}
	fresh := false
	for _, p := range n.Peers() {
		fresh = fresh || p.ClockKnown
	}
	if !fresh {
		if f := n.Raft.GetConfiguration(); f.Error() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ProbeInterval)
			n.probeAll(ctx, f.Configuration().Servers)
			cancel()
		}
	}
	return n.CheckClock()
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// checkClock logs when this node's offset crosses half of MaxClockOffset (a warning) and
// when it is beyond it (an error: the node will not lead).
func (n *Node) checkClock() {
	if n.cfg.MaxClockOffset <= 0 {
		return
	}
	off, peers := n.ClockOffset()
	state := 0
	switch {
	case n.CheckClock() != nil:
		state = 2
	case absDur(off) > n.cfg.MaxClockOffset/2:
		state = 1
	}
	if state == n.clockState {
		return
	}
	n.clockState = state
	switch state {
	case 2:
		n.lg.Error("wall clock offset beyond --max-clock-offset: this node will not lead until it is fixed", "offset", off, "max", n.cfg.MaxClockOffset, "peers", peers)
	case 1:
		n.lg.Warn("wall clock offset past half of --max-clock-offset: check NTP on this host", "offset", off, "max", n.cfg.MaxClockOffset, "peers", peers)
	default:
		n.lg.Info("wall clock offset back within tolerance", "offset", off, "max", n.cfg.MaxClockOffset)
	}
}

// raiseFeatureLevel logs SetFeatures once every server of the configuration advertises a
// higher level than the cluster has (the leader only). A server never reached counts as 0.
func (n *Node) raiseFeatureLevel(ctx context.Context, servers []raft.Server) {
	have := n.FSM.FeatureLevel()
	if have >= version.FeatureLevel {
		return
	}
	level := version.FeatureLevel
	known := map[string]PeerStatus{}
	for _, p := range n.Peers() {
		known[p.ID] = p
	}
	var behind []string
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		p := known[string(s.ID)]
		if !p.Reached || p.FeatureLevel < version.FeatureLevel {
			level = min(level, p.FeatureLevel)
			behind = append(behind, string(s.ID))
		}
	}
	if level <= have {
		if b := strings.Join(behind, ","); b != n.loggedBehind {
			n.loggedBehind = b // log each change of who holds the level back, not every second
			n.lg.Info("new command types wait for every server to run a build that supports them", "cluster_level", have, "this_build", version.FeatureLevel, "behind", b)
		}
		return
	}
	if _, err := n.Apply(ctx, &fsm.SetFeatures{Level: level, At: n.now().UnixMilli()}); err != nil {
		n.lg.Warn("raising the cluster's feature level failed", "level", level, "error", err)
		return
	}
	n.lg.Info("cluster feature level raised: every server runs a build that supports it", "level", level, "servers", len(servers))
}

// FeatureError describes why a feature is not available yet, naming the servers that hold
// it back. It wraps ErrFeatureUnavailable.
func (n *Node) FeatureError(need uint32, what string) error {
	have := n.FSM.FeatureLevel()
	if have >= need {
		return nil
	}
	var behind []string
	knownBehind := need > version.FeatureLevel
	if knownBehind {
		behind = append(behind, n.cfg.NodeID+" ("+version.Version+")")
	}
	for _, p := range n.Peers() {
		knownBehind = knownBehind || p.Reached && p.FeatureLevel < need
		if !p.Reached || p.FeatureLevel < need {
			v := p.Version
			if v == "" {
				v = "an earlier build"
			}
			behind = append(behind, p.ID+" ("+v+")")
		}
	}
	if !knownBehind || !n.Ready() {
		// A restarted node replaying its log, or one whose peers all advertise the level:
		// what it has applied says nothing yet about the cluster (a 409 would look final).
		return fmt.Errorf("%w: %s needs feature level %d; this node has applied %d and is still catching up or learning its peers' builds", ErrFeaturePending, what, need, have)
	}
	detail := "the upgrade is in progress"
	if len(behind) > 0 {
		detail = "servers on an earlier build: " + strings.Join(behind, ", ")
	}
	return fmt.Errorf("%w: %s needs feature level %d, the cluster has %d (%s); it is enabled once every server runs a build that supports it", ErrFeatureUnavailable, what, need, have, detail)
}

// logClockSample pairs the log's clock (fsm.LastTimestamp, unix ms) with the monotonic time
// this node first saw that value.
type logClockSample struct {
	ts   int64
	mono time.Time
}

func (n *Node) sampleLogClock() {
	ts := n.FSM.LastTimestamp()
	n.logClockMu.Lock()
	if ts != n.logClock.ts {
		n.logClock = logClockSample{ts: ts, mono: time.Now()}
	}
	n.logClockMu.Unlock()
}

// ClockBound returns the latest wall-clock time the log vouches for: the newest timestamp
// in the log, plus the time elapsed since this node saw it (on the monotonic clock, which
// no clock step moves), plus MaxClockOffset. A wall clock past it has jumped ahead of the
// log. ok is false while the log carries no timestamp yet. Retention never prunes past it.
func (n *Node) ClockBound() (bound time.Time, ok bool) {
	n.sampleLogClock()
	n.logClockMu.Lock()
	s := n.logClock
	n.logClockMu.Unlock()
	if s.ts == 0 {
		return time.Time{}, false
	}
	tol := max(n.cfg.MaxClockOffset, 0)
	return time.UnixMilli(s.ts).Add(time.Since(s.mono) + tol), true
}

// ErrBuildTooOld wraps the refusal to add a server whose build supports a lower feature
// level than the cluster has enabled: it would halt at the first entry it cannot apply.
var ErrBuildTooOld = errors.New("build too old for this cluster")

// checkJoiner refuses a new server whose build cannot apply this cluster's log. It asks the
// server itself (discovery "info" on its Raft port); one that cannot be reached, or answers
// without a feature level, is refused only once the cluster has enabled a level above 0.
func (n *Node) checkJoiner(ctx context.Context, raftAddr string) error {
	have := n.FSM.FeatureLevel()
	if have == 0 || n.probe == nil {
		return nil
	}
	pi, err := n.probe(ctx, raftAddr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%w: cannot ask %s which build it runs (%v); the cluster runs feature level %d", ErrBuildTooOld, raftAddr, err, have)
	}
	if pi.FeatureLevel < have {
		v := pi.Version
		if v == "" {
			v = "a build before feature levels"
		}
		return fmt.Errorf("%w: %s runs %s (feature level %d); this cluster has enabled level %d: run txcoord %s or later there",
			ErrBuildTooOld, raftAddr, v, pi.FeatureLevel, have, version.Version)
	}
	return nil
}
