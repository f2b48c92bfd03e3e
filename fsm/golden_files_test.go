package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/version"
)

// The golden snapshot files in testdata were written by the fsm package of earlier builds
// (testdata/golden/README.md says which commit wrote which and how to remake them). Each
// holds the state testdata/golden/gen applies; the current build must restore every one.

const goldenT0 = int64(1_764_633_600_000)

var (
	gE0 = Participant{Prepare: "http://pay.svc:8080/v1/pay/prepare", Commit: "http://pay.svc:8080/v1/pay/commit", Rollback: "http://pay.svc:8080/v1/pay/rollback"}
	gE1 = Participant{Prepare: "http://hotel.svc:9000/booking/prepare?region=eu", Commit: "http://hotel.svc:9000/booking/commit?region=eu", Rollback: "http://hotel.svc:9000/booking/rollback?region=eu"}
	gE2 = Participant{Prepare: "http://legacy:7000/tx/p", Commit: "http://legacy:7000/tx/c", Rollback: "http://legacy:7000/tx/r"}
	gX  = Participant{Prepare: "http://adhoc.svc:1/prepare", Commit: "http://adhoc.svc:1/commit", Rollback: "http://adhoc.svc:1/rollback"}
)

// goldenWant is the state every golden file holds, spelled out field by field.
func goldenWant() []*Txn {
	t0 := goldenT0
	return []*Txn{
		{ID: "01900000-0000-7000-8000-000000000001", Key: "k-preparing", CreatedAt: t0 + 10, Deadline: t0 + 1010,
			Participants: []Participant{gE0, gE1}, States: make([]ParticipantState, 2),
			Status: StatusPreparing, Index: 2},
		{ID: "01900000-0000-7000-8000-000000000002", Key: "k-committing", CreatedAt: t0 + 20, Deadline: t0 + 1020,
			Participants: []Participant{gE0, gE2},
			States:       []ParticipantState{{Vote: VoteYes, Acked: true, Attempts: 1}, {Vote: VoteYes, Attempts: 3, LastError: "HTTP 503: busy"}},
			Status:       StatusCommitting, Decision: DecisionCommit, DecidedAt: t0 + 25, Index: 5},
		{ID: "01900000-0000-7000-8000-000000000003", Key: "k-rolling-back", CreatedAt: t0 + 30, Deadline: t0 + 1030,
			Participants: []Participant{gE1, gX},
			States:       []ParticipantState{{Vote: VoteYes}, {Vote: VoteNo, Reason: "no rooms"}},
			Status:       StatusRollingBack, Decision: DecisionAbort, DecidedAt: t0 + 35, Index: 7},
		{ID: "01900000-0000-7000-8000-000000000004", Key: "k-committed", CreatedAt: t0 + 40, Deadline: t0 + 1040,
			Participants: []Participant{gE0},
			States:       []ParticipantState{{Vote: VoteYes, Acked: true, Attempts: 1}},
			Status:       StatusCommitted, Decision: DecisionCommit, DecidedAt: t0 + 45, FinishedAt: t0 + 60, Index: 12},
		{ID: "01900000-0000-7000-8000-000000000005", CreatedAt: t0 + 50, Deadline: t0 + 1050,
			Participants: []Participant{gE1, gE2, gE0},
			States: []ParticipantState{
				{Vote: VoteNone, Reason: "no answer within 1000 ms", Acked: true, Attempts: 1},
				{Vote: VoteError, Reason: "HTTP 500: boom", Acked: true, Attempts: 2},
				{Vote: VoteYes, Acked: true, Attempts: 1}},
			Status: StatusRolledBack, Decision: DecisionAbort, DecidedAt: t0 + 55, FinishedAt: t0 + 60, Index: 12},
		{ID: "order-77", Key: "k-failed", CreatedAt: t0 + 70, Deadline: t0 + 1070,
			Participants: []Participant{gE2},
			States:       []ParticipantState{{Vote: VoteYes, Attempts: 30, LastError: "HTTP 500: disk full"}},
			Status:       StatusFailed, Decision: DecisionCommit, DecidedAt: t0 + 75, FinishedAt: t0 + 80, Index: 15},
	}
}

