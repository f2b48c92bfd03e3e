package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newSubmitCmd() *cobra.Command {
	var (
		node, key string
		timeoutMs int
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] PREPARE_URL...",
		Short: "Send one transaction to a node and print the answer",
		Long: `Sends {"services": [PREPARE_URL...], "timeout": MS} to POST /v1/transactions on
--node (any node: followers forward to the leader) and prints the JSON answer.
Exit status: 0 committed, 2 rolled_back or failed, 3 still in phase two (202), 1 any error.`,
		Example: `  txcoord submit --node http://127.0.0.1:8081 --timeout 1000 \
    http://127.0.0.1:9001/prepare http://127.0.0.1:9002/prepare`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeoutMs < 1 {
				return fmt.Errorf("--timeout must be at least 1 ms")
			}
			body, _ := json.Marshal(map[string]any{"services": args, "timeout": timeoutMs})
			req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(node, "/")+"/v1/transactions", bytes.NewReader(body))
			if err != nil {
				return fmt.Errorf("--node %q: %w", node, err)
			}
			req.Header.Set("Content-Type", "application/json")
			setCLIAuth(req.Header, false)
			if key != "" {
				req.Header.Set("Idempotency-Key", key)
			}
			hc := &http.Client{Timeout: 2*time.Duration(timeoutMs)*time.Millisecond + 30*time.Second}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
			if err != nil {
				return err
			}
			var pretty bytes.Buffer
			if json.Indent(&pretty, raw, "", "  ") == nil {
				raw = pretty.Bytes()
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(raw))
			var out struct {
				Status string `json:"status"`
			}
			_ = json.Unmarshal(raw, &out)
			switch {
			case resp.StatusCode == http.StatusOK && out.Status == "committed":
				return nil
			case resp.StatusCode == http.StatusOK:
				return exitCode(2)
			case resp.StatusCode == http.StatusAccepted:
				return exitCode(3)
			default:
				return exitCode(1)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "http://127.0.0.1:8081", "base URL of any node")
	f.IntVar(&timeoutMs, "timeout", 5000, "phase-one timeout in ms")
	f.StringVar(&key, "key", "", "Idempotency-Key: a retry with the same key returns the same transaction")
	return cmd
}
