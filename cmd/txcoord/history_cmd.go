package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/archive"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/server"
)

func init() { extraCommands = append(extraCommands, newHistoryCmd, newSnapshotCmd) }

// archiveFlags are serve's archive flags (issue 18).
type archiveFlags struct {
	maxBytes, segmentBytes int64
	maxAge                 time.Duration
	off                    bool
}

func (a *archiveFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Int64Var(&a.maxBytes, "archive-max-bytes", 1<<30, "the archive of pruned transactions (DATA/archive) keeps at most this many bytes; the oldest segments go first")
	f.DurationVar(&a.maxAge, "archive-max-age", 30*24*time.Hour, "the archive keeps a transaction this long after it finished (whichever of the two limits keeps less wins)")
	f.Int64Var(&a.segmentBytes, "archive-segment-bytes", 16<<20, "size at which the archive starts a new segment file (retention deletes whole segments)")
	f.BoolVar(&a.off, "no-archive", false, "keep no archive: pruned transactions are gone from this node (GET answers 404)")
}

func (a *archiveFlags) apply(c *server.Config) {
	c.Archive.MaxBytes, c.Archive.MaxAge, c.Archive.SegmentBytes = a.maxBytes, a.maxAge, a.segmentBytes
	c.NoArchive = a.off
}

func (a *archiveFlags) validate() error {
	if a.maxBytes <= 0 || a.maxAge <= 0 || a.segmentBytes <= 0 {
		return fmt.Errorf("--archive-max-bytes, --archive-max-age and --archive-segment-bytes must be positive")
	}
	return nil
}

// newHistoryCmd returns `txcoord history`: archived transactions as JSON lines.
func newHistoryCmd() *cobra.Command {
	var node, from, to string
	var limit int
	cmd := &cobra.Command{
		Use:   "history --node URL [--from TIME] [--to TIME]",
		Short: "Export archived (pruned) transactions created in [--from, --to) as JSON lines",
		Long: `Pages through GET /v1/history of one node and prints one JSON object per line: each
transaction as GET /v1/transactions/{id} shows it, with "archived": true. TIME is RFC 3339
(2026-01-02T15:04:05Z) or unix ms; either bound may be left out. Every node archives every
transaction it saw pruned; a node whose archive has gaps (it was restored from a snapshot)
says so on stderr.

` + exitCodesHelp,
		Example: `  txcoord history --node http://127.0.0.1:8081 --from 2026-03-01T00:00:00Z --to 2026-03-02T00:00:00Z > march-1.jsonl`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return failed(cmd, usageErrorf("--page must be from 1 to 1000, not %d", limit))
			}
			out := json.NewEncoder(cmd.OutOrStdout())
			after := ""
			warned := false
			for pages := 0; ; pages++ {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				for k, v := range map[string]string{"from": from, "to": to, "after": after} {
					if v != "" {
						q.Set(k, v)
					}
				}
				var page httpapi.HistoryPage
				if err := apiCall(cmd.Context(), http.MethodGet, node, "/v1/history?"+q.Encode(), nil, &page); err != nil {
					return failed(cmd, err)
				}
				if len(page.Gaps) > 0 && !warned {
					warned = true
					fmt.Fprintf(cmd.ErrOrStderr(), "txcoord: node %s's archive misses transactions pruned in Raft index ranges %v (it was restored from a snapshot); another node may have them\n", page.NodeID, page.Gaps)
				}
				for _, t := range page.Transactions {
					if err := out.Encode(t); err != nil {
						return failed(cmd, err)
					}
				}
				if page.Next == "" {
					return nil
				}
				after = page.Next
			}
		},
	}
	cmd.Flags().StringVar(&node, "node", "http://127.0.0.1:8081", "base URL of the node whose archive to read")
	cmd.Flags().StringVar(&from, "from", "", "earliest creation time (inclusive)")
	cmd.Flags().StringVar(&to, "to", "", "latest creation time (exclusive)")
	cmd.Flags().IntVar(&limit, "page", 1000, "transactions per request (1 to 1000)")
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}

