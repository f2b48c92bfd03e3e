package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
)

// goldenExpect is expect.json in a golden data-dir tarball: what the old build's API
// reported just before the node was killed (see testdata/README.md).
type goldenExpect struct {
	Build             string `json:"build"`
	SnapshotIndex     uint64 `json:"snapshotIndex"`
	SnapshotEndpoints int    `json:"snapshotEndpoints"`
	Cluster           struct {
		AppliedIndex uint64 `json:"appliedIndex"`
		Members      []struct {
			ID       string `json:"id"`
			HTTPAddr string `json:"httpAddr"`
		} `json:"members"`
	} `json:"cluster"`
	Transactions []struct {
		TransactionID  string `json:"transactionId"`
		Status         string `json:"status"`
		Decision       string `json:"decision"`
		IdempotencyKey string `json:"idempotencyKey"`
		Index          uint64 `json:"index"`
		Participants   []struct {
			Prepare, Commit, Rollback string
			Vote                      string `json:"vote"`
			Acknowledged              bool   `json:"acknowledged"`
		} `json:"participants"`
	} `json:"transactions"`
}

// goldenStatuses is the status of each transaction (by idempotency key) in every golden
// data dir; "a-" ones are in the snapshot, "b-" ones only in the log after it.
var goldenStatuses = map[string]fsm.Status{
	"a-committed":    fsm.StatusCommitted,
	"a-rolled-back":  fsm.StatusRolledBack,
	"a-committing":   fsm.StatusCommitting,
	"a-rolling-back": fsm.StatusRollingBack,
	"a-failed":       fsm.StatusFailed,
	"a-preparing":    fsm.StatusPreparing,
	"a-explicit":     fsm.StatusCommitted,
	"b-committed":    fsm.StatusCommitted,
	"b-rolled-back":  fsm.StatusRolledBack,
	"b-committing":   fsm.StatusCommitting,
	"b-preparing":    fsm.StatusPreparing,
}

func extractTarGz(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			t.Fatalf("tar entry %q leaves the directory", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("tar entry %q of type %c", h.Name, h.Typeflag)
		}
	}
}

