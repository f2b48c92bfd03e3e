package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
)

func init() { extraCommands = append(extraCommands, newClusterCmd) }

const clusterExitHelp = `Exit status: 0 done; 1 node unreachable, refused (401, 5xx) or a bad answer; 4 no such
voter (transfer-leadership --to); 5 conflict (the change does not apply); 64 bad flags or arguments
(including a 400 from the node).`

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change cluster membership through any node's HTTP API",
		Long: `Inspect and change cluster membership through any node (followers pass changes on to
the leader). Every subcommand takes --node (one or more), --token and the TLS flags, and
prints a table, or JSON with --output json. Changes need the cluster token when the
cluster has one (--token, or env ` + envClusterToken + `).

` + clusterExitHelp,
	}
	withConn := func(c *cobra.Command, f *connFlags, wait *time.Duration) *cobra.Command {
		f.preferClustr = true
		c.Long = c.Short + ".\n\n" + clusterExitHelp
		return f.registerWithWait(c, wait)
	}
	ctxFor := waitContext

	var sf connFlags
	var swait time.Duration
	var asJSON bool
	status := withConn(&cobra.Command{
		Use:   "status",
		Short: "Members, roles, leader, term, commit and applied index, last contact, per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				sf.output = "json"
			}
			c, err := sf.client()
			if err != nil {
				return failed(cmd, err)
			}
			ctx, cancel := ctxFor(cmd, swait)
			defer cancel()
			st, err := c.Cluster(ctx)
			if err != nil {
				return failed(cmd, err)
			}
			// Every other node is asked on its own short deadline, all at once: one that does
			// not answer (a paused or cut-off leader) is shown unreachable and never costs
			// the others their answers.
			at := func(addr string) (*api.ClusterStatus, error) {
				mctx, mcancel := context.WithTimeout(ctx, memberStatusTimeout)
				defer mcancel()
				return c.ClusterAt(mctx, addr)
			}
			// Health per member is measured by the leader's autopilot: ask the leader.
			lv := st
			views := make([]*api.ClusterStatus, len(st.Members))
			errs := make([]error, len(st.Members))
			var wg sync.WaitGroup
			if st.Role != "leader" && st.LeaderHTTP != "" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var lerr error
					if lv, lerr = at(st.LeaderHTTP); lerr != nil {
						lv = &api.ClusterStatus{}
					}
				}()
			}
			for i, m := range st.Members {
				if m.HTTPAddr == "" {
					errs[i] = fmt.Errorf("HTTP address unknown")
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					views[i], errs[i] = at(m.HTTPAddr)
				}()
			}
			wg.Wait()
			health := map[string]*api.MemberHealth{}
			for _, m := range lv.Members {
				health[m.ID] = m.Health
			}
			if sf.output == "json" {
				nodeErrs := map[string]string{}
				for i, e := range errs {
					if e != nil {
						nodeErrs[st.Members[i].ID] = e.Error()
					}
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"cluster": st, "nodes": views, "leader": lv, "errors": nodeErrs})
			}
			return printClusterStatus(cmd.OutOrStdout(), st, lv, health, views, errs)
		},
	}, &sf, &swait)
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON (same as --output json)")
	_ = status.Flags().MarkDeprecated("json", "use --output json")

	// change runs one membership change and prints the cluster after it.
	change := func(cmd *cobra.Command, f *connFlags, wait time.Duration, action string, do func(context.Context, *client.Client) (*api.ClusterStatus, error)) error {
		c, err := f.client()
		if err != nil {
			return failed(cmd, err)
		}
		ctx, cancel := ctxFor(cmd, wait)
		defer cancel()
		st, err := do(ctx, c)
		if err != nil {
			return failed(cmd, err)
		}
		// A new leader is known a moment after a transfer or the removal of the old one.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 30 && st.LeaderID == ""; i++ {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			if ctx.Err() != nil {
				break
			}
			if v, err := c.Cluster(ctx); err == nil {
				st = v
			}
		}
		if f.output == "json" {
			return printJSON(cmd.OutOrStdout(), st)
		}
		ids := make([]string, len(st.Members))
		for i, m := range st.Members {
			ids[i] = m.ID
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s done: leader %s, term %d, members: %s\n", action, orDash(st.LeaderID), st.Term, strings.Join(ids, " "))
		return nil
	}

	var jf connFlags
	var jwait time.Duration
	var id, raftAddr, httpAddr string
	join := &cobra.Command{
		Use:   "join --id ID --raft-addr HOST:PORT [--http-addr HOST:PORT] [--wait 2m]",
		Short: "Add a started node to the cluster: a non-voter until autopilot promotes it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || raftAddr == "" {
				return failed(cmd, usageErrorf("--id and --raft-addr are required"))
			}
			if err := change(cmd, &jf, max(jwait, 30*time.Second), "join", func(ctx context.Context, c *client.Client) (*api.ClusterStatus, error) {
				return c.Join(ctx, id, raftAddr, httpAddr)
			}); err != nil {
				return err
			}
			return waitVoter(cmd, &jf, id, jwait)
		},
	}
	jf.preferClustr = true
	jf.register(join.Flags())
	join.Flags().DurationVar(&jwait, "wait", 2*time.Minute, "wait this long for autopilot to promote the node to voter (0: do not wait)")
	join.Long = `Asks the leader to add a running node. The leader refuses a node it cannot reach on its
Raft port, an id or address that is already another member's, and a build too old for the
cluster. The node joins as a non-voter; autopilot promotes it to voter once it is caught up
and has stayed healthy for the stabilization time (--server-stabilization-time on the
servers). With --wait (the default 2m) the command waits for that promotion and fails (exit
1) if it did not happen in time; --wait 0 returns once the node is added.

` + clusterExitHelp
	join.Flags().StringVar(&id, "id", "", "the new node's --node-id")
	join.Flags().StringVar(&raftAddr, "raft-addr", "", "the new node's Raft address as other nodes dial it")
	join.Flags().StringVar(&httpAddr, "http-addr", "", "the new node's HTTP API address")

	var rf connFlags
	var rwait time.Duration
	remove := withConn(&cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server from the cluster (idempotent)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return change(cmd, &rf, rwait, "remove", func(ctx context.Context, c *client.Client) (*api.ClusterStatus, error) {
				return c.Remove(ctx, args[0])
			})
		},
	}, &rf, &rwait)

	var tf connFlags
	var twait time.Duration
	var to string
	transfer := withConn(&cobra.Command{
		Use:   "transfer-leadership [--to ID]",
		Short: "Hand leadership to another voter (the most up-to-date one without --to)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return change(cmd, &tf, twait, "transfer-leadership", func(ctx context.Context, c *client.Client) (*api.ClusterStatus, error) {
				return c.TransferLeadership(ctx, to)
			})
		},
	}, &tf, &twait)
	transfer.Flags().StringVar(&to, "to", "", "id of the voter that should lead")
	cmd.AddCommand(status, join, remove, transfer)
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}

