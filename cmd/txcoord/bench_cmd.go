package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/internal/bench"
	"github.com/txcoord/txcoord/server"
)

func init() {
	extraCommands = append(extraCommands, newBenchCmd, newBenchParticipantCmd)
}

type benchFlags struct {
	nodes, participants        []string
	numParticipants            int
	nackRate                   float64
	delay                      time.Duration
	concurrency                []int
	modes                      []string
	duration, warmup, timeout  time.Duration
	count, sample              int
	keys, floor, asJSON, quiet bool
	payloadBytes               int
	noLogSize                  bool
	floorTime                  time.Duration
	floorConc                  int
	target, dataDir, logLevel  string
	cpuProfile, memProfile     string
	jsonFile, trace            string
	tuning
}

const benchLong = `Drives a txcoord cluster with concurrent clients and reports throughput, latency
percentiles (p50/p90/p99/max) of the whole transaction and of each phase, and errors by
kind. It always stops: after --duration, or after --count transactions (capped at 10
minutes), each request bounded by its timeout; transactions in flight at the end finish and
count.

Cluster: without --node it starts its own 3-node cluster in this process, as ` + "`txcoord dev`" + `
does (loopback TCP on free ports, raft-boltdb with fsync, the same Raft configuration as
` + "`txcoord serve`" + `, a temporary data directory). With --node URLs it drives that cluster; clients
post to the leader (--target leader), to a follower that forwards (follower) or to every
node (all).

Participants: without --participant it starts --participants built-in fast participants
in this same process, one loopback listener each: they ACK prepare, commit and rollback at
once (after --participant-delay) and refuse a share --nack-rate of transactions (one
participant, picked by a hash of the transaction id, votes NACK). They share the CPU with
everything else, as the participants of a one-machine deployment do. ` + "`txcoord bench-participant`" + `
runs the same participants in a separate process, for use with --participant.

Phases: phase one is POST -> decision, phase two decision -> answer. With the built-in
participants they are measured at the participants on the same monotonic clock as the
clients (the decision is the arrival of the first commit/rollback call), and split further
into begin, prepare, decide, commit and complete (see the output). With external
participants, every --sample-th committed transaction (at most 2,000) is read back with
GET /v1/transactions/{id} once the run is over: phase one is its decidedAt - createdAt (1 ms
resolution), phase two the rest of its latency.

Floor (--floor, own cluster and built-in participants only): before the load, on the same
cluster and participants, it measures a no-op Raft Node.Apply (an empty Prune) on the
leader at concurrency 1 (latency) and at --floor-concurrency (applies/s), one participant
call and one parallel round of calls to every participant at concurrency 1 (latency,
through the coordinator's participant client) and participant calls/s at
--floor-concurrency. From the p50s:
  floor          = 2 raft commits + 2 rounds  (Begin, then the decision; prepare and
                   commit rounds. The engine answers once phase two is acknowledged and
                   logs completions afterwards, many per entry, so this is the design's
                   floor as well as the issue's)
  3-commit floor = 3 raft commits + 2 rounds  (a design that logs completion before it
                   answers, as txcoord did before commit 7998e58; kept for comparison)
and throughput bounds: raft = applies/s / 2, http = calls/s / (2P+1) (the client's POST
plus P prepares and P commits), combined = 1 / (2/applies + (2P+1)/calls) when both share
the CPU. It also takes this process's CPU time per apply and per call in those two
measurements: cpu floor = 2 applies + (2P+1) calls of CPU per transaction. Each run is then
printed as ratios to these.

CPU: every run reports the cores this process kept busy and its CPU time per transaction
(with the in-process cluster that is nodes, participants and clients together). On a
shared machine these move much less than txn/s does: CPUs / CPU-per-transaction is what
the run would reach with the machine to itself, if nothing but CPU limited it.

Log size (own cluster): after the runs the nodes stop and each node's raft.db is read
(read-only) to count entries and bytes by kind; bytes per transaction = bytes of the
begin/define/decide/complete/fail/progress entries still in the log / begin entries in the log
(stored bytes are raft-boltdb's key + msgpack raft.Log; command bytes are the fsm
encoding alone).`

