package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/internal/conformance"
	"github.com/txcoord/txcoord/participant"
)

func init() { extraCommands = append(extraCommands, newParticipantCheckCmd) }

// newParticipantCheckCmd returns `txcoord participant-check`: the conformance kit.
func newParticipantCheckCmd() *cobra.Command {
	var (
		ep      participant.Endpoints
		output  string
		timeout time.Duration
		inq     conformance.Config
	)
	cmd := &cobra.Command{
		Use:   "participant-check --prepare URL",
		Short: "Check a live participant against the participant protocol (any language)",
		Long: `Sends a live participant the calls a coordinator may send, each on a fresh
transaction id starting with "conformance-", and prints a pass/fail table with what it
answered: reply format; the same vote for a repeated Prepare; Commit and Rollback of a
prepared transaction ACKed, and ACKed again when repeated; Rollback of an unknown
transaction ACKed and a later Prepare for it refused (the tombstone); Commit of a
transaction never prepared refused (docs/participant-protocol.md). The participant must be
able to vote yes (checks that need an ACKed Prepare are skipped otherwise). It holds and
releases a unit or two of the participant's resources.

Inquiry (checks "inquires" and "inquiry-applied"): the kit also acts as the coordinator
cluster's inquiry route on --inquiry-listen, sends a Prepare with a deadline 1 s ahead and
its own URL in the "inquiry" list, and sends no decision. The participant must ask
GET {url}/v1/transactions/{id}/outcome?deadline=... within --inquiry-within past the
deadline; the kit answers pending, and rolled_back to the next inquiry, which the
participant must apply (a Prepare of it is then refused). A participant that does not ask
is reported "does not inquire (required for fast mode)": a WARN, or a FAIL with --fast (for
a participant meant for transactions run in fast mode). This adds about 5 s to a run
(up to 1 s + twice --inquiry-within for a participant that does not ask).

Exit status: 0 every check passed (warnings allowed); 1 a check failed or was skipped;
64 bad flags.`,
		Example: `  txcoord participant-check --prepare http://127.0.0.1:9101/prepare
  python3 examples/python-participant/participant.py --listen 127.0.0.1:9101 &`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return failed(cmd, usageErrorf("--output must be table or json, not %q", output))
			}
			if ep.Prepare == "" {
				return failed(cmd, usageErrorf("--prepare is required"))
			}
			if ep.Commit == "" && ep.Rollback == "" {
				d, err := participant.Derive(ep.Prepare)
				if err != nil {
					return failed(cmd, usageErrorf("--prepare: %v", err))
				}
				ep = d
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			cfg := inq
			cfg.Endpoints, cfg.CallTimeout = ep, timeout
			rs, err := conformance.Run(ctx, cfg)
			if err != nil {
				return failed(cmd, usageErrorf("%v", err))
			}
			if output == "json" {
				_ = printJSON(cmd.OutOrStdout(), rs)
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECK\tRESULT\tWANT\tSAW")
				for _, r := range rs {
					res := "pass"
					if r.Skipped {
						res = "SKIPPED"
					} else if r.Warning {
						res = "WARN"
					} else if !r.Pass {
						res = "FAIL"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, res, r.Want, r.Saw)
				}
				_ = tw.Flush()
			}
			for _, r := range rs {
				if !r.Pass && !r.Warning {
					return exitCode(exitError)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ep.Prepare, "prepare", "", "the participant's prepare URL (commit and rollback URLs derived unless given)")
	f.StringVar(&ep.Commit, "commit", "", "commit URL, with --rollback, when not derived from --prepare")
	f.StringVar(&ep.Rollback, "rollback", "", "rollback URL, with --commit")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.DurationVar(&timeout, "call-timeout", 10*time.Second, "bound on each call")
	f.BoolVar(&inq.FastMode, "fast", false, "the participant is meant for fast mode: a participant that does not inquire fails (default: a warning)")
	f.StringVar(&inq.InquiryListen, "inquiry-listen", "127.0.0.1:0", "address where the kit answers the participant's inquiries")
	f.StringVar(&inq.InquiryURL, "inquiry-url", "", `base URL sent in the Prepare's "inquiry" list (default "http://" + the --inquiry-listen address)`)
	f.DurationVar(&inq.InquiryWithin, "inquiry-within", conformance.DefaultInquiryWithin, "how long past the deadline, and after a pending answer, the participant may take to ask; negative skips the inquiry checks")
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}
