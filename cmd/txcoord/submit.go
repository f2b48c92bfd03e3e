package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
		payloads  []string
		mode      string
		bodyFile  string
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


--payload PREPARE_URL=JSON gives that participant a payload (repeatable); --body FILE
("-": standard input) reads the services and timeout from a JSON request body instead.

` + exitCodesHelp,
		Example: `  txcoord submit --node http://127.0.0.1:8081 --timeout 1000 \
    http://127.0.0.1:9001/prepare http://127.0.0.1:9002/prepare`,
		Args: func(cmd *cobra.Command, args []string) error {
			if bodyFile != "" {
				if len(args) > 0 || len(payloads) > 0 {
					return usageErrorf("--body gives the whole request: no PREPARE_URL arguments or --payload with it")
				}
				return nil
			}
			return cobra.MinimumNArgs(1)(cmd, args)
		},
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
			services, timeout, err := submitServices(cmd.InOrStdin(), bodyFile, args, payloads, time.Duration(timeoutMs)*time.Millisecond, &mode)
			if err != nil {
				return failed(cmd, usageErrorf("%v", err))
			}
			if mode != "" && mode != api.ModeDefault && mode != api.ModeFast {
				return failed(cmd, usageErrorf("--mode must be default or fast, not %q", mode))
			}
			out, err := c.Submit(ctx, client.Transaction{Services: services, Timeout: timeout, IdempotencyKey: key, Mode: mode})
			var inc *client.IncompleteError
			if errors.As(err, &inc) && inc.NeverSent {
				return failed(cmd, err) // unreachable: nothing can have started (exit 1)
			}
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
	f.StringVar(&mode, "mode", "", "default or fast (docs/fast-path.md); empty: the cluster's --default-mode")
	f.StringArrayVar(&payloads, "payload", nil, "PREPARE_URL=JSON: the payload sent to that participant in its Prepare (repeatable)")
	f.StringVar(&bodyFile, "body", "", `file holding a JSON request body {"services": [...], "timeout": MS} ("-": standard input)`)
	f.DurationVar(&wait, "wait", 0, "give up after this long (default: twice --timeout plus 30s)")
	return cmd
}

// submitServices returns the services and timeout of the transaction to submit: from the
// --body file, or the PREPARE_URL arguments, each with its --payload if any. A "mode" in
// the --body file is set in *mode unless --mode gave one.
func submitServices(stdin io.Reader, bodyFile string, urls, payloads []string, timeout time.Duration, mode *string) ([]api.Service, time.Duration, error) {
	if bodyFile != "" {
		var raw []byte
		var err error
		if bodyFile == "-" {
			raw, err = io.ReadAll(io.LimitReader(stdin, 4<<20))
		} else {
			raw, err = os.ReadFile(bodyFile)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("--body: %w", err)
		}
		var req api.TransactionRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return nil, 0, fmt.Errorf("--body %s: %v", bodyFile, err)
		}
		if req.Mode != "" && *mode == "" {
			*mode = req.Mode
		}
		if req.TimeoutMs != nil {
			timeout = time.Duration(*req.TimeoutMs) * time.Millisecond
		}
		return req.Services, timeout, nil
	}
	services := client.Services(urls...)
	for _, p := range payloads {
		u, js, ok := strings.Cut(p, "=")
		if !ok || u == "" {
			return nil, 0, fmt.Errorf("--payload %q: want PREPARE_URL=JSON", p)
		}
		if !json.Valid([]byte(js)) {
			return nil, 0, fmt.Errorf("--payload for %s: %q is not valid JSON", u, js)
		}
		i := slices.Index(urls, u)
		if i < 0 {
			return nil, 0, fmt.Errorf("--payload for %s: not one of the PREPARE_URL arguments", u)
		}
		services[i].Payload = json.RawMessage(js)
	}
	return services, timeout, nil
}
