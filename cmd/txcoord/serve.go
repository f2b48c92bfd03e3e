package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/server"
)

// serveFlags are the flags of `txcoord serve`; dev reuses the tuning part.
type serveFlags struct {
	nodeID, httpAddr, httpAdvertise, raftAddr, raftAdvertise, dataDir, peers string
	logLevel, logFormat                                                      string
	tuning
	formation formationFlags
	security  securityFlags
}

// tuning holds the knobs shared by serve and dev.
type tuning struct {
	defaultTimeout, maxTimeout, phaseTwoWait       time.Duration
	maxServices, maxInFlight, phaseTwoMaxAttempts  int
	heartbeatTimeout, electionTimeout, leaderLease time.Duration
	snapshotThreshold                              uint64
	memoryLimitMiB                                 int
	maxClockOffset                                 time.Duration
	archive                                        archiveFlags // history_cmd.go
	phaseTwoRetryFor, phaseTwoRetryMax, stuckAfter time.Duration
	callTimeout                                    time.Duration
	maxPayloadBytes, maxTxnPayloadBytes            int
	autopilot                                      cluster.AutopilotConfig
	defaultMode                                    string
}

func (t *tuning) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&t.defaultTimeout, "default-timeout", 5*time.Second, "phase-one timeout when a request names none")
	f.DurationVar(&t.maxTimeout, "max-timeout", 60*time.Second, "largest timeout a request may ask for")
	f.DurationVar(&t.phaseTwoWait, "phase-two-wait", 0, "how long POST waits for phase two before answering 202 (0: the transaction's timeout)")
	f.IntVar(&t.maxServices, "max-services", 32, "most participants in one transaction")
	f.IntVar(&t.maxInFlight, "max-inflight", 1024, "most transactions the leader drives at once; beyond it POST gets 503")
	f.IntVar(&t.phaseTwoMaxAttempts, "phase-two-max-attempts", 0, "optional cap on the Commit/Rollback calls to one participant before the transaction is failed (heuristic); 0: none, --phase-two-retry-for alone decides")
	f.DurationVar(&t.phaseTwoRetryFor, "phase-two-retry-for", 24*time.Hour, "how long phase two retries a participant that refuses Commit/Rollback, from the decision, before the transaction is failed (heuristic, operator needed); 0: forever")
	f.DurationVar(&t.phaseTwoRetryMax, "phase-two-retry-max", time.Minute, "cap on the wait between phase-two attempts to one participant (exponential backoff with jitter from 50ms)")
	f.DurationVar(&t.stuckAfter, "stuck-after", time.Minute, "a transaction whose phase two is unfinished this long after the decision (or phase one this long after it began) is stuck: listed by /v1/stuck, counted in txcoord_stuck_transactions")
	f.DurationVar(&t.callTimeout, "call-timeout", 10*time.Second, "bound on one Commit or Rollback call to a participant (Prepare calls end at the transaction's deadline)")
	f.IntVar(&t.maxPayloadBytes, "max-payload-bytes", 8<<10, "largest payload one participant of a transaction may carry, in bytes of compact JSON")
	f.IntVar(&t.maxTxnPayloadBytes, "max-txn-payload-bytes", 64<<10, "largest sum of the payloads of one transaction, in bytes of compact JSON (the FSM holds payloads until the decision: at most this times --max-inflight)")
	f.DurationVar(&t.heartbeatTimeout, "heartbeat-timeout", time.Second, "Raft heartbeat timeout: a follower that hears nothing for this long starts an election")
	f.DurationVar(&t.electionTimeout, "election-timeout", time.Second, "Raft election timeout")
	f.DurationVar(&t.leaderLease, "leader-lease-timeout", 500*time.Millisecond, "Raft leader lease: a leader that cannot reach a quorum for this long steps down")
	f.Uint64Var(&t.snapshotThreshold, "snapshot-threshold", 8192, "log entries between snapshots")
	f.DurationVar(&t.maxClockOffset, "max-clock-offset", 500*time.Millisecond, "largest wall-clock offset from the cluster a node tolerates: past half it warns, past it the node will not lead, and retention never prunes past the log's own clock by more (0: no check; see docs/failover.md)")
	t.archive.register(cmd)
	f.DurationVar(&t.autopilot.ServerStabilizationTime, "server-stabilization-time", 10*time.Second, "autopilot: how long a joined server must stay healthy (reachable, caught up) before it is promoted from non-voter to voter")
	f.BoolVar(&t.autopilot.CleanupDeadServers, "cleanup-dead-servers", false, "autopilot: remove servers the leader has not reached for --dead-server-after (never more than keeps a quorum); off: remove them with txcoord cluster remove")
	f.DurationVar(&t.autopilot.DeadServerAfter, "dead-server-after", 5*time.Minute, "autopilot: how long a server must be unreachable before --cleanup-dead-servers removes it")
	f.StringVar(&t.defaultMode, "default-mode", "default", `how a transaction runs when its request names no "mode": default (Begin logged before any Prepare) or fast (one log entry, after phase one; its participants must ask for outcomes, docs/fast-path.md). The leader's flag applies: give every node the same`)
	f.IntVar(&t.memoryLimitMiB, "memory-limit-mib", 224, "soft limit on the Go heap in MiB, so the GC works harder before memory grows past it (0: none; GOMEMLIMIT, when set, wins)")
}

