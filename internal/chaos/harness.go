// Package chaos is txcoord's process-level chaos harness (issue 4, item 5). It builds the
// txcoord binary once, starts N coordinator processes (`txcoord serve`) and the three demo
// participants (`txcoord participant`) on loopback, each with its own data directory and
// log file, drives bounded concurrent load through the HTTP API with an Idempotency-Key per
// logical request, and on a printed seed injects faults: SIGKILL of the leader (restarted
// after a short downtime), SIGKILL of followers, SIGSTOP of the leader for longer than the
// election timeout, SIGKILL of every node at once, graceful leader shutdown, network
// partitions (with Config.Partitions: the leader or a follower cut from every other node's
// Raft traffic through a TCP proxy per node, netsplit.go, then healed), and slow or
// failing participants (NACKs, delays, HTTP 500s, dropped connections through the demo's
// POST /control). Then it restores everything, waits for quiet and checks every oracle of
// ../shared/cases/README.md (O1-O5), the atomicity checker, and that every definite client
// answer agrees with the final state; it prints a report and, on any violation, the tail
// of every process's log and the seed.
//
// Everything is bounded: the fault phase lasts Config.Duration, the quiet wait
// Config.QuietTimeout, every client request Config.MaxRequestTime; every process runs in
// its own process group and is SIGKILLed when Run returns (also on panic).
//
// The tests in this package run only when TXCOORD_CHAOS (or TXCOORD_C04) is set; see
// chaos_test.go and scripts/chaos.sh.
package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/txcoord/txcoord/internal/loopback"
)

