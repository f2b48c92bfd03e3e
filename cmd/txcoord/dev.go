package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/internal/localcluster"
	"github.com/txcoord/txcoord/internal/loopback"
	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/server"
)

type devFlags struct {
	httpPort, raftPort, participantPort int
	dataDir, logLevel, scenarios        string
	once                                bool
	tuning
}

func newDevCmd() *cobra.Command {
	var fl devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local 3-node cluster with demo participants and send a sample transaction",
		Long: `Starts, in one process on loopback, three coordinator nodes and three demo
participants (flight seats, hotel rooms, payment balances, kept in bbolt), waits for a
leader, sends the sample transaction, prints its answer, the URLs and a curl command, and
serves until interrupted. Data lives in a temporary directory unless --data-dir is given.
Ports: nodes listen on --http-port, +1, +2 (Raft on --raft-port, +1, +2), participants on
--participant-port, +1, +2; 0 picks free ports.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.OutOrStdout(), &fl) },
	}
	f := cmd.Flags()
	f.IntVar(&fl.httpPort, "http-port", 8081, "first node's HTTP port")
	f.IntVar(&fl.raftPort, "raft-port", 7001, "first node's Raft port")
	f.IntVar(&fl.participantPort, "participant-port", 9001, "first demo participant's port")
	f.StringVar(&fl.dataDir, "data-dir", "", "keep data here instead of a temporary directory")
	f.StringVar(&fl.logLevel, "log-level", "warn", "trace, debug, info, warn or error")
	f.StringVar(&fl.scenarios, "scenarios", "commit", "sample transactions to run, comma-separated: commit, nack, timeout")
	f.BoolVar(&fl.once, "once", false, "exit after the sample transactions instead of serving")
	fl.tuning.register(cmd)
	// Local failover should be quick; production defaults stay conservative. dev's own
	// defaults replace serve's as values and in --help, which shows what dev uses. No soft
	// memory limit by default: one process holds three nodes and three participants.
	for _, d := range devDefaults {
		setDefault(f, d[0], d[1])
	}
	return cmd
}

// devDefaults are the tuning flags whose default differs in dev from serve's.
var devDefaults = [][2]string{
	{"heartbeat-timeout", loopback.HeartbeatTimeout.String()},      // 300ms
	{"election-timeout", loopback.ElectionTimeout.String()},        // 300ms
	{"leader-lease-timeout", loopback.LeaderLeaseTimeout.String()}, // 150ms
	{"memory-limit-mib", "0"},
}

// setDefault changes a registered flag's default: its value and what --help shows, without
// marking it as set by the user.
func setDefault(f *pflag.FlagSet, name, value string) {
	fl := f.Lookup(name)
	if fl == nil {
		panic("no flag --" + name)
	}
	if err := fl.Value.Set(value); err != nil {
		panic(fmt.Sprintf("--%s default %q: %v", name, value, err))
	}
	fl.DefValue = value
}

// portHint adds, to a port dev cannot have, the flags that choose others.
func portHint(err error) error {
	var le *loopback.ListenError
	if errors.As(err, &le) {
		return fmt.Errorf("listening on %s (pick other ports with --http-port, --raft-port, --participant-port, or 0 for free ones): %w", le.Addr, le.Err)
	}
	return err
}

func runDev(out io.Writer, fl *devFlags) (err error) {
	if err := fl.tuning.validate(); err != nil {
		return err
	}
	if fl.memoryLimitMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(fl.memoryLimitMiB) << 20)
	}
	scen := strings.Split(fl.scenarios, ",")
	for _, s := range scen {
		if s != "commit" && s != "nack" && s != "timeout" {
			return fmt.Errorf("--scenarios: unknown %q (want commit, nack, timeout)", s)
		}
	}
	lg, err := newLogger("txcoord", fl.logLevel, "text")
	if err != nil {
		return err
	}
	// Traces as for serve (OTEL_* variables, off by default), flushed after the nodes stop.
	tr, err := tracing.FromEnv(context.Background(), nil, lg)
	if err != nil {
		return err
	}
	defer flushTraces(tr, lg)
	dir := fl.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "txcoord-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}

	// Participants.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	kinds := []string{demo.KindFlight, demo.KindHotel, demo.KindPayment}
	svcs := make([]*demo.Service, len(kinds))
	urls := make([]string, len(kinds))
	plog := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i, k := range kinds {
		ln, err := loopback.Listen(fl.participantPort, i)
		if err != nil {
			return portHint(err)
		}
		svc, err := demo.New(demo.Config{Kind: k, DataDir: dir + "/participants", Logger: plog, Exit: func(int) { ln.Close() }})
		if err != nil {
			ln.Close()
			return err
		}
		hs := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		closers = append(closers, func() { _ = hs.Close(); _ = svc.Close() })
		svcs[i], urls[i] = svc, "http://"+ln.Addr().String()
	}

	// Coordinator nodes, on --http-port+i and --raft-port+i (0: free ports).
	cl, err := localcluster.Start(localcluster.Options{
		Nodes: 3, Dir: dir, HTTPPort: fl.httpPort, RaftPort: fl.raftPort, Logger: lg,
		Tune: func(_ int, cfg *server.Config) {
			cfg.Tracing = tr
			fl.tuning.apply(cfg)
		},
	})
	if err != nil {
		return portHint(err)
	}
	closers = append(closers, func() { _ = cl.Close() })
	// Payloads need feature level 2, which the leader enables once it has seen every
	// node's build (a moment after the election).
	if _, err := cl.WaitReady(2, 30*time.Second); err != nil {
		return err
	}
	nodes := cl.Running()
	entry := nodes[0].URL()
	for _, n := range nodes {
		if !n.Node.LeaderReady() {
			entry = n.URL() // send the sample to a follower: it shows forwarding at work
			break
		}
	}
	prepares := make([]string, len(urls))
	for i, u := range urls {
		prepares[i] = u + "/prepare"
	}
	for _, s := range scen {
		if err := runScenario(out, s, entry, prepares, svcs); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "\nCoordinator nodes:")
	for _, n := range nodes {
		role := "follower"
		if n.Node.LeaderReady() {
			role = "leader"
		}
		fmt.Fprintf(out, "  %s  %s  (%s)\n", n.Node.ID(), n.URL(), role)
	}
	fmt.Fprintln(out, "Demo participants (GET /state shows inventory, holds and ledger):")
	for i, u := range urls {
		fmt.Fprintf(out, "  %-8s %s\n", kinds[i], u)
	}
	body, _ := json.Marshal(map[string]any{"services": prepares, "timeout": 1000})
	fmt.Fprintf(out, "\nTry it:\n  curl -s -X POST %s/v1/transactions -H 'Content-Type: application/json' -d '%s'\n", entry, body)
	fmt.Fprintf(out, "  curl -s %s/v1/cluster\n", entry)
	fmt.Fprintf(out, "\nOperations page: %s/ui/\n", entry)
	fmt.Fprintf(out, "  %s submit --node %s %s\n", selfName(), entry, strings.Join(prepares, " "))
	if fl.once {
		return nil
	}
	fmt.Fprintln(out, "\nServing until interrupted (Ctrl-C).")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// runScenario sends one sample transaction. "nack" makes the hotel refuse; "timeout" makes
// the payment service answer Prepare after the transaction's timeout. Knobs are restored.
func runScenario(out io.Writer, name, entry string, prepares []string, svcs []*demo.Service) error {
	timeout := 5000
	switch name {
	case "nack":
		restore := svcs[1].Faults()
		f := restore
		f.NackRate = 1
		if err := svcs[1].SetFaults(f); err != nil {
			return err
		}
		defer func() { _ = svcs[1].SetFaults(restore) }()
	case "timeout":
		timeout = 500
		restore := svcs[2].Faults()
		f := restore
		f.DelayMS = 1500
		if err := svcs[2].SetFaults(f); err != nil {
			return err
		}
		defer func() { _ = svcs[2].SetFaults(restore) }()
	}
	// Each demo service takes its order from its payload: seats on a flight, nights at a
	// hotel, an amount to charge (in cents).
	orders := []string{`{"flight":"LH400","seats":2}`, `{"hotel":"Ritz","nights":3}`, `{"amount":42500,"currency":"EUR"}`}
	services := make([]any, len(prepares))
	for i, p := range prepares {
		services[i] = p
		if i < len(orders) {
			services[i] = map[string]any{"prepare": p, "payload": json.RawMessage(orders[i])}
		}
	}
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeout})
	fmt.Fprintf(out, "Sample transaction (%s) to %s:\n  POST /v1/transactions %s\n", name, entry, body)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Duration(timeout)*time.Millisecond+30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, entry+"/v1/transactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sample transaction: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "  ", "  ") != nil {
		return errors.New("sample transaction: answer is not JSON: " + string(raw))
	}
	fmt.Fprintf(out, "  HTTP %d\n  %s\n\n", resp.StatusCode, pretty.String())
	return nil
}

// selfName is how the user ran this binary (./bin/txcoord under make), for commands it
// suggests.
func selfName() string {
	if strings.Contains(os.Args[0], "/") && !strings.Contains(os.Args[0], "go-build") {
		return os.Args[0]
	}
	return "txcoord"
}