func (t *tuning) validate() error {
	switch {
	case t.defaultTimeout <= 0 || t.maxTimeout <= 0:
		return fmt.Errorf("--default-timeout and --max-timeout must be positive")
	case t.defaultTimeout > t.maxTimeout:
		return fmt.Errorf("--default-timeout (%s) exceeds --max-timeout (%s)", t.defaultTimeout, t.maxTimeout)
	case t.maxServices < 1 || t.maxInFlight < 1:
		return fmt.Errorf("--max-services and --max-inflight must be at least 1")
	case t.phaseTwoMaxAttempts < 0:
		return fmt.Errorf("--phase-two-max-attempts must not be negative (0: no cap)")
	case t.phaseTwoRetryFor < 0:
		return fmt.Errorf("--phase-two-retry-for must not be negative (0: retry forever)")
	case t.phaseTwoRetryMax < 50*time.Millisecond:
		return fmt.Errorf("--phase-two-retry-max (%s) must be at least 50ms", t.phaseTwoRetryMax)
	case t.stuckAfter <= 0:
		return fmt.Errorf("--stuck-after must be positive")
	case t.callTimeout < time.Millisecond || t.callTimeout > 10*time.Minute:
		return fmt.Errorf("--call-timeout (%s) must be from 1ms to 10m", t.callTimeout)
	case t.maxPayloadBytes < 1 || t.maxTxnPayloadBytes < 1:
		return fmt.Errorf("--max-payload-bytes and --max-txn-payload-bytes must be at least 1")
	case t.maxPayloadBytes > t.maxTxnPayloadBytes:
		return fmt.Errorf("--max-payload-bytes (%d) exceeds --max-txn-payload-bytes (%d)", t.maxPayloadBytes, t.maxTxnPayloadBytes)
	case t.maxTxnPayloadBytes > 512<<10:
		return fmt.Errorf("--max-txn-payload-bytes (%d) is over 512 KiB: every payload is in the Raft log, the FSM and every Prepare", t.maxTxnPayloadBytes)
	case t.memoryLimitMiB < 0:
		return fmt.Errorf("--memory-limit-mib must not be negative")
	case t.phaseTwoWait < 0:
		return fmt.Errorf("--phase-two-wait must not be negative")
	case t.archive.validate() != nil:
		return t.archive.validate()
	case t.autopilot.ServerStabilizationTime < 0 || t.autopilot.DeadServerAfter <= 0:
		return fmt.Errorf("--server-stabilization-time must not be negative and --dead-server-after must be positive")
	case validMode(t.defaultMode) != nil:
		return fmt.Errorf("--default-mode: %v", validMode(t.defaultMode))
	case t.maxClockOffset < 0:
		return fmt.Errorf("--max-clock-offset must not be negative (0 turns the check off)")
	case t.leaderLease > t.heartbeatTimeout:
		return fmt.Errorf("--leader-lease-timeout (%s) must not exceed --heartbeat-timeout (%s)", t.leaderLease, t.heartbeatTimeout)
	case t.heartbeatTimeout < 5*time.Millisecond || t.electionTimeout < 5*time.Millisecond:
		return fmt.Errorf("--heartbeat-timeout and --election-timeout must be at least 5ms")
	}
	return nil
}

