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

Exit status: 0 every check passed; 1 a check failed or was skipped; 64 bad flags.`,
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
			rs, err := conformance.Run(ctx, conformance.Config{Endpoints: ep, CallTimeout: timeout})
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
					} else if !r.Pass {
						res = "FAIL"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, res, r.Want, r.Saw)
				}
				_ = tw.Flush()
			}
			for _, r := range rs {
				if !r.Pass {
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
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}