func newBenchCmd() *cobra.Command {
	var fl benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a cluster (or an in-process one) and compare it with the Raft and HTTP floor",
		Long:  benchLong,
		Example: `  txcoord bench --concurrency 1,64 --duration 10s --floor        # own cluster, floor, two runs
  txcoord bench --concurrency 64 --duration 20s --cpuprofile cpu.out --json
  txcoord bench --node http://127.0.0.1:8081 --participant http://127.0.0.1:9101/p0/prepare \
      --participant http://127.0.0.1:9102/p1/prepare --concurrency 16 --count 10000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.OutOrStdout(), cmd.ErrOrStderr(), &fl)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&fl.nodes, "node", nil, "API base URL of a running node (repeat or comma-separate); none: start an in-process 3-node cluster")
	f.StringVar(&fl.target, "target", "leader", "where clients post: leader, follower (which forwards) or all")
	f.StringSliceVar(&fl.participants, "participant", nil, "prepare URL of a participant (repeat); none: built-in fast participants")
	f.IntVar(&fl.numParticipants, "participants", 3, "number of built-in participants per transaction")
	f.Float64Var(&fl.nackRate, "nack-rate", 0, "share of transactions a built-in participant refuses (0..1)")
	f.DurationVar(&fl.delay, "participant-delay", 0, "delay of every built-in participant call")
	f.IntSliceVar(&fl.concurrency, "concurrency", []int{1}, "concurrent clients; a list runs one measurement per level (e.g. 1,64)")
	f.StringSliceVar(&fl.modes, "mode", nil, `transactions' "mode": default, fast, or both (default,fast: every level in each mode, in that order, and a comparison); none: the server's default`)
	f.DurationVar(&fl.duration, "duration", 10*time.Second, "length of each measurement (0 with --count: until the count)")
	f.IntVar(&fl.count, "count", 0, "stop each measurement after this many transactions (0: by duration only)")
	f.DurationVar(&fl.warmup, "warmup", time.Second, "load sent before each measurement and not counted")
	f.DurationVar(&fl.timeout, "timeout", 5*time.Second, `the transactions' "timeout" (phase one's bound)`)
	f.BoolVar(&fl.keys, "idempotency-keys", false, "send a unique Idempotency-Key with every transaction")
	f.IntVar(&fl.payloadBytes, "payload-bytes", 0, "give every participant a payload of about this many bytes of compact JSON (0: none; needs feature level 2)")
	f.IntVar(&fl.sample, "sample", 20, "external participants: read back every Nth committed transaction for phase times (0: never)")
	f.BoolVar(&fl.floor, "floor", false, "measure the Raft and HTTP floor first and print ratios to it (own cluster only)")
	f.DurationVar(&fl.floorTime, "floor-time", 2*time.Second, "length of each floor measurement")
	f.IntVar(&fl.floorConc, "floor-concurrency", 64, "concurrency of the floor's throughput measurements")
	f.BoolVar(&fl.noLogSize, "no-log-size", false, "own cluster: skip reading the raft logs after the run")
	f.BoolVar(&fl.asJSON, "json", false, "print the report as JSON")
	f.StringVar(&fl.jsonFile, "json-file", "", "also write the JSON report to this file")
	f.BoolVar(&fl.quiet, "quiet", false, "no notes on stderr")
	f.StringVar(&fl.cpuProfile, "cpuprofile", "", "write a CPU profile of the highest-concurrency measurement (whole process: nodes, participants, clients)")
	f.StringVar(&fl.memProfile, "memprofile", "", "write an allocation profile (heap, after the runs; see -sample_index=alloc_space)")
	f.StringVar(&fl.dataDir, "data-dir", "", "own cluster: keep the nodes' data here (must not exist or be empty); default a temp dir, removed")
	f.StringVar(&fl.logLevel, "log-level", "off", "own cluster: node log level (trace, debug, info, warn, error, off)")
	f.StringVar(&fl.trace, "trace", "off", "own cluster: off; record (every transaction sampled, spans dropped as they end); otlp (also exported over OTLP/HTTP to a receiver in this process)")
	fl.tuning.register(cmd)
	_ = f.Set("heartbeat-timeout", "300ms")
	_ = f.Set("election-timeout", "300ms")
	_ = f.Set("leader-lease-timeout", "150ms")
	return cmd
}

func stdoutIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func runBench(out, errOut io.Writer, fl *benchFlags) error {
	if err := fl.tuning.validate(); err != nil {
		return err
	}
	for _, c := range fl.concurrency {
		if c < 1 {
			return fmt.Errorf("--concurrency: %d is not at least 1", c)
		}
	}
	if fl.duration <= 0 && fl.count <= 0 {
		return fmt.Errorf("give --duration or --count")
	}
	if fl.count < 0 || fl.duration < 0 || fl.warmup < 0 || fl.timeout <= 0 || fl.delay < 0 {
		return fmt.Errorf("--count, --duration, --warmup and --participant-delay must not be negative; --timeout must be positive")
	}
	if fl.nackRate < 0 || fl.nackRate > 1 {
		return fmt.Errorf("--nack-rate %v: want 0..1", fl.nackRate)
	}
	if fl.numParticipants < 1 || fl.numParticipants > 32 {
		return fmt.Errorf("--participants %d: want 1..32", fl.numParticipants)
	}
	if len(fl.participants) > 0 && (fl.nackRate > 0 || fl.delay > 0) {
		return fmt.Errorf("--nack-rate and --participant-delay apply to the built-in participants; configure external ones yourself")
	}
	if fl.dataDir != "" {
		if ents, err := os.ReadDir(fl.dataDir); err == nil && len(ents) > 0 {
			return fmt.Errorf("--data-dir %s is not empty: the benchmark bootstraps a new cluster", fl.dataDir)
		}
	}
	lg, err := newLogger("txcoord", fl.logLevel, "text")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if fl.trace != "" && fl.trace != "off" && len(fl.nodes) > 0 {
		return fmt.Errorf("--trace applies to the in-process cluster; trace a running cluster with its OTEL_* variables")
	}
	tr, traceDone, err := benchTracing(ctx, fl.trace)
	if err != nil {
		return err
	}
	defer func() {
		if msg := traceDone(); msg != "" && !fl.quiet {
			fmt.Fprintln(errOut, msg)
		}
	}()

	cfg := bench.Config{
		Nodes: fl.nodes, Target: fl.target, Participants: fl.participants, NumParticipants: fl.numParticipants,
		NackRate: fl.nackRate, Delay: fl.delay, Concurrency: fl.concurrency, Modes: fl.modes, Duration: fl.duration, Count: fl.count,
		Warmup: fl.warmup, Timeout: fl.timeout, Keys: fl.keys, Sample: fl.sample, PayloadBytes: fl.payloadBytes,
		Floor: fl.floor, FloorTime: fl.floorTime, FloorConc: fl.floorConc, MeasureLog: !fl.noLogSize,
		DataDir: fl.dataDir, Logger: lg,
		Tune: func(_ int, c *server.Config) { fl.tuning.apply(c); c.Tracing = tr },
	}
	if !fl.quiet {
		cfg.Log = errOut
	}
	if !fl.asJSON && stdoutIsTerminal(out) {
		cfg.Progress = out
	}
	if fl.cpuProfile != "" {
		profiled := 0
		for _, c := range fl.concurrency {
			profiled = max(profiled, c)
		}
		cfg.Measure = func(conc int, run func() error) error {
			if conc != profiled {
				return run()
			}
			pf, err := os.Create(fl.cpuProfile)
			if err != nil {
				return err
			}
			defer pf.Close()
			if err := pprof.StartCPUProfile(pf); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
			profiled = -1 // only the first run at this level
			return run()
		}
	}
	rep, err := bench.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if fl.memProfile != "" {
		runtime.GC()
		if pf, err := os.Create(fl.memProfile); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(pf, 0)
			pf.Close()
		}
	}
	if fl.jsonFile != "" {
		raw, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(fl.jsonFile, append(raw, '\n'), 0o644); err != nil {
			return err
		}
	}
	if fl.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteText(out)
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(errOut, "interrupted: the report covers what ran")
	}
	return nil
}

func newBenchParticipantCmd() *cobra.Command {
	var (
		listen   string
		n        int
		nackRate float64
		delay    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench-participant",
		Short: "Serve the load tool's fast participants in their own process",
		Long: `Serves --participants fast participants, the ones ` + "`txcoord bench`" + ` starts in-process
by default, on consecutive ports from --listen's (port 0: free ports). Each ACKs prepare,
commit and rollback at once (after --participant-delay) and one of them, picked by a hash
of the transaction id, refuses a share --nack-rate of transactions. They keep no state: a
load-test stand-in, not a correct participant. Prints the prepare URLs to pass to
` + "`txcoord bench --participant`" + ` and serves until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, portStr, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %v", listen, err)
			}
			port, err := strconv.Atoi(portStr)
			if err != nil {
				return fmt.Errorf("--listen %q: bad port", listen)
			}
			ps, err := bench.StartParticipants(host, port, n, nackRate, delay, nil)
			if err != nil {
				return err
			}
			defer ps.Close()
			for _, u := range ps.PrepareURLs {
				fmt.Fprintln(cmd.OutOrStdout(), u)
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			<-sig
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9101", "host:port of the first participant")
	f.IntVar(&n, "participants", 3, "how many participants")
	f.Float64Var(&nackRate, "nack-rate", 0, "share of transactions refused (0..1)")
	f.DurationVar(&delay, "participant-delay", 0, "delay of every call")
	return cmd
}