// apply copies the tuning into a node's config.
func (t *tuning) apply(c *server.Config) {
	c.API.DefaultTimeout, c.API.MaxTimeout, c.API.PhaseTwoWait = t.defaultTimeout, t.maxTimeout, t.phaseTwoWait
	c.API.MaxServices = t.maxServices
	c.API.DefaultMode, _ = coordinator.ParseMode(t.defaultMode) // validated
	c.Engine.MaxInFlight, c.Engine.PhaseTwoMaxAttempts = t.maxInFlight, t.phaseTwoMaxAttempts
	c.Engine.PhaseTwoRetryFor = t.phaseTwoRetryFor
	if t.phaseTwoRetryFor == 0 {
		c.Engine.PhaseTwoRetryFor = -1 // coordinator.Config: negative is "forever", 0 the default
	}
	c.Engine.RetryMax, c.Engine.CallTimeout = t.phaseTwoRetryMax, t.callTimeout
	c.Engine.FenceLease = t.leaderLease // below the heartbeat timeout (validated): no other leader sooner
	c.API.StuckAfter, c.StuckAfter = t.stuckAfter, t.stuckAfter
	c.API.MaxPayloadBytes, c.API.MaxTxnPayloadBytes = t.maxPayloadBytes, t.maxTxnPayloadBytes
	c.Cluster.HeartbeatTimeout, c.Cluster.ElectionTimeout, c.Cluster.LeaderLeaseTimeout = t.heartbeatTimeout, t.electionTimeout, t.leaderLease
	c.Cluster.SnapshotThreshold = t.snapshotThreshold
	t.archive.apply(c)
	c.Cluster.MaxClockOffset = t.maxClockOffset
	c.Cluster.Autopilot = t.autopilot
	if t.autopilot.ServerStabilizationTime == 0 {
		c.Cluster.Autopilot.ServerStabilizationTime = time.Nanosecond // 0 on the command line: promote once healthy
	}
	if t.maxClockOffset == 0 {
		c.Cluster.MaxClockOffset = -1 // cluster.Config: negative is "no check", 0 the default
	}
}

func newServeCmd() *cobra.Command {
	var fl serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run one coordinator node",
		Long: `Run one coordinator node.

Tracing (OpenTelemetry, off by default) is configured by the standard environment
variables: OTEL_TRACES_EXPORTER=otlp (or an OTEL_EXPORTER_OTLP_ENDPOINT) turns it on,
spans go over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT [http://localhost:4318], sampled
per OTEL_TRACES_SAMPLER, named per OTEL_SERVICE_NAME [txcoord]. See docs/observability.md.`,
		Example: `  txcoord serve --node-id n1 --http-addr 127.0.0.1:8081 --raft-addr 127.0.0.1:7001 \
    --data-dir /var/lib/txcoord/n1 \
    --peers n1=127.0.0.1:7001@127.0.0.1:8081,n2=127.0.0.1:7002@127.0.0.1:8082,n3=127.0.0.1:7003@127.0.0.1:8083`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(&fl) },
	}
	f := cmd.Flags()
	f.StringVar(&fl.nodeID, "node-id", "", "this node's unique id (required)")
	f.StringVar(&fl.httpAddr, "http-addr", "127.0.0.1:8081", "HTTP API listen address")
	f.StringVar(&fl.httpAdvertise, "http-advertise", "", "HTTP address other nodes use to reach this one (default: --http-addr)")
	f.StringVar(&fl.raftAddr, "raft-addr", "127.0.0.1:7001", "Raft listen address")
	f.StringVar(&fl.raftAdvertise, "raft-advertise", "", "Raft address other nodes dial (default: --raft-addr)")
	f.StringVar(&fl.dataDir, "data-dir", "", "directory for the Raft log and snapshots (required)")
	f.StringVar(&fl.peers, "peers", "", "initial members, id=raftaddr@httpaddr,... (all nodes get the same list; empty: join later)")
	f.StringVar(&fl.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.StringVar(&fl.logFormat, "log-format", "text", "text or json")
	fl.tuning.register(cmd)
	fl.formation.register(cmd)
	fl.security.register(cmd)
	return cmd
}

