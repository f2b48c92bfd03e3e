package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/version"
)

func init() { extraCommands = append(extraCommands, newVersionCmd) }

// newVersionCmd returns `txcoord version`: this binary's release, commit, feature level and
// Go toolchain. A running node reports the same in GET /v1/cluster (version, and the
// cluster's featureLevel).
func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print this build's version, commit and feature level",
		Long: `Prints the release version, the commit this binary was built from, the highest feature
level it supports and the Go version. A cluster enables a feature level (and with it new
log command types) only once every server runs a build that supports it: see
docs/operations.md, "Upgrades".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{
					"version": version.Version, "commit": version.CommitHash(),
					"featureLevel": version.FeatureLevel, "go": runtime.Version(),
				})
			}
			commit := version.CommitHash()
			if commit == "" {
				commit = "unknown"
			}
			_, err := fmt.Fprintf(out, "txcoord %s\ncommit:        %s\nfeature level: %d\ngo:            %s\n", version.Version, commit, version.FeatureLevel, runtime.Version())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: version, commit, featureLevel, go")
	return cmd
}
