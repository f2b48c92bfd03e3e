// Package cluster owns the Raft side of a txcoord node: the log and stable store
// (raft-boltdb/v2, fsync on, behind a log cache), file snapshots, the TCP transport, static
// bootstrap, the leader loop and what forwarding needs to know about the leader.
//
// # The leader loop
//
// It follows Consul and Nomad (leader.go): leadership changes arrive on a buffered
// Config.NotifyCh; on gaining leadership the node establishes it: a Barrier so its FSM holds
// all that earlier leaders committed, its HTTP address recorded in the log, and the
// Config.CanLead check. Only then is it ready (LeaderReady) and runs the leader's work (the
// 2PC engine) under a context that is canceled the moment leadership is lost. The loop waits
// for that work to stop before it reacts to the next change, so the work never runs twice at
// once and a deposed node's work has stopped before anything else happens.
//
// # When establishment fails
//
// A node never stays a Raft leader that serves nothing. A failure after winning an election
// (the barrier, recording the address, or the leader's work returning while this node still
// leads) makes the node not ready and retry establishment after a capped exponential
// backoff with jitter (about 200 ms doubling to 5 s, each delay drawn from its upper half).
// After every third consecutive failure it hands leadership to the most up-to-date voter
// (raft.LeadershipTransfer), as Nomad does. A CanLead refusal does not retry: the node stops
// its work and transfers at once. When a transfer fails (no other voter, a transfer already
// in progress, or a timeout) the node stays leader, not ready, and goes on retrying (CanLead
// included) with the backoff, capped (at CanLeadInterval while CanLead refuses); it stops at once when leadership is lost or the Run
// context ends. A failure after the work had run for longer than the cap starts the count
// afresh. Readiness is false throughout, and it belongs to one term: a node that lost and
// regained leadership is not ready until it has established the new term.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/txcoord/txcoord/fsm"
)

// Peer is one member of the initial configuration: "id=raftaddr@httpaddr" on the command line.
type Peer struct {
	ID       string
	RaftAddr string // host:port
	HTTPAddr string // host:port or URL base, as clients and other nodes reach the node's API
}