// memberStatusTimeout bounds each member's answer to cluster status (GET /v1/cluster):
// a healthy node answers in milliseconds; one that does not within this is shown
// unreachable.
const memberStatusTimeout = 3 * time.Second

// usageArgs makes a wrong number of arguments exit with status 64 like a bad flag.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return failed(cmd, usageErrorf("%v (see %s --help)", err, cmd.CommandPath()))
		}
		return nil
	}
}

func printClusterStatus(w io.Writer, st, lv *api.ClusterStatus, health map[string]*api.MemberHealth, views []*api.ClusterStatus, errs []error) error {
	fmt.Fprintf(w, "leader %s, term %d, %d members", orDash(st.LeaderID), st.Term, len(st.Members))
	if ap := lv.Autopilot; ap != nil {
		word := "healthy"
		if !ap.Healthy {
			word = "NOT healthy"
		}
		fmt.Fprintf(w, ", %s, failure tolerance %d", word, ap.FailureTolerance)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSUFFRAGE\tHEALTH\tLAG\tROLE\tTERM\tCOMMIT\tAPPLIED\tLAST CONTACT\tREADY\tVERSION\tRAFT\tHTTP")
	for i, m := range st.Members {
		v := views[i]
		hl, lag := healthWord(health[m.ID])
		if errs[i] != nil || v == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tunreachable\t-\t-\t-\t-\t-\t%s\t%s\t%s (%v)\n", m.ID, m.Suffrage, hl, lag, orDash(m.Version), m.RaftAddr, orDash(m.HTTPAddr), errs[i])
			continue
		}
		contact := "-"
		if v.LastContact != "" {
			if t, err := time.Parse(time.RFC3339Nano, v.LastContact); err == nil {
				contact = time.Since(t).Round(time.Millisecond).String() + " ago"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%v\t%s\t%s\t%s\n", m.ID, m.Suffrage, hl, lag, v.Role, v.Term, v.CommitIndex, v.AppliedIndex, contact, v.Ready, orDash(v.Version), m.RaftAddr, m.HTTPAddr)
	}
	return tw.Flush()
}

// healthWord renders a member's health for the status table.
func healthWord(h *api.MemberHealth) (health, lag string) {
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
func waitVoter(cmd *cobra.Command, f *connFlags, id string, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	c, err := f.client()
	if err != nil {
		return failed(cmd, err)
	}
	ctx, cancel := waitContext(cmd, wait)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := c.Cluster(ctx); err == nil {
			for _, m := range st.Members {
				if m.ID == id && m.Suffrage == "voter" {
					if f.output != "json" {
						fmt.Fprintf(cmd.OutOrStdout(), "%s is a voter\n", id)
					}
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return failed(cmd, fmt.Errorf("%s was added but is still not a voter after %s: autopilot promotes it once it is reachable, caught up and stable; see txcoord cluster status", id, wait))
		case <-tick.C:
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