func newLogger(name, level, format string) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	if format != "text" && format != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, JSONFormat: format == "json", Output: os.Stderr, TimeFormat: "2006-01-02T15:04:05.000Z07:00"}), nil
}

// parsePeers reads "id=raftaddr@httpaddr,...". The HTTP part may be omitted
// ("id=raftaddr"): such a peer's API address is learnt from the log once it has led.
func parsePeers(s string) ([]cluster.Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []cluster.Peer
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		id, rest, ok := strings.Cut(item, "=")
		if !ok || id == "" || rest == "" {
			return nil, fmt.Errorf("--peers entry %q: want id=raftaddr@httpaddr", item)
		}
		raftAddr, httpAddr, _ := strings.Cut(rest, "@")
		if _, _, err := net.SplitHostPort(raftAddr); err != nil {
			return nil, fmt.Errorf("--peers entry %q: raft address: %v", item, err)
		}
		if httpAddr != "" {
			if _, _, err := net.SplitHostPort(httpAddr); err != nil {
				return nil, fmt.Errorf("--peers entry %q: http address: %v", item, err)
			}
		}
		out = append(out, cluster.Peer{ID: id, RaftAddr: raftAddr, HTTPAddr: httpAddr})
	}
	return out, nil
}

func runServe(fl *serveFlags) error {
	if fl.nodeID == "" {
		return fmt.Errorf("--node-id is required")
	}
	if fl.dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	if err := fl.tuning.validate(); err != nil {
		return err
	}
	lg, err := newLogger("txcoord", fl.logLevel, fl.logFormat)
	if err != nil {
		return err
	}
	if fl.memoryLimitMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(fl.memoryLimitMiB) << 20)
	}
	peers, err := parsePeers(fl.peers)
	if err != nil {
		return err
	}
	cfg := server.Config{
		HTTPBind: fl.httpAddr,
		Logger:   lg.With("node", fl.nodeID),
		Cluster: cluster.Config{
			NodeID: fl.nodeID, RaftBind: fl.raftAddr, RaftAdvertise: fl.raftAdvertise,
			HTTPAdvertise: fl.httpAdvertise, DataDir: fl.dataDir, Peers: peers,
		},
	}
	if cfg.Cluster.HTTPAdvertise == "" {
		cfg.Cluster.HTTPAdvertise = fl.httpAddr
	}
	fl.tuning.apply(&cfg)
	if err := fl.security.apply(&cfg, lg); err != nil {
		return err
	}
	tr, err := tracing.FromEnv(context.Background(), nil, lg)
	if err != nil {
		return err
	}
	if tr.Enabled {
		lg.Info("tracing on: exporting spans over OTLP/HTTP (OTEL_* variables)")
	}
	cfg.Tracing = tr
	// Spans of the last transactions are flushed after the node has stopped (5 s at most).
	defer flushTraces(tr, lg)
	form, err := fl.formation.setup(fl, &cfg, cfg.Logger)
	if err != nil {
		return err
	}
	srv, err := server.Start(cfg)
	if err != nil {
		form.abort()
		return err
	}
	form.start(srv)
	lg.Info("serving", "node", fl.nodeID, "http", srv.HTTPAddr(), "raft", fl.raftAddr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		lg.Info("shutting down", "signal", s.String())
	case <-srv.Halted():
		form.stop()
		_ = srv.Close()
		return fmt.Errorf("node stopped: %w", srv.Node.HaltError())
	}
	form.stop()
	return srv.Close()
}

// validMode checks a --default-mode value ("" is not one: the flag has a default).
func validMode(s string) error {
	if s == "" {
		return fmt.Errorf(`empty; want "default" or "fast"`)
	}
	_, err := coordinator.ParseMode(s)
	return err
}

// flushTraces exports the spans still queued and stops the exporter, within 5 s.
func flushTraces(tr *tracing.Tracing, lg hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		lg.Warn("tracing: shutdown", "error", err)
	}
}