// Config configures a chaos run. Zero values take the defaults in brackets.
type Config struct {
	Nodes    int           // coordinator processes [3]
	Duration time.Duration // load and fault phase [2m]
	Seed     uint64        // seed of every random choice [1]

	Clients        int           // concurrent clients [8]
	Rate           float64       // logical requests started per second, all clients together [60]
	TxnTimeout     time.Duration // phase-one timeout sent with each transaction [2s]
	MaxRequestTime time.Duration // retry budget of one logical request [60s]

	HeartbeatTimeout  time.Duration // --heartbeat-timeout [300ms]
	ElectionTimeout   time.Duration // --election-timeout [300ms]
	LeaderLease       time.Duration // --leader-lease-timeout [150ms]
	SnapshotThreshold uint64        // --snapshot-threshold [2048], low so snapshots happen
	NodeLogLevel      string        // --log-level [info]
	ExtraServeArgs    []string      // more `txcoord serve` flags

	FaultGapMin, FaultGapMax time.Duration // pause between faults [500ms, 2s]
	DowntimeMin, DowntimeMax time.Duration // how long a killed node stays down [200ms, 1s]
	MinLeaderKills           int           // force leader kills to reach at least this many [0]
	// Partitions puts a TCP proxy in front of every node's Raft port (netsplit.go) and adds
	// network partitions to the fault schedule: the leader (or a follower) is cut from every
	// other node's Raft traffic, both ways, for 2-8 election timeouts, then healed.
	Partitions          bool
	MinPartitions       int  // with Partitions, force partitions to reach at least this many [0]
	NoFaults            bool // load only (a baseline)
	NoParticipantFaults bool // no participant knobs
	// Mode is the "mode" of every transaction: "" (the server's default) or "fast" (issue
	// 17: Prepare before anything is logged; the demo participants inquire). In fast mode a
	// participant may get a Prepare or a Rollback for a transaction no node has a record of
	// (its leader died before logging it), never a Commit; O1 checks that instead.
	Mode string

	QuietTimeout time.Duration // bound on the wait for quiet after the faults [90s]
	PollInterval time.Duration // leader monitor's poll interval [50ms]

	// PerTxnRateBound bounds the requests one participant may get for one transaction
	// within any 1-second window [15]; PerSecondBound the requests one participant may get
	// in one second [max(300, 10 x Rate)]. See README.md for why.
	PerTxnRateBound, PerSecondBound int

	Dir string // working directory ["": a new temporary directory, removed unless the run fails]
	Bin string // txcoord binary ["": BuildBinary]
	// NodeBin is the binary the coordinator nodes start with ["": Bin]; the participants
	// always run Bin (a rolling upgrade starts the nodes on an older build).
	NodeBin string
	Out     io.Writer // progress and report [os.Stdout]
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Nodes <= 0 {
		c.Nodes = 3
	}
	set(&c.Duration, 2*time.Minute)
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.Rate <= 0 {
		c.Rate = 60
	}
	set(&c.TxnTimeout, 2*time.Second)
	set(&c.MaxRequestTime, 60*time.Second)
	set(&c.HeartbeatTimeout, loopback.HeartbeatTimeout)
	set(&c.ElectionTimeout, loopback.ElectionTimeout)
	set(&c.LeaderLease, loopback.LeaderLeaseTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 2048
	}
	if c.NodeLogLevel == "" {
		c.NodeLogLevel = "info"
	}
	set(&c.FaultGapMin, 500*time.Millisecond)
	set(&c.FaultGapMax, 2*time.Second)
	set(&c.DowntimeMin, 200*time.Millisecond)
	set(&c.DowntimeMax, time.Second)
	set(&c.QuietTimeout, 90*time.Second)
	set(&c.PollInterval, 50*time.Millisecond)
	if c.PerTxnRateBound <= 0 {
		c.PerTxnRateBound = 15
	}
	if c.PerSecondBound <= 0 {
		c.PerSecondBound = max(300, int(10*c.Rate))
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
}

// Result is what a run found.
type Result struct {
	Seed        uint64
	Dir         string
	Oracles     Oracles
	Violations  []string // every failed check, including a cluster that never got quiet
	LeaderKills int      // SIGKILLs of the leader
	Kills       map[string]int
	Clients     map[string]int // logical requests by how they ended
	ClientErrs  map[string]int // attempts without a definite answer, by kind
	Requests    int
	// LongestNoLeader is the longest time no node was a ready leader (all causes, including
	// restarting every node).
	LongestNoLeader time.Duration
	// Failover holds, per leader SIGKILL, the time to a ready leader of a higher term;
	// FirstDecision the time to the first transaction decided after the kill.
	Failover, FirstDecision []time.Duration
	Report                  string
	loadStart               string
}

// OK reports whether the run found no violation.
func (r *Result) OK() bool { return len(r.Violations) == 0 }

// Run performs one chaos run and returns its result; err is for a harness that could not
// run at all (build failure, cluster never formed). Violations are in the Result.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	cfg.defaults()
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "txcoord-chaos-"); err != nil {
			return nil, err
		}
	}
	res = &Result{Seed: cfg.Seed, Dir: dir, loadStart: loadAvg()}
	ev := newEventLog(cfg.Out)
	ev.printf("seed %d: %d nodes, %s of faults, %d clients at %.0f req/s, heartbeat %s election %s lease %s; dir %s",
		cfg.Seed, cfg.Nodes, cfg.Duration, cfg.Clients, cfg.Rate, cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLease, dir)
	ev.printf("reproduce: TXCOORD_CHAOS=1 TXCOORD_CHAOS_SEED=%d TXCOORD_CHAOS_NODES=%d TXCOORD_CHAOS_DURATION=%s go test -run 'TestChaos$' -v -timeout 30m ./internal/chaos",
		cfg.Seed, cfg.Nodes, cfg.Duration)
	bin := cfg.Bin
	if bin == "" {
		if bin, err = BuildBinary(ctx, dir); err != nil {
			return nil, err
		}
	}
	c, err := StartCluster(ctx, cfg, bin, dir, ev)
	if err != nil {
		return nil, fmt.Errorf("starting the cluster (logs in %s): %w", dir, err)
	}
	failed := true
	defer func() {
		if failed || !res.OK() {
			fmt.Fprintf(cfg.Out, "\n===== chaos run FAILED, seed %d; logs in %s =====\n", cfg.Seed, dir)
			c.DumpLogs(cfg.Out, 60)
			fmt.Fprintf(cfg.Out, "\n===== end of logs; seed %d =====\n", cfg.Seed)
		}
		c.Close()
		if !failed && res.OK() && cfg.Dir == "" && os.Getenv("TXCOORD_CHAOS_KEEP") == "" {
			os.RemoveAll(dir)
		}
	}()
	ev.printf("cluster up: nodes %v, participants %v", nodeURLs(c), c.PrepareURLs())

	monCtx, stopMon := context.WithCancel(ctx)
	mon := newMonitor(c, cfg.PollInterval)
	if f, err := os.Create(filepath.Join(dir, "leaders.log")); err == nil {
		defer f.Close()
		mon.trace = f
	}
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() { defer monWG.Done(); mon.run(monCtx) }()
	defer func() { stopMon(); monWG.Wait() }()

	hard, abortLoad := context.WithCancel(ctx)
	defer abortLoad()
	stopLoad := make(chan struct{})
	load := newLoadGen(c, cfg)
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); load.run(hard, stopLoad) }()

	end := time.Now().Add(cfg.Duration)
	sched := newScheduler(c, cfg, ev)
	var faultWG sync.WaitGroup
	if !cfg.NoFaults {
		faultWG.Add(1)
		go func() { defer faultWG.Done(); sched.run(ctx, end) }()
		if !cfg.NoParticipantFaults {
			faultWG.Add(1)
			go func() { defer faultWG.Done(); participantFaults(ctx, c, cfg, ev, end) }()
		}
	}
	progress := time.NewTicker(15 * time.Second)
	for wait := true; wait; {
		select {
		case <-ctx.Done():
			wait = false
		case <-time.After(time.Until(end)):
			wait = false
		case <-progress.C:
			reqs, _ := load.snapshot()
			kills, _ := sched.results()
			ev.printf("progress: %d client requests, %d node faults", len(reqs), len(kills))
		}
	}
	progress.Stop()
	faultWG.Wait()
	ev.printf("faults over; healing, clearing knobs, stopping load")
	_ = c.HealAll()
	_ = c.ClearFaults(context.WithoutCancel(ctx))
	close(stopLoad)
	select {
	case <-loadDone:
	case <-time.After(cfg.MaxRequestTime + 2*cfg.TxnTimeout + 10*time.Second):
		ev.printf("clients did not finish in time: aborting them")
		abortLoad()
		<-loadDone
	}
	ev.printf("clients stopped; waiting for quiet (at most %s)", cfg.QuietTimeout)
	views, qerr := c.Quiesce(ctx, cfg.QuietTimeout)
	stopMon()
	monWG.Wait()
	if qerr != nil {
		res.Violations = append(res.Violations, "quiet: "+qerr.Error())
		if views == nil {
			views = map[string][]txnView{}
			for _, n := range c.Nodes {
				if txns, err := fetchTxns(ctx, c.http, n.URL); err == nil {
					views[n.ID] = txns
				}
			}
		}
	}
	reqs, cerrs := load.snapshot()
	res.Oracles = c.CheckOracles(ctx, views, reqs, cfg.PerTxnRateBound, cfg.PerSecondBound)
	res.Violations = append(res.Violations, res.Oracles.Violations...)
	// A node that stopped by itself (a halt on an entry it cannot apply, a crash) is a
	// violation even when the harness restarted it and the oracles hold.
	for _, e := range c.UnexpectedExits() {
		res.Violations = append(res.Violations, "process stopped by itself: "+e)
	}
	res.Requests = len(reqs)
	res.Clients, res.ClientErrs = summarizeClients(reqs), cerrs
	kills, counts := sched.results()
	res.Kills, res.LeaderKills = counts, counts[FaultLeaderKill]
	res.LongestNoLeader, _, _ = mon.longestGap()
	res.Report = report(cfg, res, c, mon, kills, views, ev)
	fmt.Fprint(cfg.Out, res.Report)
	failed = false
	return res, nil
}

func nodeURLs(c *Cluster) []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.ID + "=" + n.URL
	}
	return out
}
