package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
)

func newSubmitCmd() *cobra.Command {
	var (
		cf        connFlags
		key       string
		timeoutMs int
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] PREPARE_URL...",
		Short: "Run one transaction through any node and print its outcome",
		Long: `Sends {"services": [PREPARE_URL...], "timeout": MS} to POST /v1/transactions on
--node (any node: followers forward to the leader) with an Idempotency-Key (--key, or a
fresh one), retrying unreachable nodes and 503 answers with the same key until the
outcome or --wait, so a retry never starts a second transaction (the Go SDK's Submit).

` + exitCodesHelp,
		Example: `  txcoord submit --node http://127.0.0.1:8081 --timeout 1000 \
    http://127.0.0.1:9001/prepare http://127.0.0.1:9002/prepare`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeoutMs < 1 {
				return failed(cmd, usageErrorf("--timeout must be at least 1 ms"))
			}
			c, err := cf.client()
			if err != nil {
				return failed(cmd, err)
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if wait <= 0 {
				wait = 2*time.Duration(timeoutMs)*time.Millisecond + 30*time.Second
			}
			ctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			out, err := c.Submit(ctx, client.Transaction{Services: client.Services(args...), Timeout: time.Duration(timeoutMs) * time.Millisecond, IdempotencyKey: key})
			var inc *client.IncompleteError
			if errors.As(err, &inc) {
				fmt.Fprintln(cmd.ErrOrStderr(), "txcoord:", err)
				if cf.output == "json" {
					_ = printJSON(cmd.OutOrStdout(), map[string]string{"transactionId": inc.TransactionID, "status": inc.Status, "idempotencyKey": inc.IdempotencyKey})
				}
				return exitCode(exitPending)
			}
			if err != nil {
				return failed(cmd, err)
			}
			if cf.output == "json" {
				_ = printJSON(cmd.OutOrStdout(), out)
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id\t%s\nstatus\t%s\nerrors\t%s\n", out.TransactionID, out.Status, orDash(strings.Join(out.Errors, "; ")))
				_ = tw.Flush()
			}
			if out.Status != api.StatusCommitted {
				return exitCode(exitRolledBack)
			}
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.SetFlagErrorFunc(flagError)
	f := cmd.Flags()
	f.IntVar(&timeoutMs, "timeout", 5000, "phase-one timeout in ms (the server's default)")
	f.StringVar(&key, "key", "", "Idempotency-Key: a retry with the same key returns the same transaction (default: a fresh one)")
	f.DurationVar(&wait, "wait", 0, "give up after this long (default: twice --timeout plus 30s)")
	return cmd
}