// newSnapshotCmd returns `txcoord snapshot save|restore`.
func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Online backup (save) and restore of a cluster's replicated state",
	}
	var node string
	var local bool
	var timeout time.Duration
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Take a consistent snapshot from the running leader (or --local: the node asked) into FILE",
		Long: `Asks --node who leads, then streams GET ` + httpapi.SnapshotPath + ` from the leader: the leader
takes a Raft snapshot now (it keeps serving) and sends it. Needs the cluster token
(TXCOORD_CLUSTER_TOKEN) when authentication is on. FILE is written to FILE.tmp, checked
(size and CRC-32C) and renamed, so a FILE that exists is complete. The archive of pruned
transactions is not in it (copy DATA/archive for that).

` + exitCodesHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := node
			if !local {
				var st cluster.Status
				if err := apiCall(cmd.Context(), http.MethodGet, node, "/v1/cluster", nil, &st); err != nil {
					return failed(cmd, err)
				}
				src = ""
				for _, m := range st.Members {
					if m.ID == st.LeaderID && m.HTTPAddr != "" {
						src = baseURL(m.HTTPAddr)
					}
				}
				if src == "" {
					return failed(cmd, fmt.Errorf("no leader known to %s (leader %q): retry, or pass --local to back up that node", node, st.LeaderID))
				}
			}
			meta, err := downloadBackup(cmd.Context(), src, args[0], timeout)
			if err != nil {
				return failed(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved %s: snapshot of node %s at index %d (term %d), %d bytes of state\n", args[0], meta.NodeID, meta.Index, meta.Term, meta.Size)
			return nil
		},
	}
	save.Flags().StringVar(&node, "node", "http://127.0.0.1:8081", "base URL of any node")
	save.Flags().BoolVar(&local, "local", false, "back up the node --node names rather than the leader")
	save.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")

	var dataDir, servers, archiveFrom string
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR --servers ID=RAFTADDR[,...]",
		Short: "Turn a saved snapshot into an empty data directory that starts a new cluster",
		Long: `Checks FILE, writes it as DIR/snapshots/<term>-<index>-<ms>/ and writes DIR/peers.json naming
--servers (usually just the node that will hold it). The next txcoord serve on DIR forces
that configuration (the peers.json recovery) and starts a cluster holding the snapshot;
start the other nodes empty and let them join (docs/operations.md, Backing up and
restoring). DIR must hold no Raft state. A damaged or cut FILE is refused (exit status 1)
and leaves DIR without Raft state.

` + exitCodesHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return failed(cmd, usageErrorf("--data-dir is required"))
			}
			peers, err := parsePeers(servers)
			if err != nil {
				return failed(cmd, usageErrorf("--servers: %v", err))
			}
			if len(peers) == 0 {
				return failed(cmd, usageErrorf("--servers is required"))
			}
			if archiveFrom != "" { // before anything is written, so that a typo leaves DIR empty
				if st, err := os.Stat(archiveFrom); err != nil {
					return failed(cmd, usageErrorf("--archive-from: %v", err))
				} else if !st.IsDir() {
					return failed(cmd, usageErrorf("--archive-from %s: not a directory (want an old node's DATA/archive)", archiveFrom))
				}
			}
			meta, err := cluster.RestoreBackup(args[0], dataDir, nil)
			if err != nil {
				return failed(cmd, fmt.Errorf("%s: %w", args[0], err))
			}
			if archiveFrom != "" {
				n, err := copyArchive(archiveFrom, filepath.Join(dataDir, server.ArchiveDir), meta.Index)
				if err != nil {
					return failed(cmd, fmt.Errorf("--archive-from: %w", err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "copied %d archive segments from %s\n", n, archiveFrom)
			}
			if err := cluster.WritePeersJSON(dataDir, peers); err != nil {
				return failed(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored the snapshot of node %s at index %d (taken %s) into %s and wrote %s: start the node\n",
				meta.NodeID, meta.Index, meta.TakenAt.Format(time.RFC3339), dataDir, cluster.PeersJSON)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the new node's (empty) data directory")
	restore.Flags().StringVar(&archiveFrom, "archive-from", "", "an old node's archive directory (DATA/archive, copied from a stopped node) to keep its history in the new cluster")
	restore.Flags().StringVar(&servers, "servers", "", "the new cluster's first servers, id=raftaddr,... (usually one)")
	cmd.AddCommand(save, restore)
	cmd.SetFlagErrorFunc(flagError)
	return cmd
}

// downloadBackup streams the backup of the node at base into path (via path.tmp, checked,
// then renamed).
func downloadBackup(ctx context.Context, base, path string, timeout time.Duration) (cluster.BackupMeta, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+httpapi.SnapshotPath, nil)
	if err != nil {
		return cluster.BackupMeta{}, err
	}
	setCLIAuth(req.Header, true)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cluster.BackupMeta{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return cluster.BackupMeta{}, fmt.Errorf("%s: %s: %s", base+httpapi.SnapshotPath, resp.Status, strings.TrimSpace(string(raw)))
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return cluster.BackupMeta{}, err
	}
	_, err = io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var meta cluster.BackupMeta
	if err == nil {
		meta, err = cluster.VerifyBackup(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return meta, fmt.Errorf("backup from %s: %w", base, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return meta, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return meta, nil
}

// copyArchive copies the segment files of the archive in from into the empty directory to
// and rebases it on the restored snapshot's index (archive.Rebase).
func copyArchive(from, to string, index uint64) (int, error) {
	ents, err := os.ReadDir(from)
	if err != nil {
		return 0, err
	}
	if old, _ := os.ReadDir(to); len(old) > 0 {
		return 0, fmt.Errorf("%s is not empty", to)
	}
	if err := os.MkdirAll(to, 0o750); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".seg") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return n, err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), raw, 0o640); err != nil {
			return n, err
		}
		n++
	}
	return n, archive.Rebase(to, index)
}