// goldenWantLevel3 is what the files of builds with feature level 3 (31d74c1 on, gen tag
// txcoord_v5) hold besides goldenWant: a presumed-abort record, a fast commit in committing
// (with a key) and a fast rollback in rolling_back, applied at indexes 25 to 28 after
// SetFeatures{Level: 3} (index 25).
func goldenWantLevel3() []*Txn {
	t0 := goldenT0
	return []*Txn{
		{ID: "01900000-0000-7000-8000-000000000008", CreatedAt: t0 + 200, Deadline: t0 + 150,
			Participants: []Participant{}, States: []ParticipantState{},
			Status: StatusRolledBack, Decision: DecisionAbort, DecidedAt: t0 + 200, FinishedAt: t0 + 200,
			Note: PresumedAbortNote, Index: 26},
		{ID: "01900000-0000-7000-8000-000000000009", Key: "k-fast-commit", CreatedAt: t0 + 300, Deadline: t0 + 1300,
			Participants: []Participant{gE0, gX}, States: []ParticipantState{{Vote: VoteYes}, {Vote: VoteYes}},
			Status: StatusCommitting, Decision: DecisionCommit, DecidedAt: t0 + 307, Index: 27},
		{ID: "01900000-0000-7000-8000-00000000000a", CreatedAt: t0 + 400, Deadline: t0 + 1400,
			Participants: []Participant{gE1, gE2}, States: []ParticipantState{{Vote: VoteYes}, {Vote: VoteNo, Reason: "sold out"}},
			Status: StatusRollingBack, Decision: DecisionAbort, DecidedAt: t0 + 412, Index: 28},
	}
}

func goldenWantKeys() map[string]keyEntry {
	t0 := goldenT0
	return map[string]keyEntry{
		"k-preparing":    {ID: "01900000-0000-7000-8000-000000000001", CreatedAt: t0 + 10},
		"k-committing":   {ID: "01900000-0000-7000-8000-000000000002", CreatedAt: t0 + 20},
		"k-rolling-back": {ID: "01900000-0000-7000-8000-000000000003", CreatedAt: t0 + 30},
		"k-committed":    {ID: "01900000-0000-7000-8000-000000000004", CreatedAt: t0 + 40},
		"k-failed":       {ID: "order-77", CreatedAt: t0 + 70},
		"k-pruned":       {ID: "01900000-0000-7000-8000-000000000007", CreatedAt: t0 - 100}, // its txn was pruned
	}
}

var goldenWantMembers = map[string]string{"n1": "10.0.0.1:8081", "n2": "10.0.0.2:8081", "n4": "[::1]:8084"}

func restoreBytes(t *testing.T, b []byte) *FSM {
	t.Helper()
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return f
}

