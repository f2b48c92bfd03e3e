package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/cluster"
)

func init() { extraCommands = append(extraCommands, newPeersCmd) }

// newPeersCmd returns `txcoord peers`: the cluster-formation protocol on a node's Raft port,
// for operators (what a node knows about formation; removing a voter when scaling down or
// replacing a node).
func newPeersCmd() *cobra.Command {
	var (
		via     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "Inspect cluster formation and remove voters, through a node's Raft port",
		Long: `Talks to a node's Raft port (--via host:port), where every txcoord serve answers the
cluster-formation protocol. "info" prints what that node reports to its peers (id, Raft
address, whether it has Raft state, its leader and term, the nodes it has found); "remove
ID" asks the leader to remove a voter from the Raft configuration (a follower forwards
the request to the leader). The Raft port is unauthenticated: keep it on a private network.`,
	}
	cmd.PersistentFlags().StringVar(&via, "via", "127.0.0.1:7000", "a node's Raft address, host:port")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	info := &cobra.Command{
		Use:   "info",
		Short: "Print what a node reports about itself and the nodes it has found",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pi, err := cluster.Probe(cmd.Context(), via, timeout)
			if err != nil {
				return err
			}
			out, _ := json.MarshalIndent(pi, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a voter from the Raft configuration (idempotent)",
		Example: `  txcoord peers remove txcoord-4 --via txcoord-0.txcoord-peers:7000
  kubectl exec txcoord-0 -- /usr/local/bin/txcoord peers remove txcoord-4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cluster.RemovePeer(cmd.Context(), via, args[0], timeout); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is not a member any more\n", args[0])
			return nil
		},
	}
	var dataDir, servers string
	writeRecovery := &cobra.Command{
		Use:   "write-recovery --data-dir DIR --servers ID=RAFTADDR,...",
		Short: "Write DIR/peers.json: the next start forces the Raft configuration to these servers",
		Long: `After a permanent loss of quorum (docs/operations.md): on every surviving node, write
the same list of survivors (ids and Raft addresses) into its data directory, then restart
the nodes. txcoord serve finds DIR/peers.json, forces the Raft configuration to exactly
those servers (entries in the local log count as committed), renames the file to
peers.json.applied-<time>, and starts; the survivors elect a leader among themselves.
Works in a running container (kubectl exec): the file is applied at the next start.`,
		Example: `  kubectl exec txcoord-0 -- /usr/local/bin/txcoord peers write-recovery --data-dir /data \
    --servers txcoord-0=txcoord-0.txcoord-peers.default.svc:7000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			peers, err := parsePeers(servers)
			if err != nil {
				return err
			}
			if err := cluster.WritePeersJSON(dataDir, peers); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/%s (%d servers): restart the node to apply it\n", dataDir, cluster.PeersJSON, len(peers))
			return nil
		},
	}
	writeRecovery.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory")
	writeRecovery.Flags().StringVar(&servers, "servers", "", "the survivors, id=raftaddr,... (the same list on every survivor)")
	var from string
	restore := &cobra.Command{
		Use:   "restore --from BACKUP --data-dir DIR --servers ID=RAFTADDR,...",
		Short: "Copy a backup into an empty data directory and write its peers.json",
		Long: `Restores a backup (a copied data directory, or a directory holding snapshots/<term>-<index>-<ms>/)
into the empty data directory DIR and writes DIR/peers.json naming --servers (usually just
this node): the next txcoord serve on DIR starts a cluster holding the backup. Run it as the
user the node runs as (the image's txcoord user), e.g. with docker compose run.`,
		Example: `  docker compose run --rm --no-deps -v "$PWD/backup:/backup:ro" coord1 \
    peers restore --from /backup --data-dir /data --servers coord1=coord1-raft:7000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || dataDir == "" {
				return fmt.Errorf("--from and --data-dir are required")
			}
			peers, err := parsePeers(servers)
			if err != nil {
				return err
			}
			if len(peers) == 0 {
				return fmt.Errorf("--servers is required")
			}
			if err := cluster.RestoreDataDir(from, dataDir); err != nil {
				return err
			}
			if err := cluster.WritePeersJSON(dataDir, peers); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s and wrote %s: start the node\n", from, dataDir, cluster.PeersJSON)
			return nil
		},
	}
	restore.Flags().StringVar(&from, "from", "", "the backup directory")
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the node's (empty) data directory")
	restore.Flags().StringVar(&servers, "servers", "", "the servers of the restored cluster, id=raftaddr,...")
	cmd.AddCommand(info, remove, writeRecovery, restore)
	return cmd
}