// Config describes one node. Zero durations take the defaults in brackets.
type Config struct {
	NodeID   string
	RaftBind string // listen address for Raft traffic, host:port
	// RaftAdvertise is the address other nodes dial [RaftBind]; it must not be 0.0.0.0.
	RaftAdvertise string
	// HTTPAdvertise is this node's API address as other nodes reach it, "host:port".
	HTTPAdvertise string
	DataDir       string
	// Peers is the static initial configuration, including this node; every node must be
	// given the same list. A node with no Raft state first asks the listed peers
	// (bootstrap.go): if any has state or a leader it asks that cluster to add it and never
	// bootstraps; it bootstraps with exactly this list only once every listed peer answered
	// with no state. Empty means "do not bootstrap" (join an existing cluster).
	Peers []Peer
	// StaticBootstrapInterval is the pause between two rounds of asking the listed peers
	// [1s].
	StaticBootstrapInterval time.Duration

	// HeartbeatTimeout [1s], ElectionTimeout [1s] and LeaderLeaseTimeout [500ms] set how
	// fast a dead leader is replaced; see docs/failover.md for the trade-off.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// CommitTimeout [5ms] bounds how long a follower waits to learn a commit index when no
	// new entries arrive.
	CommitTimeout time.Duration
	// SnapshotThreshold [8192 entries], SnapshotInterval [10s] and TrailingLogs [10240]
	// bound the log: see hashicorp/raft Config.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// MaxAppendEntries [256] is the largest batch one AppendEntries carries and, with
	// BatchApplyCh, the largest batch one fsync covers.
	MaxAppendEntries int

	// CanLead, when set, is asked whether this node may lead. It is called during
	// establishment (after the barrier and the address, before the node is ready) and every
	// CanLeadInterval while it leads, always from the leader loop, never concurrently with
	// itself. It must return quickly; it may read the Node (Node.CheckClock is the intended
	// guard, set as a closure once Open has returned) but must not wait on the leader loop
	// (Run, Close, TransferLeadership) or on Raft writes. A nil error means
	// "may lead". An error makes the node log it (warn, with the reason), become not ready,
	// cancel the leader's work and wait for it to return, and step down with a leadership
	// transfer; if the transfer fails the node keeps checking, retrying the transfer while
	// CanLead refuses. nil: the node may always lead.
	CanLead func() error
	// CanLeadInterval [1s] is how often CanLead is asked while this node leads.
	CanLeadInterval time.Duration

	// Transport replaces the transport Open builds (NewTransport on RaftBind): a TLS one
	// (NewTLSTransport), or a test's. Open closes it when Raft shuts down.
	Transport raft.Transport
	// WrapLogStore, when set, wraps the log store (tests inject storage faults with it; the
	// wrapper may implement WriteProber). Whatever it returns is itself wrapped so that a
	// failed write is marked ErrStorage and keeps this node out of elections until writes
	// work again.
	WrapLogStore func(raft.LogStore) raft.LogStore
	// StorageProbeInterval is how often a node whose log writes failed tries a write, to
	// learn that the storage works again [1s].
	StorageProbeInterval time.Duration
	// InMemory keeps the log, stable store and snapshots in memory (tests only: not durable).
	InMemory bool
	Logger   hclog.Logger

	// Clock is the wall clock [time.Now]; tests inject an offset one. Its readings are what
	// this node answers peers' probes with.
	Clock func() time.Time
	// ProbeInterval is how often this node probes every other server for its build and its
	// clock [1s].
	ProbeInterval time.Duration
	// MaxClockOffset is the largest wall-clock offset from the cluster this node tolerates
	// [500ms; negative: no check]. Past half of it the node warns; past it, it refuses to
	// lead (see CheckClock and docs/failover.md).
	MaxClockOffset time.Duration
	// Archiver, when set, receives the records Prune entries remove (fsm.Archiver; the
	// node's history, package archive). It is attached before Raft restores or replays
	// anything.
	Archiver fsm.Archiver
	// Autopilot tunes how joined servers are promoted and dead ones cleaned up (autopilot.go).
	Autopilot AutopilotConfig

	// Probe replaces how a peer's PeerInfo is fetched (tests on raft's in-memory transport);
	// by default the discovery protocol on the Raft port.
	Probe func(ctx context.Context, raftAddr string, timeout time.Duration) (PeerInfo, error)
}

