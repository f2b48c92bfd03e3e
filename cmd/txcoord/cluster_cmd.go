package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/cluster"
)

func init() { extraCommands = append(extraCommands, newClusterCmd) }

func newClusterCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change cluster membership through any node's HTTP API",
	}
	cmd.PersistentFlags().StringVar(&node, "node", "http://127.0.0.1:8081", "base URL of any node")

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Members, roles, leader, term, commit and applied index, last contact, per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st cluster.Status
			if err := apiCall(cmd.Context(), http.MethodGet, node, "/v1/cluster", nil, &st); err != nil {
				return err
			}
			// Health per member is measured by the leader's autopilot: ask the leader.
			health := map[string]*cluster.MemberHealth{}
			lv := st
			if st.Role != "leader" && st.LeaderHTTP != "" {
				if err := apiCall(cmd.Context(), http.MethodGet, baseURL(st.LeaderHTTP), "/v1/cluster", nil, &lv); err != nil {
					lv = cluster.Status{}
				}
			}
			for _, m := range lv.Members {
				health[m.ID] = m.Health
			}
			views := make([]cluster.Status, len(st.Members))
			errs := make([]error, len(st.Members))
			for i, m := range st.Members {
				if m.HTTPAddr == "" {
					errs[i] = fmt.Errorf("HTTP address unknown")
					continue
				}
				errs[i] = apiCall(cmd.Context(), http.MethodGet, baseURL(m.HTTPAddr), "/v1/cluster", nil, &views[i])
			}
			if asJSON {
				out := map[string]any{"cluster": st, "nodes": views, "leader": lv}
				b, _ := json.MarshalIndent(out, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "leader %s, term %d, %d members", orDash(st.LeaderID), st.Term, len(st.Members))
			if ap := lv.Autopilot; ap != nil {
				word := "healthy"
				if !ap.Healthy {
					word = "NOT healthy"
				}
				fmt.Fprintf(cmd.OutOrStdout(), ", %s, failure tolerance %d", word, ap.FailureTolerance)
			}
			fmt.Fprint(cmd.OutOrStdout(), "\n\n")
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSUFFRAGE\tHEALTH\tLAG\tROLE\tTERM\tCOMMIT\tAPPLIED\tLAST CONTACT\tREADY\tRAFT\tHTTP")
			for i, m := range st.Members {
				v := views[i]
				hl, lag := healthWord(health[m.ID])
				if errs[i] != nil {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tunreachable\t-\t-\t-\t-\t-\t%s\t%s (%v)\n", m.ID, m.Suffrage, hl, lag, m.RaftAddr, orDash(m.HTTPAddr), errs[i])
					continue
				}
				contact := "-"
				if v.LastContact != "" {
					if t, err := time.Parse(time.RFC3339Nano, v.LastContact); err == nil {
						contact = time.Since(t).Round(time.Millisecond).String() + " ago"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%v\t%s\t%s\n", m.ID, m.Suffrage, hl, lag, v.Role, v.Term, v.CommitIndex, v.AppliedIndex, contact, v.Ready, m.RaftAddr, m.HTTPAddr)
			}
			return tw.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var id, raftAddr, httpAddr string
	var wait time.Duration
	join := &cobra.Command{
		Use:   "join --id ID --raft-addr HOST:PORT [--http-addr HOST:PORT] [--wait 2m]",
		Short: "Add a started node to the cluster: a non-voter until autopilot promotes it",
		Long: `Asks the leader to add a running node. The leader refuses a node it cannot reach on its
Raft port, an id or address that is already another member's, and a build too old for the
cluster. The node joins as a non-voter; autopilot promotes it to voter once it is caught up
and has stayed healthy for the stabilization time (--server-stabilization-time on the
servers). With --wait (the default 2m) the command waits for that promotion and fails if it
did not happen in time; --wait 0 returns once the node is added.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || raftAddr == "" {
				return fmt.Errorf("--id and --raft-addr are required")
			}
			if err := membership(cmd, node, "join", map[string]string{"id": id, "raftAddr": raftAddr, "httpAddr": httpAddr}); err != nil {
				return err
			}
			return waitVoter(cmd, node, id, wait)
		},
	}
	join.Flags().DurationVar(&wait, "wait", 2*time.Minute, "wait this long for autopilot to promote the node to voter (0: do not wait)")
	join.Flags().StringVar(&id, "id", "", "the new node's --node-id")
	join.Flags().StringVar(&raftAddr, "raft-addr", "", "the new node's Raft address as other nodes dial it")
	join.Flags().StringVar(&httpAddr, "http-addr", "", "the new node's HTTP API address")

	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server from the cluster (idempotent)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return membership(cmd, node, "remove", map[string]string{"id": args[0]})
		},
	}
	var to string
	transfer := &cobra.Command{
		Use:   "transfer-leadership [--to ID]",
		Short: "Hand leadership to another voter (the most up-to-date one without --to)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return membership(cmd, node, "transfer-leadership", map[string]string{"to": to})
		},
	}
	transfer.Flags().StringVar(&to, "to", "", "id of the voter that should lead")
	cmd.AddCommand(status, join, remove, transfer)
	return cmd
}

// healthWord renders a member's health for the status table.
func healthWord(h *cluster.MemberHealth) (health, lag string) {
	if h == nil {
		return "-", "-"
	}
	word := "healthy"
	if !h.Healthy {
		word = "unhealthy"
		if h.Status != "" && h.Status != "alive" {
			word += " (" + h.Status + ")"
		}
	}
	return word, fmt.Sprint(h.Lag)
}

// waitVoter polls the cluster until member id is a voter, for up to wait.
func waitVoter(cmd *cobra.Command, node, id string, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	deadline := time.Now().Add(wait)
	for {
		var st cluster.Status
		err := apiCall(ctx, http.MethodGet, node, "/v1/cluster", nil, &st)
		if err == nil {
			for _, m := range st.Members {
				if m.ID == id && m.Suffrage == "voter" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s is a voter\n", id)
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was added but is still not a voter after %s: autopilot promotes it once it is reachable, caught up and stable; see txcoord cluster status", id, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func membership(cmd *cobra.Command, node, action string, body map[string]string) error {
	var st cluster.Status
	if err := apiCall(cmd.Context(), http.MethodPost, node, "/v1/cluster/"+action, body, &st); err != nil {
		return err
	}
	// A new leader is known a moment after a transfer or the removal of the old one.
	for i := 0; i < 30 && st.LeaderID == ""; i++ {
		time.Sleep(100 * time.Millisecond)
		_ = apiCall(cmd.Context(), http.MethodGet, node, "/v1/cluster", nil, &st)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s done: leader %s, term %d, members:", action, orDash(st.LeaderID), st.Term)
	for _, m := range st.Members {
		fmt.Fprintf(cmd.OutOrStdout(), " %s", m.ID)
	}
	fmt.Fprintln(cmd.OutOrStdout())
	return nil
}

// apiCall sends one request to a node's API and decodes a 2xx JSON answer into out; any
// other answer becomes an error carrying the API's {"error","detail"}.
func apiCall(ctx context.Context, method, base, path string, in, out any) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, body)
	if err != nil {
		return fmt.Errorf("--node %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	setCLIAuth(req.Header, true)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Detail string }
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: HTTP %d %s: %s", method, path, resp.StatusCode, e.Error, e.Detail)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
		}
	}
	return nil
}

func baseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return addr
	}
	return "http://" + addr
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
