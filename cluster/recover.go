package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/txcoord/txcoord/fsm"
)

// PeersJSON is the recovery file's name in a node's data directory: hashicorp/raft's
// peers.json, [{"id": "...", "address": "host:port", "non_voter": false}, ...].
const PeersJSON = "peers.json"

// RecoverIfRequested applies DataDir/peers.json when it exists (the manual recovery after a
// permanent loss of quorum, docs/operations.md): with the node stopped, it forces the Raft
// configuration to exactly the servers the file lists (raft.RecoverCluster: the local log
// is taken as committed and compacted into a snapshot), then renames the file to
// peers.json.applied-<unix time> so that a restart does not apply it again. It reports
// whether a recovery was done. Call it before Open, with nothing else using the directory.
func RecoverIfRequested(dataDir, nodeID string, lg hclog.Logger) (bool, error) {
	path := filepath.Join(dataDir, PeersJSON)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	found := false
	for _, s := range conf.Servers {
		found = found || string(s.ID) == nodeID
	}
	if !found {
		return false, fmt.Errorf("%s does not list this node (%s): every survivor gets the same file, naming itself", path, nodeID)
	}
	lg.Warn("peers.json found: forcing the Raft configuration (manual recovery)", "servers", len(conf.Servers))
	if err := Recover(dataDir, nodeID, conf, lg); err != nil {
		return false, err
	}
	done := fmt.Sprintf("%s.applied-%d", path, time.Now().Unix())
	if err := os.Rename(path, done); err != nil {
		return true, fmt.Errorf("recovered, but renaming %s failed (remove it before the next start): %w", path, err)
	}
	lg.Warn("recovery done", "file", done)
	return true, nil
}

// Recover forces the configuration of the node whose stores are in dataDir (the layout Open
// uses: raft.db and snapshots/).
func Recover(dataDir, nodeID string, conf raft.Configuration, lg hclog.Logger) error {
	if err := checkDataDir(dataDir); err != nil {
		return err
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("opening raft.db: %w", err)
	}
	defer bolt.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, lg.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(nodeID)
	rc.Logger = lg.Named("raft")
	_, trans := raft.NewInmemTransport(raft.ServerAddress(nodeID))
	if err := raft.RecoverCluster(rc, fsm.New(), bolt, bolt, snaps, trans, conf); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	return nil
}

// WritePeersJSON writes the recovery file for the given servers (all voters) into dataDir.
func WritePeersJSON(dataDir string, peers []Peer) error {
	type entry struct {
		ID       string `json:"id"`
		Address  string `json:"address"`
		NonVoter bool   `json:"non_voter"`
	}
	var out []entry
	for _, p := range peers {
		if err := CheckAdvertise(p.RaftAddr); err != nil {
			return fmt.Errorf("peer %s: %w", p.ID, err)
		}
		out = append(out, entry{ID: p.ID, Address: p.RaftAddr})
	}
	if len(out) == 0 {
		return errors.New("no servers")
	}
	raw, _ := json.MarshalIndent(out, "", "  ")
	tmp := filepath.Join(dataDir, PeersJSON+".tmp")
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dataDir, PeersJSON))
}

// RestoreDataDir copies a backup (a data directory, or a directory holding only
// snapshots/<term>-<index>-<ms>/) into the empty data directory to, for a restore followed
// by a peers.json recovery (docs/operations.md). It copies raft.db when present and every
// complete snapshot, and refuses a target that already has Raft state.
func RestoreDataDir(from, to string) error {
	for _, p := range []string{filepath.Join(to, "raft.db"), filepath.Join(to, "snapshots")} {
		if ents, err := os.ReadDir(p); err == nil && len(ents) > 0 {
			return fmt.Errorf("%s already holds raft state: restore into an empty data directory", to)
		} else if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return fmt.Errorf("%s already holds raft state: restore into an empty data directory", to)
		}
	}
	copyFile := func(src, dst string) error {
		raw, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return err
		}
		return os.WriteFile(dst, raw, 0o600)
	}
	found := false
	if _, err := os.Stat(filepath.Join(from, "raft.db")); err == nil {
		if err := copyFile(filepath.Join(from, "raft.db"), filepath.Join(to, "raft.db")); err != nil {
			return err
		}
		found = true
	}
	snaps, _ := os.ReadDir(filepath.Join(from, "snapshots"))
	for _, s := range snaps {
		if !s.IsDir() || filepath.Ext(s.Name()) == ".tmp" {
			continue
		}
		for _, f := range []string{"meta.json", "state.bin"} {
			if err := copyFile(filepath.Join(from, "snapshots", s.Name(), f), filepath.Join(to, "snapshots", s.Name(), f)); err != nil {
				return fmt.Errorf("snapshot %s: %w", s.Name(), err)
			}
		}
		found = true
	}
	if !found {
		return fmt.Errorf("%s holds neither raft.db nor a complete snapshot under snapshots/", from)
	}
	return nil
}