// TestGoldenDataDirs opens data directories written by `txcoord serve` of earlier builds
// (a Raft snapshot with endpoint records, then more log entries) as their single node: the
// snapshot must restore and the log replay on top of it to the state the old build
// reported. The node runs no leader work (no 2PC engine), so nothing calls the (dead)
// participants and every status stays exactly as it was. Then the current build snapshots
// (version 4) and the node restarts from that.
func TestGoldenDataDirs(t *testing.T) {
	for _, build := range []string{"9b29729", "2bbc0cb"} {
		t.Run(build, func(t *testing.T) {
			tmp := t.TempDir()
			extractTarGz(t, filepath.Join("testdata", "datadir-"+build+".tar.gz"), tmp)
			var exp goldenExpect
			b, err := os.ReadFile(filepath.Join(tmp, "expect.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &exp); err != nil {
				t.Fatal(err)
			}
			if exp.Build != build || exp.SnapshotEndpoints == 0 || exp.SnapshotIndex == 0 || exp.Cluster.AppliedIndex <= exp.SnapshotIndex {
				t.Fatalf("expect.json: build %q, snapshot at %d with %d endpoints, applied %d", exp.Build, exp.SnapshotIndex, exp.SnapshotEndpoints, exp.Cluster.AppliedIndex)
			}
			data := filepath.Join(tmp, "data")
			states, _ := filepath.Glob(filepath.Join(data, "snapshots", "*", "state.bin"))
			if len(states) != 1 {
				t.Fatalf("snapshots in the golden data dir: %v", states)
			}
			if s, err := os.ReadFile(states[0]); err != nil || len(s) < 5 || string(s[:5]) != "TXCS\x02" {
				t.Fatalf("golden snapshot is not a version 2 snapshot (%v)", err)
			}

			open := func() *Node {
				t.Helper()
				n, err := Open(Config{NodeID: "n1", RaftBind: "127.0.0.1:0", DataDir: data,
					Logger: hclog.New(&hclog.LoggerOptions{Name: build, Level: hclog.Warn, Output: testWriter{t}})})
				if err != nil {
					t.Fatalf("opening the %s data dir: %v", build, err)
				}
				return n
			}
			n := open()
			defer func() { _ = n.Kill() }()
			if got := n.Raft.Stats()["last_snapshot_index"]; got != fmt.Sprint(exp.SnapshotIndex) {
				t.Fatalf("last_snapshot_index %s, want %d", got, exp.SnapshotIndex)
			}

			// The node elects itself and applies the log after the snapshot: wait until every
			// transaction is at the version the old build last reported.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, want := range exp.Transactions {
				tx, err := n.FSM.WaitFor(ctx, want.TransactionID, func(tx *fsm.Txn) bool { return tx != nil && tx.Index >= want.Index })
				if err != nil {
					t.Fatalf("%s (%s) not at index %d: %v; have %+v (applied %d, raft state %v)", want.IdempotencyKey, want.TransactionID, want.Index, err, tx, n.FSM.AppliedIndex(), n.Raft.State())
				}
			}
			check := func(n *Node) {
				t.Helper()
				if got := n.FSM.AppliedIndex(); got != exp.Cluster.AppliedIndex {
					t.Errorf("AppliedIndex %d, want %d", got, exp.Cluster.AppliedIndex)
				}
				checkGoldenDataDirState(t, n.FSM, &exp)
			}
			check(n)
			// The entries after the old snapshot carry timestamps: the log's clock moved.
			level, lastTs := n.FSM.FeatureLevel(), n.FSM.LastTimestamp()
			if lastTs <= 0 {
				t.Errorf("LastTimestamp %d after replaying the log", lastTs)
			}

			// The current build snapshots (its own version, what WriteSnapshot writes); a
			// restart restores that.
			var cur bytes.Buffer
			if err := n.FSM.WriteSnapshot(&cur); err != nil || cur.Len() < 5 {
				t.Fatalf("WriteSnapshot: %v", err)
			}
			version := cur.Bytes()[4]
			if err := n.Raft.Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			if err := n.Kill(); err != nil {
				t.Fatal(err)
			}
			n = open()
			states, _ = filepath.Glob(filepath.Join(data, "snapshots", "*", "state.bin"))
			newest := ""
			for _, s := range states {
				if b, err := os.ReadFile(s); err == nil && len(b) > 4 && b[4] == version {
					newest = s
				}
			}
			if newest == "" {
				t.Fatalf("no version %d snapshot among %v", version, states)
			}
			check(n)
			if n.FSM.FeatureLevel() != level || n.FSM.LastTimestamp() != lastTs {
				t.Errorf("after the current build's snapshot: level %d lastTs %d, want %d %d", n.FSM.FeatureLevel(), n.FSM.LastTimestamp(), level, lastTs)
			}
		})
	}
}

