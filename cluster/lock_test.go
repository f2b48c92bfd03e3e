package cluster

import (
	"strings"
	"testing"
)

// TestDataDirInUse: a second node on a data directory another one holds fails with a
// message that says so, instead of waiting forever on the file lock.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(Config{NodeID: "n1", RaftBind: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Open(Config{NodeID: "n1", RaftBind: "127.0.0.1:0", DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second Open on the same data dir: %v", err)
	}
}
