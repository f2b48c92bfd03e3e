package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/internal/checker"
	"github.com/txcoord/txcoord/internal/demo"
)

func init() { extraCommands = append(extraCommands, newParticipantCmd, newCheckCmd) }

// newParticipantCmd returns `txcoord participant`: one demo participant service in its own
// process, until SIGINT or SIGTERM.
func newParticipantCmd() *cobra.Command {
	var (
		cfg    demo.Config
		listen string
		delay  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "participant",
		Short: "Run one demo participant service (flight, hotel or payment)",
		Long: `Runs a demo participant built on the participant library, with its inventory in
bbolt under --data-dir. It serves POST /prepare, /commit, /rollback at its root (so
http://LISTEN/prepare is its prepare URL), GET /state (inventory, holds, ledger),
GET /requests (request log) and GET/POST /control (fault knobs, e.g.
curl -d '{"nackRate":0.5}' http://LISTEN/control; {"exit":true} exits at once).
Fault knobs that fire make the process exit abruptly (--exit-rate) or drop connections
after doing the work (--drop-rate).`,
		Example: `  txcoord participant --kind hotel --listen 127.0.0.1:9002 --data-dir /tmp/hotel --nack-rate 0.1 --seed 7`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if delay < 0 {
				return fmt.Errorf("--delay must not be negative")
			}
			cfg.Faults.DelayMS = delay.Milliseconds()
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			svc, err := demo.New(cfg)
			if err != nil {
				return err
			}
			defer svc.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(cmd.OutOrStdout(), "%s participant listening; prepare URL: http://%s/prepare\n", cfg.Kind, ln.Addr())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kind, "kind", demo.KindFlight, "flight, hotel or payment")
	f.StringVar(&listen, "listen", "127.0.0.1:9001", "address to listen on")
	f.StringVar(&cfg.DataDir, "data-dir", "participant-data", "directory of the service's database (<kind>.db)")
	f.Int64Var(&cfg.Capacity, "capacity", 0, "size of each pool when the database is created: seats, rooms, or cents per account (0: 1000 units, payment 100000 cents)")
	f.Int64Var(&cfg.Unit, "unit", 0, "units one transaction reserves (0: 1, payment 100 cents)")
	f.IntVar(&cfg.Accounts, "accounts", demo.DefaultAccounts, "number of payment accounts")
	f.Float64Var(&cfg.Faults.NackRate, "nack-rate", 0, "probability that a prepare votes NACK")
	f.DurationVar(&delay, "delay", 0, "wait this long before processing each prepare (ms precision)")
	f.Float64Var(&cfg.Faults.ErrorRate, "error-rate", 0, "probability that a call is answered with HTTP 500 without doing anything")
	f.Float64Var(&cfg.Faults.DropRate, "drop-rate", 0, "probability that a call is processed and its connection then closed without a reply")
	f.Float64Var(&cfg.Faults.ExitRate, "exit-rate", 0, "probability that a call is processed and the process then exits abruptly")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the fault knobs' random draws")
	return cmd
}

// newCheckCmd returns `txcoord check`: the atomicity checker over HTTP.
func newCheckCmd() *cobra.Command {
	var (
		node         string
		participants []string
		inFlight     bool
		pruned       bool
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check --node URL --participant URL...",
		Short: "Check atomicity, agreement, holds and conservation across coordinator and participants",
		Long: `Reads every transaction from --node (GET /v1/transactions, all pages) and the
GET /state document of every --participant (a demo participant's base or prepare URL), then
checks: atomicity (no transaction committed at one participant and rolled back at
another), agreement with the coordinator's decision, no unfinished transactions and no
holds left (unless --in-flight), and conservation of every participant's inventory.
Prints a report. Exit status: 0 no violation, 2 violations, 1 the data could not be read.`,
		Example: `  txcoord check --node http://127.0.0.1:8081 \
    --participant http://127.0.0.1:9001 --participant http://127.0.0.1:9002 --participant http://127.0.0.1:9003`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" || len(participants) == 0 {
				return fmt.Errorf("check needs --node and at least one --participant")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			report, err := checker.Run(ctx, &http.Client{Timeout: timeout}, node, participants, checker.Options{InFlight: inFlight, Pruned: pruned})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), report.String())
			if !report.OK() {
				return exitCode(2)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "any coordinator node's HTTP URL")
	f.StringSliceVar(&participants, "participant", nil, "a participant's URL (repeat, or separate with commas)")
	f.BoolVar(&inFlight, "in-flight", false, "the cluster may still be working: do not report unfinished transactions and holds")
	f.BoolVar(&pruned, "pruned", false, "the coordinator may have pruned old finished transactions: do not report commits it does not list")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "give up reading after this long")
	return cmd
}