func writeSnap(t *testing.T, f *FSM) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := f.WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func checkGoldenState(t *testing.T, f *FSM, endpoints []Participant, level3 bool) {
	t.Helper()
	got, _ := f.List(0, "", 0)
	want := goldenWant()
	wantKeys := goldenWantKeys()
	wantActive := []string{want[0].ID, want[1].ID, want[2].ID}
	wantApplied := uint64(24)
	if level3 {
		l3 := goldenWantLevel3()
		want = append(append(want[:5:5], l3...), want[5]) // List orders by id: "order-77" last
		wantKeys["k-fast-commit"] = keyEntry{ID: l3[1].ID, CreatedAt: l3[1].CreatedAt}
		wantActive = append(wantActive, l3[1].ID, l3[2].ID)
		wantApplied = 28
		if f.FeatureLevel() != 3 || f.Horizon() != goldenT0+100 {
			t.Errorf("level %d horizon %d, want 3 and %d", f.FeatureLevel(), f.Horizon(), goldenT0+100)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d transactions, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("transaction %s:\n got  %+v\n want %+v", want[i].ID, got[i], want[i])
		}
	}
	var active []string
	for _, tx := range f.Active() {
		active = append(active, tx.ID)
	}
	if !reflect.DeepEqual(active, wantActive) {
		t.Errorf("Active = %v, want %v", active, wantActive)
	}
	if !reflect.DeepEqual(f.keys, wantKeys) {
		t.Errorf("keys = %v, want %v", f.keys, wantKeys)
	}
	for k, e := range wantKeys {
		tx, ok := f.ByKey(k)
		if k == "k-pruned" {
			if ok {
				t.Errorf("ByKey(%q) found pruned %s", k, tx.ID)
			}
			continue
		}
		if !ok || tx.ID != e.ID {
			t.Errorf("ByKey(%q) = %v, %v; want %s", k, tx, ok, e.ID)
		}
	}
	if !reflect.DeepEqual(f.Members(), goldenWantMembers) {
		t.Errorf("members = %v, want %v", f.Members(), goldenWantMembers)
	}
	if len(endpoints) == 0 {
		endpoints = nil
	}
	if !reflect.DeepEqual(f.endpoints, endpoints) {
		t.Errorf("endpoint table = %v, want %v", f.endpoints, endpoints)
	}
	for i, p := range endpoints {
		if idx, ok := f.EndpointRef(p); !ok || idx != uint32(i) {
			t.Errorf("EndpointRef(%s) = %d, %v; want %d", p.Prepare, idx, ok, i)
		}
	}
	if _, ok := f.EndpointRef(gX); ok {
		t.Error("the participant never defined is in the endpoint table")
	}
	if f.AppliedIndex() != wantApplied {
		t.Errorf("AppliedIndex = %d, want %d", f.AppliedIndex(), wantApplied)
	}
}

func TestGoldenSnapshotFiles(t *testing.T) {
	table := []Participant{gE0, gE1, gE2}
	for _, tc := range []struct {
		file      string
		version   byte
		endpoints []Participant
		level3    bool // written with gen's txcoord_v5 tag (goldenWantLevel3)
	}{
		{"snapshot-v1-769af25.bin", 1, nil, false},
		{"snapshot-v2a-9b29729.bin", 2, table, false},
		{"snapshot-v2b-2bbc0cb.bin", 2, table, false},
		{"snapshot-v3-0ebedb6.bin", 3, table, false},
		{"snapshot-v4-fd03fea.bin", 4, table, false},
		{"snapshot-v5-31d74c1.bin", 5, table, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < 5 || b[4] != tc.version {
				t.Fatalf("golden file is not version %d", tc.version)
			}
			f := restoreBytes(t, b)
			checkGoldenState(t, f, tc.endpoints, tc.level3)
			if tc.version < 3 && (f.FeatureLevel() != 0 || f.LastTimestamp() != 0) {
				t.Errorf("level %d lastTs %d from a snapshot before version 3", f.FeatureLevel(), f.LastTimestamp())
			}

			// Re-snapshotted, it is the current version and restores to the same state and bytes.
			v3 := writeSnap(t, f)
			if v3[4] != snapshotVersion {
				t.Fatalf("re-snapshot is version %d", v3[4])
			}
			r := restoreBytes(t, v3)
			checkGoldenState(t, r, tc.endpoints, tc.level3)
			if again := writeSnap(t, r); !bytes.Equal(again, v3) {
				t.Fatalf("v3 snapshot of the restored v3 snapshot differs:\n%x\n%x", again, v3)
			}
			// The restored FSM goes on applying: the preparing one can be decided.
			next := r.AppliedIndex() + 1
			res := r.ApplyCommand(next, &Decide{ID: "01900000-0000-7000-8000-000000000001", Decision: DecisionAbort, At: goldenT0 + 2000, Votes: make([]Vote, 2)})
			if res.Err != nil || res.Txn.Status != StatusRollingBack {
				t.Fatalf("Decide after restore: %+v", res)
			}
			if tc.level3 {
				// The presumed-abort record still wins over a late fast decision.
				late := &FastDecide{Begin: Begin{ID: "01900000-0000-7000-8000-000000000008", CreatedAt: goldenT0 + 100, Deadline: goldenT0 + 3000,
					Participants: []Participant{gE0}}, Decision: DecisionCommit}
				if res := r.ApplyCommand(next+1, late); !errors.Is(res.Err, ErrPresumedAbort) {
					t.Fatalf("late fast decision after restore: %+v", res)
				}
			}
		})
	}
}

