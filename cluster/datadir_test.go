package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
)

// writtenDataDir returns a data directory that a one-node cluster wrote (a few hundred log
// entries and a snapshot), closed.
func writtenDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	n, err := Open(Config{NodeID: "n1", RaftBind: "127.0.0.1:0", RaftAdvertise: "127.0.0.1:1", DataDir: dir,
		Peers: []Peer{{ID: "n1", RaftAddr: "127.0.0.1:1"}}, Logger: hclog.NewNullLogger(),
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return n.Raft.State().String() == "Leader" }, "the single node to lead")
	for i := 0; i < 300; i++ {
		if _, err := n.Apply(context.Background(), &fsm.SetMember{NodeID: "n1", HTTPAddr: strings.Repeat("x", 200)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openDir(dir string) error {
	n, err := Open(Config{NodeID: "n1", RaftBind: "127.0.0.1:0", RaftAdvertise: "127.0.0.1:1", DataDir: dir, Logger: hclog.NewNullLogger()})
	if err == nil {
		_ = n.Kill()
	}
	return err
}

func wantDamaged(t *testing.T, err error, file string) {
	t.Helper()
	var de *DamagedStoreError
	if !errors.As(err, &de) {
		t.Fatalf("Open: %v, want a DamagedStoreError", err)
	}
	if filepath.Base(de.Path) != file || !strings.Contains(err.Error(), de.Path) || !strings.Contains(err.Error(), "docs/operations.md") {
		t.Errorf("error %q does not name %s and what to do", err, file)
	}
	t.Log(err)
}

// A raft.db truncated to half its size (the whole file, then half of what is in use) stops
// Open with a DamagedStoreError naming the file and what to do, never a crash in bbolt.
func TestDamagedRaftDBIsAClearError(t *testing.T) {
	dir := writtenDataDir(t)
	if err := openDir(dir); err != nil {
		t.Fatalf("the intact copy does not open: %v", err)
	}
	db := filepath.Join(dir, "raft.db")
	st, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{st.Size() / 2, 3 * 4096, 4096, 100} {
		if err := os.Truncate(db, size); err != nil {
			t.Fatal(err)
		}
		err := openDir(dir)
		if size == st.Size()/2 && err == nil {
			// bbolt grows the file ahead of use: half the file may still hold every page
			// in use. Then it is intact, and opens.
			continue
		}
		wantDamaged(t, err, "raft.db")
	}
}

// Garbage over raft.db's header (both meta pages) is a DamagedStoreError too.
func TestGarbageRaftDBHeaderIsAClearError(t *testing.T) {
	dir := writtenDataDir(t)
	db := filepath.Join(dir, "raft.db")
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("garbage!", 2048)), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantDamaged(t, openDir(dir), "raft.db")
}

// A snapshot whose meta.json is garbage stops Open with a DamagedStoreError naming it
// (raft would skip it and fall back to an older snapshot whose log may be gone).
func TestGarbageSnapshotMetaIsAClearError(t *testing.T) {
	dir := writtenDataDir(t)
	metas, err := filepath.Glob(filepath.Join(dir, "snapshots", "*", "meta.json"))
	if err != nil || len(metas) == 0 {
		t.Fatalf("no snapshot meta: %v", err)
	}
	if err := os.WriteFile(metas[0], []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, openDir(dir), "meta.json")
}
