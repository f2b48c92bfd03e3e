// Command txcoord is the txcoord coordinator: `txcoord serve` runs one node of a
// Raft-replicated two-phase-commit cluster, `txcoord dev` a whole local cluster with demo
// participants, `txcoord submit` sends a transaction. `txcoord --help` lists the rest.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		var ec exitCode
		if asExit(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "txcoord:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "txcoord",
		Short:         "A highly available two-phase-commit coordinator replicated with Raft",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newDevCmd(), newSubmitCmd())
	for _, extra := range extraCommands {
		root.AddCommand(extra())
	}
	// Every usage error, in every command, exits 64 (README: "64 bad flags"): a wrong
	// number of arguments as much as an unknown flag.
	root.SetFlagErrorFunc(flagError)
	var wrap func(c *cobra.Command)
	wrap = func(c *cobra.Command) {
		if c.Args != nil {
			c.Args = usageArgs(c.Args)
		}
		for _, sub := range c.Commands() {
			wrap(sub)
		}
	}
	wrap(root)
	return root
}

// extraCommands lets subcommands that live in their own files register themselves.
var extraCommands []func() *cobra.Command

// exitCode is an error that only sets the process's exit status (its message was already
// printed).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func asExit(err error, out *exitCode) bool {
	ec, ok := err.(exitCode)
	if ok {
		*out = ec
	}
	return ok
}