func (c *Config) defaults() error {
	if c.NodeID == "" {
		return errors.New("node id is required")
	}
	if c.Transport == nil && c.RaftBind == "" {
		return errors.New("raft address is required")
	}
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftBind
	}
	if !c.InMemory && c.DataDir == "" {
		return errors.New("data dir is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	def(&c.LeaderLeaseTimeout, 500*time.Millisecond)
	def(&c.CommitTimeout, 5*time.Millisecond)
	def(&c.CanLeadInterval, time.Second)
	// Raft checks the threshold only this often; at 1,500 transactions/s a 30 s check let the
	// log run to ten times the threshold between snapshots.
	def(&c.SnapshotInterval, 10*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.MaxAppendEntries <= 0 {
		c.MaxAppendEntries = 256
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	def(&c.ProbeInterval, time.Second)
	def(&c.StaticBootstrapInterval, staticInterval)
	c.Autopilot.defaults(c.HeartbeatTimeout, c.ProbeInterval)
	def(&c.StorageProbeInterval, time.Second)
	if c.MaxClockOffset == 0 {
		c.MaxClockOffset = 500 * time.Millisecond
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if p.ID == "" || p.RaftAddr == "" {
			return fmt.Errorf("peer %+v: id and raft address are required", p)
		}
		if seen[p.ID] {
			return fmt.Errorf("peer id %q appears twice", p.ID)
		}
		seen[p.ID] = true
	}
	if len(c.Peers) > 0 && !seen[c.NodeID] {
		return fmt.Errorf("peer list does not include this node %q", c.NodeID)
	}
	return nil
}

// Node is one running Raft member with its FSM.
type Node struct {
	cfg   Config
	Raft  *raft.Raft
	FSM   *fsm.FSM
	lg    hclog.Logger
	peers map[string]Peer

	notify  chan bool
	closers []func() error
	snaps   raft.SnapshotStore

	mu        sync.Mutex
	ready     bool   // leader established: barrier done and engine running
	readyTerm uint64 // the term ready was established in
	leadWG    sync.WaitGroup
	stop      chan struct{}
	done      chan struct{}
	runs      atomic.Bool

	steps  leaderSteps  // the establishment steps; tests inject faults here
	policy leaderPolicy // retry and backoff of a failed establishment

	probe        func(ctx context.Context, raftAddr string, timeout time.Duration) (PeerInfo, error)
	peerMon      peerMonitor
	clockState   int    // peer monitor goroutine only: 0 fine, 1 warned, 2 beyond the limit
	loggedBehind string // peer monitor goroutine only: the servers last logged as behind
	halted       chan struct{}
	closeMu      sync.Mutex
	logClockMu   sync.Mutex
	logClock     logClockSample
	haltErr      atomic.Pointer[fsm.HaltError]
	pilot        *pilot
	bootstrapped atomic.Bool                                              // this process bootstrapped a static configuration
	dial         func(ctx context.Context, addr string) (net.Conn, error) // the discovery protocol's dialer, nil on test transports
	storage      storageHealth
	// closeTransport closes the transport Open built (nil for Config.Transport); once.
	closeTransport func() error
}

// Open creates or reopens a node's stores, starts Raft and, for a node without state that
// was given Peers, bootstraps the cluster. It does not start the leader loop: call Run.
func Open(cfg Config) (*Node, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, FSM: fsm.New(), lg: cfg.Logger, peers: map[string]Peer{}, notify: make(chan bool, 64), stop: make(chan struct{}), done: make(chan struct{}),
		peerMon: peerMonitor{peers: map[string]*peerEntry{}}, halted: make(chan struct{}),
		storage: storageHealth{kick: make(chan struct{}, 1)}}
	n.FSM.OnHalt(n.onHalt)
	if cfg.Archiver != nil {
		n.FSM.SetArchiver(cfg.Archiver)
	}
	// A node whose clock is off the cluster's must not lead (its clock fixes deadlines and
	// retention cut-offs); the operator's own check, if any, comes after.
	user := cfg.CanLead
	n.cfg.CanLead = func() error {
		if err := n.storageGuard(); err != nil {
			return err
		}
		if err := n.clockGuard(); err != nil {
			return err
		}
		if user != nil {
			return user()
		}
		return nil
	}
	for _, p := range cfg.Peers {
		n.peers[p.ID] = p
	}
	n.steps = n.defaultSteps()
	n.policy = defaultPolicy
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notify
	rc.Logger = cfg.Logger.Named("raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		s := raft.NewInmemStore()
		logs, stable, snaps = s, s, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if err := checkDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path: filepath.Join(cfg.DataDir, "raft.db"),
			// Every commit still fsyncs (durability); skipping the freelist write and
			// using the hashmap freelist make each commit cheaper, as Consul does. The
			// freelist is rebuilt by a scan when the file is opened.
			BoltOptions: &bbolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
		})
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("data dir %s is in use by another process (raft.db stayed locked for 5 s): is another txcoord running on it?", cfg.DataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("opening raft.db: %w", err)
		}
		n.closers = append(n.closers, bolt.Close)
		cached, err := raft.NewLogCache(1024, bolt)
		if err != nil {
			n.closeStores()
			return nil, err
		}
		fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, cfg.Logger.Named("snapshot"))
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("snapshot store: %w", err)
		}
		logs, stable, snaps = cached, bolt, fss
	}

	if cfg.WrapLogStore != nil {
		logs = cfg.WrapLogStore(logs)
	}
	n.storage.probe = storageProbe(logs, stable)
	logs = &guardedLogs{LogStore: logs, failed: n.storageFailed}

	trans := cfg.Transport
	var disc *Discovery // answers probes as "starting" until attached once Raft runs
	if trans == nil {
		// The transport serve uses (discovery shares the Raft port), so that every node,
		// also one a test starts, answers its peers' probes.
		tr, err := NewTransport(cfg.RaftBind, cfg.RaftAdvertise, cfg.Logger.Named("transport"))
		if err != nil {
			n.closeStores()
			return nil, err
		}
		disc = NewDiscovery(tr, cfg.NodeID, cfg.HTTPAdvertise, DiscoveryConfig{Logger: cfg.Logger})
		n.closers = append([]func() error{tr.Close}, n.closers...)
		n.closeTransport = sync.OnceValue(tr.Close)
		n.closers[0] = n.closeTransport
		trans = tr
	}
	if c, ok := trans.(raft.WithClose); ok && n.closeTransport == nil {
		// A transport the caller gave: Raft closes it at the end of Shutdown anyway, so
		// closing it earlier to unblock a stuck shutdown (see close) changes nothing else.
		n.closeTransport = sync.OnceValue(c.Close)
	}
	n.snaps = snaps
	n.probe = cfg.Probe
	if tr, ok := trans.(*Transport); ok {
		if disc == nil && !tr.Stream.hasDiscoveryHandler() {
			// A transport given without a responder (a test's TLS transport): the peers'
			// probes, the static bootstrap's questions and joins must still be answered.
			disc = NewDiscovery(tr, cfg.NodeID, cfg.HTTPAdvertise, DiscoveryConfig{Logger: cfg.Logger})
		}
		n.dial = tr.Stream.DialContext
		if n.probe == nil {
			n.probe = func(ctx context.Context, addr string, timeout time.Duration) (PeerInfo, error) {
				return probeWith(ctx, tr.Stream.DialContext, addr, timeout)
			}
		}
	}
	n.cfg.RaftAdvertise = string(trans.LocalAddr())
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("reading raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, n.FSM, logs, stable, snaps, trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	n.Raft = r
	n.pilot = n.newPilot()
	if disc != nil {
		disc.Attach(n)
	}
	switch {
	case existing || len(cfg.Peers) == 0:
	case n.probe == nil:
		// A test transport without Config.Probe cannot ask the peers: bootstrap with the
		// list at once, as every node of such a test cluster is started empty.
		if err := n.bootstrapStatic(); err != nil {
			_ = r.Shutdown().Error()
			n.closeStores()
			return nil, err
		}
	default:
		n.lg.Info("no raft state: asking the listed peers whether a cluster exists before bootstrapping", "peers", len(cfg.Peers))
		go n.formStatic()
	}
	go n.runPeerMonitor()
	go n.runStorageMonitor(n.cfg.StorageProbeInterval)
	return n, nil
}