// TestGoldenV2LayoutsDiffer: the two version-2 files hold the same state in the two
// layouts; each parses as its own layout only, and the v2b file with its endpoint records
// moved to the end fails both with an error that names both.
func TestGoldenV2LayoutsDiffer(t *testing.T) {
	a, err := os.ReadFile("testdata/snapshot-v2a-9b29729.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/snapshot-v2b-2bbc0cb.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readBody(bytes.NewReader(a[5:]), layoutV2b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("v2a file read as v2b: %v", err)
	}
	if _, err := readBody(bytes.NewReader(b[5:]), layoutV2a); !errors.Is(err, ErrCorrupt) {
		t.Errorf("v2b file read as v2a: %v", err)
	}
	// Cut the v2a file's last byte: neither layout fits.
	err = New().Restore(io.NopCloser(bytes.NewReader(a[:len(a)-1])))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "endpoints first") || !strings.Contains(err.Error(), "endpoints last") {
		t.Fatalf("truncated v2 snapshot: %v", err)
	}
}

// TestSnapshotV3LevelAndClock: level and lastTs survive a version-3 snapshot, and a
// snapshot of a level this build does not know is refused as a SetFeatures entry of it is.
func TestSnapshotV3LevelAndClock(t *testing.T) {
	b, err := os.ReadFile("testdata/snapshot-v2b-2bbc0cb.bin")
	if err != nil {
		t.Fatal(err)
	}
	f := restoreBytes(t, b)
	if res := f.ApplyCommand(25, &SetFeatures{Level: version.FeatureLevel, At: goldenT0 + 123456}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if f.FeatureLevel() != version.FeatureLevel || f.LastTimestamp() != goldenT0+123456 {
		t.Fatalf("SetFeatures gave level %d lastTs %d", f.FeatureLevel(), f.LastTimestamp())
	}
	v3 := writeSnap(t, f)
	r := restoreBytes(t, v3)
	if r.FeatureLevel() != version.FeatureLevel || r.LastTimestamp() != goldenT0+123456 || r.AppliedIndex() != 25 {
		t.Fatalf("level %d lastTs %d applied %d after a v3 round trip", r.FeatureLevel(), r.LastTimestamp(), r.AppliedIndex())
	}
	if again := writeSnap(t, r); !bytes.Equal(again, v3) {
		t.Fatal("restored v3 state writes other bytes")
	}
	// A negative clock (before 1970) encodes too.
	f.lastTs = -5
	if r := restoreBytes(t, writeSnap(t, f)); r.LastTimestamp() != -5 {
		t.Fatalf("lastTs %d", r.LastTimestamp())
	}
	// Restore replaces level and lastTs too.
	if err := r.Restore(io.NopCloser(bytes.NewReader(b))); err != nil || r.FeatureLevel() != 0 || r.LastTimestamp() != 0 {
		t.Fatalf("Restore of a v2 snapshot kept level %d lastTs %d (%v)", r.FeatureLevel(), r.LastTimestamp(), err)
	}
	// A level past this build's, and one past uint32.
	for _, level := range []uint64{uint64(version.FeatureLevel) + 1, 1 << 40} {
		f.level, f.horizon = 0, 0
		good := writeSnap(t, f)
		// The header is the first record: its length, then applied(1 byte: 24), nTxns,
		// nKeys, nMembers, nEndpoints, level (0), lastTs, horizon (0).
		hdr := good[5:]
		if hdr[0] != 8 || hdr[6] != 0 {
			t.Fatalf("unexpected header %x", hdr[:9])
		}
		lv := binary.AppendUvarint(nil, level)
		bad := append(append(append([]byte{}, good[:5]...), byte(8+len(lv)-1)), hdr[1:6]...)
		bad = append(append(bad, lv...), hdr[7:]...)
		err := New().Restore(io.NopCloser(bytes.NewReader(bad)))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "feature level") {
			t.Fatalf("level %d: Restore = %v", level, err)
		}
	}
}
