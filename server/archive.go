package server

import (
	"fmt"
	"path/filepath"

	"github.com/txcoord/txcoord/archive"
)

// ArchiveDir is the archive's directory inside a node's data directory.
const ArchiveDir = "archive"

// openArchive opens DataDir/archive and hands it to the cluster (which attaches it to the
// FSM before Raft starts) and to the API. A node without a data directory, or with
// NoArchive, gets none.
func openArchive(cfg *Config) (*archive.Archive, error) {
	if cfg.NoArchive || cfg.Cluster.InMemory || cfg.Cluster.DataDir == "" {
		return nil, nil
	}
	o := cfg.Archive
	if o.Logger == nil {
		o.Logger = cfg.Logger
	}
	if o.Now == nil && cfg.Cluster.Clock != nil {
		o.Now = cfg.Cluster.Clock
	}
	a, err := archive.Open(filepath.Join(cfg.Cluster.DataDir, ArchiveDir), o)
	if err != nil {
		return nil, fmt.Errorf("opening the archive: %w", err)
	}
	cfg.Cluster.Archiver = a
	cfg.API.History = a
	return a, nil
}

func closeArchive(a *archive.Archive) {
	if a != nil {
		_ = a.Close()
	}
}
