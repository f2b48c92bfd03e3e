package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
)

func init() { extraCommands = append(extraCommands, newTxnCmd) }

// Exit statuses of the commands that talk to a node (also in `txcoord txn --help`).
const (
	exitOK         = 0  // done
	exitError      = 1  // the node could not be reached, refused (401, 5xx) or answered nonsense
	exitRolledBack = 2  // submit: the transaction rolled back or failed
	exitPending    = 3  // submit: the outcome was not known before --wait ran out
	exitNotFound   = 4  // no such transaction
	exitConflict   = 5  // the action does not apply (retry/resolve), or an Idempotency-Key reused
	exitUsage      = 64 // bad flags or arguments, or a 400 from the node
)

const exitCodesHelp = `Exit status: 0 done; 1 node unreachable, refused (401, 5xx) or a bad answer;
2 (submit) rolled_back or failed; 3 (submit) outcome not known in time; 4 not found;
5 conflict (the action does not apply, or the Idempotency-Key was used for another
transaction); 64 bad flags or arguments (including a 400 from the node).`

// defaultNode is --node's default: serve's default --http-addr. The container image and
// the Kubernetes manifests listen on :8080 (use --node http://HOST:8080 or TXCOORD_NODE).
const defaultNode = "http://127.0.0.1:8081"

// connFlags are the flags of every command that talks to a node.
type connFlags struct {
	nodes        []string
	token        string
	tlsCA        string
	tlsInsecure  bool
	output       string
	preferClustr bool // operator actions: TXCOORD_CLUSTER_TOKEN before the client token
}

func (f *connFlags) register(fs *pflag.FlagSet) {
	def := []string{defaultNode}
	if v := os.Getenv("TXCOORD_NODE"); v != "" {
		def = strings.Split(v, ",")
	}
	fs.StringSliceVar(&f.nodes, "node", def, "base URL of one or more nodes, comma separated, tried in turn (env TXCOORD_NODE; the default is serve's --http-addr; the container image listens on :8080)")
	fs.StringVar(&f.token, "token", "", "bearer token (default: env "+envToken+", else the first of "+envAPITokens+"; operator actions prefer "+envClusterToken+")")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of the CA that signed the nodes' certificates (default: the system roots) for https:// nodes")
	fs.BoolVar(&f.tlsInsecure, "tls-insecure-skip-verify", false, "do not verify the nodes' certificates (tests only)")
	fs.StringVarP(&f.output, "output", "o", "table", "table (for people) or json (for scripts)")
}

// registerWithWait registers f's flags and --wait (into wait) on c, and returns c.
func (f *connFlags) registerWithWait(c *cobra.Command, wait *time.Duration) *cobra.Command {
	f.register(c.Flags())
	c.Flags().DurationVar(wait, "wait", 30*time.Second, "give up after this long (retrying unreachable nodes and 503 answers until then)")
	return c
}

// waitContext is cmd's context (Background when it has none) bounded by --wait's d.
func waitContext(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, d)
}

// tokenValue is the token a command sends: --token, else the environment as setCLIAuth
// reads it.
func (f *connFlags) tokenValue() string {
	if f.token != "" {
		return f.token
	}
	h := make(map[string][]string)
	setCLIAuth(h, f.preferClustr)
	if v := h["Authorization"]; len(v) > 0 {
		return strings.TrimPrefix(v[0], "Bearer ")
	}
	return ""
}

func (f *connFlags) client() (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usageErrorf("--output must be table or json, not %q", f.output)
	}
	var tc *tls.Config
	if f.tlsCA != "" || f.tlsInsecure {
		tc = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.tlsInsecure}
		if f.tlsCA != "" {
			pem, err := os.ReadFile(f.tlsCA)
			if err != nil {
				return nil, usageErrorf("--tls-ca: %v", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, usageErrorf("--tls-ca %s: no PEM certificate in it", f.tlsCA)
			}
		}
	}
	c, err := client.New(f.nodes, client.Options{Token: f.tokenValue(), TLS: tc})
	if err != nil {
		return nil, usageErrorf("--node: %v", err)
	}
	return c, nil
}