func (n *Node) closeStores() {
	for _, c := range n.closers {
		_ = c()
	}
	n.closers = nil
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// HTTPAdvertise returns this node's API address as configured.
func (n *Node) HTTPAdvertise() string { return n.cfg.HTTPAdvertise }

// Apply encodes cmd, proposes it and waits until it is committed and applied locally. It
// returns the FSM's Result, or an error wrapping raft.ErrNotLeader,
// raft.ErrLeadershipTransferInProgress (nothing written), raft.ErrLeadershipLost (unknown:
// the entry may still commit under the next leader, hashicorp/raft#561) or
// raft.ErrRaftShutdown; or ErrFeatureUnavailable, with nothing written, for a command type
// whose feature level the cluster has not enabled (fsm.RequiredLevel). ctx bounds only the
// wait to enqueue.
func (n *Node) Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	if need := fsm.RequiredLevel(cmd.Type()); need > n.FSM.FeatureLevel() {
		return fsm.Result{}, n.FeatureError(need, fmt.Sprintf("command type %d", cmd.Type()))
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	f := n.Raft.Apply(fsm.Encode(cmd), timeout)
	if err := f.Error(); err != nil {
		return fsm.Result{}, err
	}
	res, _ := f.Response().(fsm.Result)
	return res, nil
}

// Leader returns the current leader's id and HTTP address as known here; empty when no
// leader is known. The HTTP address comes from the log (SetMember) or, before that is
// replicated, from the static peer list.
func (n *Node) Leader() (id, httpAddr string) {
	_, lid := n.Raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	id = string(lid)
	if addr, ok := n.FSM.Members()[id]; ok {
		return id, addr
	}
	return id, n.peers[id].HTTPAddr
}

// LeaderID returns the id of the leader this node knows, "" when it knows none.
func (n *Node) LeaderID() string {
	_, id := n.Raft.LeaderWithID()
	return string(id)
}

// Kill stops the node as a crash would, for tests: no leadership transfer, the leader's
// work canceled, Raft shut down and the stores closed.
func (n *Node) Kill() error {
	return n.close(false)
}

// Close stops the leader loop, hands leadership to another voter when this node leads (so
// in-flight transactions continue there at once), shuts Raft down and closes the stores.
func (n *Node) Close() error {
	return n.close(true)
}

func (n *Node) close(transfer bool) error {
	n.closeMu.Lock() // a halt (onHalt) and the owner may both stop the node
	defer n.closeMu.Unlock()
	if transfer && n.Raft.State() == raft.Leader {
		if err := n.Raft.LeadershipTransfer().Error(); err != nil {
			n.lg.Warn("leadership transfer on shutdown failed", "error", err)
		}
	}
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	if n.runs.Load() {
		<-n.done // the leader's work has stopped before Raft goes away
	}
	// Raft's shutdown waits for its replication goroutines. One blocked sending to a peer
	// that is shutting down too (its transport still accepts but its Raft no longer reads:
	// two nodes stopped at once, both still sending) waits until that peer's transport
	// closes, and the peer's may wait on ours: so after a grace period the transport is
	// closed, which fails those sends and lets both shutdowns finish. A send that still does
	// not return (seen under load: a replication goroutine parked for good) must not keep
	// an operator's stop waiting forever: past shutdownAbandon the shutdown is abandoned,
	// logged, and the stores closed under the parked goroutine (which then fails its reads
	// and exits; nothing more is written, as the main loop has stopped).
	shut := make(chan error, 1)
	go func() { shut <- n.Raft.Shutdown().Error() }()
	var err error
	select {
	case err = <-shut:
	case <-time.After(shutdownGrace):
		if n.closeTransport != nil {
			n.lg.Warn("raft shutdown is slow; closing the transport to unblock it", "after", shutdownGrace)
			_ = n.closeTransport()
		}
		select {
		case err = <-shut:
		case <-time.After(shutdownAbandon):
			n.lg.Error("raft shutdown did not finish: abandoning it and closing the stores", "after", shutdownGrace+shutdownAbandon)
			err = ErrShutdownAbandoned
		}
	}
	n.closeStoresWithin(shutdownGrace)
	return err
}

// closeStoresWithin closes the stores, giving up after d (a bolt Close waits for open
// transactions, which a goroutine of an abandoned shutdown may hold).
func (n *Node) closeStoresWithin(d time.Duration) {
	done := make(chan struct{})
	go func() { defer close(done); n.closeStores() }()
	select {
	case <-done:
	case <-time.After(d):
		n.lg.Error("closing the stores is stuck; leaving them", "after", d)
	}
}

// ErrShutdownAbandoned is returned by Close and Kill when Raft's shutdown did not finish
// within shutdownGrace+shutdownAbandon even after the transport was closed: the node has
// stopped taking part (its main loop is gone and its stores are closed), but a Raft
// goroutine was left parked.
var ErrShutdownAbandoned = errors.New("raft shutdown did not finish in time: abandoned")

// shutdownAbandon is how long Raft may take to finish shutting down once the transport is
// closed: the transport's RPC timeout (10 s, NewTransport), by which every send bounded
// by its deadline has failed.
const shutdownAbandon = 10 * time.Second

// shutdownGrace is how long Raft may take to shut down before the transport is closed under
// it (see close).
const shutdownGrace = 2 * time.Second