func checkGoldenDataDirState(t *testing.T, f *fsm.FSM, exp *goldenExpect) {
	t.Helper()
	if len(exp.Transactions) != len(goldenStatuses) {
		t.Fatalf("expect.json lists %d transactions, want %d", len(exp.Transactions), len(goldenStatuses))
	}
	all, _ := f.List(0, "", 0)
	if len(all) != len(goldenStatuses) {
		t.Errorf("%d transactions, want %d", len(all), len(goldenStatuses))
	}
	refs := map[uint32]bool{}
	for _, want := range exp.Transactions {
		st, ok := goldenStatuses[want.IdempotencyKey]
		if !ok {
			t.Fatalf("unexpected key %q in expect.json", want.IdempotencyKey)
		}
		if want.Status != st.String() {
			t.Fatalf("expect.json: %s was %s in the old build, want %s", want.IdempotencyKey, want.Status, st)
		}
		tx, ok := f.ByKey(want.IdempotencyKey)
		if !ok || tx.ID != want.TransactionID {
			t.Errorf("ByKey(%q) = %v, %v; want %s", want.IdempotencyKey, tx, ok, want.TransactionID)
			continue
		}
		if tx.Status != st || decisionName(tx.Decision) != want.Decision || tx.Index != want.Index || tx.Key != want.IdempotencyKey {
			t.Errorf("%s: status %v decision %v index %d, want %v %q %d", want.IdempotencyKey, tx.Status, tx.Decision, tx.Index, st, want.Decision, want.Index)
		}
		if len(tx.Participants) != len(want.Participants) || len(tx.States) != len(tx.Participants) {
			t.Errorf("%s: %d participants, want %d", want.IdempotencyKey, len(tx.Participants), len(want.Participants))
			continue
		}
		for i, wp := range want.Participants {
			p, ps := tx.Participants[i], tx.States[i]
			if p.Prepare != wp.Prepare || p.Commit != wp.Commit || p.Rollback != wp.Rollback {
				t.Errorf("%s participant %d: %+v, want %+v", want.IdempotencyKey, i, p, wp)
			}
			if ps.Vote.String() != wp.Vote || ps.Acked != wp.Acknowledged {
				t.Errorf("%s participant %d: vote %q acked %v, want %q %v", want.IdempotencyKey, i, ps.Vote, ps.Acked, wp.Vote, wp.Acknowledged)
			}
			idx, ok := f.EndpointRef(p)
			if !ok {
				t.Errorf("%s participant %s is not in the endpoint table", want.IdempotencyKey, p.Prepare)
			}
			refs[idx] = true
		}
		// What the log holds for each status.
		switch st {
		case fsm.StatusPreparing:
			if tx.Decision != fsm.DecisionNone || tx.DecidedAt != 0 {
				t.Errorf("%s: decided while preparing", want.IdempotencyKey)
			}
		case fsm.StatusCommitting, fsm.StatusCommitted:
			if tx.Decision != fsm.DecisionCommit {
				t.Errorf("%s: decision %v", want.IdempotencyKey, tx.Decision)
			}
		case fsm.StatusRollingBack, fsm.StatusRolledBack:
			if tx.Decision != fsm.DecisionAbort {
				t.Errorf("%s: decision %v", want.IdempotencyKey, tx.Decision)
			}
		case fsm.StatusFailed:
			if tx.Decision != fsm.DecisionCommit || tx.FinishedAt == 0 || len(tx.Errors()) == 0 || !strings.Contains(tx.Errors()[0], "disk full") {
				t.Errorf("%s: decision %v finished %d errors %q", want.IdempotencyKey, tx.Decision, tx.FinishedAt, tx.Errors())
			}
		}
		if st.Terminal() != (tx.FinishedAt != 0) {
			t.Errorf("%s: %v with FinishedAt %d", want.IdempotencyKey, st, tx.FinishedAt)
		}
	}
	// Every participant is in the table (the old engine defined them all); one of them, ok/c,
	// was defined after the snapshot. Indexes are dense from 0.
	if len(refs) != exp.SnapshotEndpoints+1 {
		t.Errorf("participants use %d table entries, want %d (snapshot) + 1", len(refs), exp.SnapshotEndpoints)
	}
	for i := range uint32(len(refs)) {
		if !refs[i] {
			t.Errorf("no participant at endpoint index %d: %v", i, refs)
		}
	}
	active := f.Active()
	if len(active) != 5 {
		t.Errorf("%d active transactions, want 5 (two preparing, two committing, rolling_back)", len(active))
	}
	var members []string
	for id, addr := range f.Members() {
		members = append(members, id+"="+addr)
	}
	if len(exp.Cluster.Members) != 1 || len(members) != 1 || members[0] != exp.Cluster.Members[0].ID+"="+exp.Cluster.Members[0].HTTPAddr {
		t.Errorf("members %v, want %+v", members, exp.Cluster.Members)
	}
}

// testWriter sends the node's log to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// decisionName is the API's decision field: omitted (empty) before the decision.
func decisionName(d fsm.Decision) string {
	if d == fsm.DecisionNone {
		return ""
	}
	return d.String()
}