// usageError is a bad flag or argument: exit status 64.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// failed prints err and returns the exit status it maps to.
func failed(cmd *cobra.Command, err error) error {
	fmt.Fprintln(cmd.ErrOrStderr(), "txcoord:", err)
	var ue *usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, api.ErrBadRequest):
		return exitCode(exitUsage)
	case errors.Is(err, api.ErrNotFound):
		return exitCode(exitNotFound)
	case errors.Is(err, api.ErrConflict):
		return exitCode(exitConflict)
	default:
		return exitCode(exitError)
	}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func printTxns(w io.Writer, ts []api.TransactionView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tDECISION\tCREATED\tPARTICIPANTS\tERRORS")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.TransactionID, t.Status, orDash(t.Decision), t.CreatedAt, len(t.Participants), orDash(strings.Join(t.Errors, "; ")))
	}
	return tw.Flush()
}

func printTxn(w io.Writer, t *api.TransactionView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{{"id", t.TransactionID}, {"status", t.Status}, {"decision", orDash(t.Decision)},
		{"idempotency key", orDash(t.IdempotencyKey)}, {"timeout", fmt.Sprintf("%d ms", t.TimeoutMs)},
		{"created", t.CreatedAt}, {"deadline", t.Deadline}, {"decided", orDash(t.DecidedAt)}, {"finished", orDash(t.FinishedAt)},
		{"note", orDash(t.Note)}, {"errors", orDash(strings.Join(t.Errors, "; "))}}
	if t.Read != nil {
		rows = append(rows, [2]string{"read", fmt.Sprintf("%s on %s (%s) at applied index %d", t.Read.Consistency, t.Read.NodeID, t.Read.Role, t.Read.AppliedIndex)})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREPARE\tVOTE\tREASON\tACKED\tATTEMPTS\tLAST ERROR")
	for _, p := range t.Participants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\n", p.Prepare, orDash(p.Vote), orDash(p.Reason), p.Acknowledged, p.Attempts, orDash(p.LastError))
	}
	return tw.Flush()
}

func newTxnCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "Look up, list, retry and resolve transactions through any node's API",
		Long: `Look up, list, retry and resolve transactions through any node (followers forward
to the leader). Every subcommand takes --node (one or more), --token and the TLS flags,
and prints a table, or JSON with --output json.

` + exitCodesHelp,
	}
	withConn := func(c *cobra.Command, f *connFlags, wait *time.Duration) *cobra.Command {
		return f.registerWithWait(c, wait)
	}
	ctxFor := waitContext

	var gf connFlags
	var gwait time.Duration
	var consistency string
	get := withConn(&cobra.Command{
		Use:   "get ID",
		Short: "Show one transaction: status, decision, every participant's vote and acknowledgement",
		Long:  "Shows GET /v1/transactions/ID.\n\n" + exitCodesHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := gf.client()
			if err != nil {
				return failed(cmd, err)
			}
			ctx, cancel := ctxFor(cmd, gwait)
			defer cancel()
			t, err := c.Get(ctx, args[0], client.ReadOptions{Consistency: consistency})
			if err != nil {
				return failed(cmd, err)
			}
			if gf.output == "json" {
				return printJSON(cmd.OutOrStdout(), t)
			}
			return printTxn(cmd.OutOrStdout(), t)
		},
	}, &gf, &gwait)
	get.Flags().StringVar(&consistency, "consistency", "", "default (read your writes), stale or linearizable (docs/reads.md)")

	var lf connFlags
	var lwait time.Duration
	var lo client.ListOptions
	var from, to string
	var all bool
	list := withConn(&cobra.Command{
		Use:   "list",
		Short: "List transactions, newest first, with filters",
		Long: `Lists GET /v1/transactions: newest first (--asc: oldest first), filtered by status,
participant, Idempotency-Key and creation time. Prints one page of --limit records and
the cursor of the next (pass it to --after), or every page with --all.

` + exitCodesHelp,
		Example: `  txcoord txn list --status failed
  txcoord txn list --participant hotel:9001 --from 2026-01-02T15:00:00Z --all -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return failed(cmd, err)
			}
			for _, tv := range []struct {
				flag, v string
				dst     *time.Time
			}{{"--from", from, &lo.CreatedFrom}, {"--to", to, &lo.CreatedTo}} {
				if tv.v == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339Nano, tv.v)
				if err != nil {
					return failed(cmd, usageErrorf("%s: want RFC 3339 (2026-01-02T15:04:05Z): %v", tv.flag, err))
				}
				*tv.dst = t
			}
			ctx, cancel := ctxFor(cmd, lwait)
			defer cancel()
			var ts []api.TransactionView
			next := ""
			if all {
				for t, err := range c.List(ctx, lo) {
					if err != nil {
						return failed(cmd, err)
					}
					ts = append(ts, t)
				}
			} else {
				p, err := c.ListPage(ctx, lo)
				if err != nil {
					return failed(cmd, err)
				}
				ts, next = p.Transactions, p.Next
			}
			if lf.output == "json" {
				if ts == nil {
					ts = []api.TransactionView{}
				}
				return printJSON(cmd.OutOrStdout(), api.TransactionList{Transactions: ts, Next: next})
			}
			if err := printTxns(cmd.OutOrStdout(), ts); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "\nmore: --after %s\n", next)
			}
			return nil
		},
	}, &lf, &lwait)
	fl := list.Flags()
	fl.StringVar(&lo.Status, "status", "", "only this status: "+strings.Join(api.Statuses, ", "))
	fl.StringVar(&lo.Participant, "participant", "", "only transactions with this participant (host, host:port or URL)")
	fl.StringVar(&lo.Key, "key", "", "only the transaction with this Idempotency-Key")
	fl.StringVar(&from, "from", "", "created at or after (RFC 3339)")
	fl.StringVar(&to, "to", "", "created before (RFC 3339)")
	fl.BoolVar(&lo.Ascending, "asc", false, "oldest first")
	fl.IntVar(&lo.PageSize, "limit", 100, "records per page, 1 to 1000")
	fl.StringVar(&lo.After, "after", "", "start after this cursor (the \"next\" of a page)")
	fl.BoolVar(&all, "all", false, "fetch every page")
	fl.StringVar(&lo.Consistency, "consistency", "", "default, stale or linearizable")

	var sf connFlags
	var swait, older time.Duration
	stuck := withConn(&cobra.Command{
		Use:   "stuck",
		Short: "List failed transactions and those unfinished for longer than --older-than",
		Long:  "Lists GET /v1/stuck: what needs an operator (then `txcoord txn retry` or `resolve`).\n\n" + exitCodesHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sf.client()
			if err != nil {
				return failed(cmd, err)
			}
			ctx, cancel := ctxFor(cmd, swait)
			defer cancel()
			ts, err := c.Stuck(ctx, older)
			if err != nil {
				return failed(cmd, err)
			}
			if sf.output == "json" {
				return printJSON(cmd.OutOrStdout(), api.StuckList{Transactions: ts})
			}
			return printTxns(cmd.OutOrStdout(), ts)
		},
	}, &sf, &swait)
	stuck.Flags().DurationVar(&older, "older-than", 30*time.Second, "unfinished for at least this long (ms precision)")

	operator := func(action, short string, do func(*client.Client, context.Context, string, string) (*api.TransactionView, error), noteRequired bool) *cobra.Command {
		var of connFlags
		of.preferClustr = true
		var owait time.Duration
		var note string
		c := withConn(&cobra.Command{
			Use:   action + " ID --note TEXT",
			Short: short,
			Long: short + ". Goes through the leader and the Raft log. Needs the cluster token when the\n" +
				"cluster has one (--token, or env " + envClusterToken + ").\n\n" + exitCodesHelp,
			Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if noteRequired && strings.TrimSpace(note) == "" {
					return failed(cmd, usageErrorf("--note is required: say how the transaction was settled"))
				}
				c, err := of.client()
				if err != nil {
					return failed(cmd, err)
				}
				ctx, cancel := ctxFor(cmd, owait)
				defer cancel()
				t, err := do(c, ctx, args[0], note)
				if err != nil {
					return failed(cmd, err)
				}
				if of.output == "json" {
					return printJSON(cmd.OutOrStdout(), t)
				}
				return printTxn(cmd.OutOrStdout(), t)
			},
		}, &of, &owait)
		c.Flags().StringVar(&note, "note", "", "why (at most 1024 bytes; recorded with the transaction)")
		return c
	}
	retry := operator("retry", "Resume phase two of a failed transaction", (*client.Client).Retry, false)
	resolve := operator("resolve", "Mark a failed transaction settled by hand", (*client.Client).Resolve, true)
	cmd.AddCommand(get, list, stuck, retry, resolve)
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}

// flagError makes a bad flag exit with status 64 (cobra prints nothing itself: the root
// silences errors).
func flagError(cmd *cobra.Command, err error) error {
	return failed(cmd, usageErrorf("%v (see %s --help)", err, cmd.CommandPath()))
}
