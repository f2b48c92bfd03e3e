package fsm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

// variedState fills n with every status, keys (one of a pruned txn), members, participants
// in derived and explicit URL forms, UUID and non-UUID ids and odd timestamps.
func variedState(t testing.TB) *node {
	n := newNode(t)
	explicit := []fsm.Participant{
		{Prepare: "http://a:1/prepare", Commit: "http://a:1/commit", Rollback: "http://a:1/rollback"},                                     // derived
		{Prepare: "http://b:2/tx/prep", Commit: "http://b:2/tx/do", Rollback: "http://b:2/tx/undo"},                                       // no "prepare"
		{Prepare: "http://prepare.svc/prepare?x=1", Commit: "http://prepare.svc/commit?x=1", Rollback: "http://prepare.svc/rollback?x=1"}, // derived, "prepare" twice
		{Prepare: "http://c/prepare", Commit: "http://c/commit", Rollback: "http://other/rollback"},                                       // half derived
		{Prepare: "", Commit: "", Rollback: ""},
	}
	ids := []string{
		"0190a8e2-7b3c-7def-8123-456789abcdef", // canonical UUID: 16 raw bytes
		"0190A8E2-7B3C-7DEF-8123-456789ABCDEF", // upper case: kept as a string
		"0190a8e2-7b3c-7def-8123-456789abcdeg", // not hex
		"order-42",
		"zß→✓",
		"x",
		"0190a8e2-7b3c-7def-8123-456789abcde0",
		"0190a8e2-7b3c-7def-8123-456789abcde1",
		"with key of pruned",
	}
	for i, id := range ids {
		b := &fsm.Begin{ID: id, CreatedAt: t0 + int64(i), Deadline: t0 + int64(i) - 7, Participants: explicit[:1+i%len(explicit)]}
		if i%2 == 0 {
			b.Key = "key-" + id
		}
		n.must(b)
	}
	np := func(i int) int { return 1 + i%len(explicit) }
	// ids[0] stays preparing.
	n.must(&fsm.Decide{ID: ids[1], Decision: fsm.DecisionCommit, At: -5, Votes: votes(np(1), fsm.VoteYes), Reasons: make([]string, np(1))})
	n.must(decideAbort(ids[2], np(2)))
	n.must(decideCommit(ids[3], np(3)))
	n.must(&fsm.Complete{At: t0 + 50, Items: []fsm.Completion{{ID: ids[3], Attempts: []uint32{math.MaxUint32, 0, 7, 1}}}})
	n.must(decideAbort(ids[4], np(4)))
	n.must(complete(t0+2, ids[4])) // at the prune cutoff: kept
	n.must(decideCommit(ids[5], np(5)))
	n.must(&fsm.Progress{ID: ids[5], Reports: []fsm.Report{{Attempts: 3, Error: "HTTP 500: \x00\xff"}}})
	n.must(&fsm.Fail{ID: ids[5], At: t0 + 99, Reports: []fsm.Report{{Attempts: 4, Error: "gave up"}}})
	n.must(decideAbort(ids[6], np(6)))
	n.must(fail(ids[6], np(6)))
	n.must(&fsm.Retry{ID: ids[6], At: t0 + 100, Note: "operator: retry"})
	n.must(decideCommit(ids[7], np(7)))
	n.must(fail(ids[7], np(7)))
	n.must(&fsm.Resolve{ID: ids[7], At: t0 + 101, Note: "settled"})
	n.must(decideCommit(ids[8], np(8)))
	n.must(complete(t0+1, ids[8]))
	n.must(&fsm.Prune{FinishedBefore: t0 + 2}) // drops ids[8], keeps its key
	n.must(&fsm.SetMember{NodeID: "n1", HTTPAddr: "10.0.0.1:8080"})
	n.must(&fsm.SetMember{NodeID: "n2", HTTPAddr: "10.0.0.2:8080"})
	n.must(&fsm.SetMember{NodeID: "n3", HTTPAddr: "10.0.0.3:8080"})
	n.must(&fsm.SetMember{NodeID: "n2", HTTPAddr: ""})

	c := n.f.Counts()
	for st := fsm.StatusPreparing; st <= fsm.StatusFailed; st++ {
		if c[st] == 0 {
			t.Fatalf("varied state lacks status %v: %v", st, c)
		}
	}
	return n
}

func allTxns(f *fsm.FSM) []*fsm.Txn {
	l, _ := f.List(0, "", 0)
	return l
}

func TestSnapshotRoundTrip(t *testing.T) {
	n := variedState(t)
	want := snapBytes(t, n.f)
	persisted := persist(t, n.f)
	if !bytes.Equal(persisted, want) {
		t.Fatalf("Persist and WriteSnapshot differ:\n%x\n%x", persisted, want)
	}
	r := restore(t, persisted)
	if got := snapBytes(t, r); !bytes.Equal(got, want) {
		t.Fatalf("restored state writes other bytes:\n%x\n%x", got, want)
	}
	if !reflect.DeepEqual(allTxns(r), allTxns(n.f)) {
		t.Fatalf("records differ:\n%+v\n%+v", allTxns(r), allTxns(n.f))
	}
	if !reflect.DeepEqual(r.Active(), n.f.Active()) {
		t.Fatalf("Active differs: %v vs %v", ids(r.Active()), ids(n.f.Active()))
	}
	if !reflect.DeepEqual(r.Members(), n.f.Members()) || len(r.Members()) != 2 {
		t.Fatalf("members %v vs %v", r.Members(), n.f.Members())
	}
	if r.AppliedIndex() != n.f.AppliedIndex() || r.AppliedIndex() != n.idx {
		t.Fatalf("applied %d vs %d (log %d)", r.AppliedIndex(), n.f.AppliedIndex(), n.idx)
	}
	for _, tx := range allTxns(n.f) {
		if tx.Key == "" {
			continue
		}
		got, ok := r.ByKey(tx.Key)
		if !ok || got.ID != tx.ID {
			t.Fatalf("ByKey(%q) = %v, %v", tx.Key, got, ok)
		}
	}
	// The key of the pruned transaction is still held after the restore.
	res := (&node{t: t, f: r, idx: n.idx}).do(&fsm.Begin{ID: "new", Key: "key-with key of pruned", Participants: parts(1)})
	if !errors.Is(res.Err, fsm.ErrKeyExists) {
		t.Fatalf("key of a pruned txn lost in the snapshot: %v", res.Err)
	}

	// An empty FSM round-trips too.
	empty := persist(t, fsm.New())
	if got := snapBytes(t, restore(t, empty)); !bytes.Equal(got, empty) {
		t.Fatalf("empty snapshot: %x vs %x", got, empty)
	}
}

// TestSnapshotIsolation: a snapshot taken before more commands persists the state at the
// time it was taken (Persist runs while Apply goes on).
func TestSnapshotIsolation(t *testing.T) {
	n := variedState(t)
	want := snapBytes(t, n.f)
	snap, err := n.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range n.f.Active() {
		n.do(decideAbort(tx.ID, len(tx.Participants)))
		n.do(complete(t0+5000, tx.ID))
	}
	n.must(&fsm.Prune{FinishedBefore: 1 << 60, KeysBefore: 1 << 60})
	n.must(&fsm.SetMember{NodeID: "n9", HTTPAddr: "x"})
	sink := newSink()
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !bytes.Equal(sink.buf.Bytes(), want) {
		t.Fatal("snapshot changed by commands applied after it was taken")
	}
}

// TestSnapshotConcurrentApply persists snapshots while another goroutine applies commands;
// run with -race, it fails if a record is written after it is published.
func TestSnapshotConcurrentApply(t *testing.T) {
	n := newNode(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// t.Fatal may not be called from this goroutine: report with t.Errorf.
		want := func(res fsm.Result, err error) {
			if !errors.Is(res.Err, err) || (err == nil) != (res.Err == nil) {
				t.Errorf("Apply: %v, want %v", res.Err, err)
			}
		}
		for i := range 300 {
			id := strconv.Itoa(i)
			want(n.do(begin(id, 3)), nil)
			want(n.do(&fsm.Progress{ID: id, Reports: []fsm.Report{{Attempts: 1}}}), fsm.ErrBadTransition)
			want(n.do(decideCommit(id, 3)), nil)
			want(n.do(&fsm.Progress{ID: id, Reports: []fsm.Report{{Attempts: 2, Error: "e"}}}), nil)
			want(n.do(complete(t0+int64(i), id)), nil)
			if i%50 == 49 {
				want(n.do(&fsm.Prune{FinishedBefore: t0 + int64(i)}), nil)
			}
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		b := persist(t, n.f)
		restore(t, b)
		for _, tx := range n.f.Active() {
			_ = tx.Errors()
		}
	}
}

func TestPersistCancelsOnWriteError(t *testing.T) {
	n := variedState(t)
	size := len(snapBytes(t, n.f))
	for _, failAfter := range []int{0, 3, 5, size / 2, size - 1} {
		snap, err := n.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := newSink()
		sink.failAfter = failAfter
		err = snap.Persist(sink)
		if !errors.Is(err, errDiskFull) {
			t.Fatalf("failAfter %d: Persist = %v, want the sink's error", failAfter, err)
		}
		if sink.cancelled != 1 || sink.closed != 0 {
			t.Fatalf("failAfter %d: cancelled %d closed %d, want 1 and 0", failAfter, sink.cancelled, sink.closed)
		}
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestRestoreCorrupt(t *testing.T) {
	good := snapBytes(t, variedState(t).f)
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	header := []byte("TXCS\x01")

	cases := map[string][]byte{
		"empty":              {},
		"garbage":            []byte("this is not a snapshot at all"),
		"magic only":         []byte("TXCS"),
		"wrong magic":        cat([]byte("TXCZ"), good[4:]),
		"lower-case magic":   cat([]byte("txcs"), good[4:]),
		"version 0":          cat([]byte("TXCS\x00"), good[5:]),
		"version 7":          cat([]byte("TXCS\x07"), good[5:]),
		"v1 header, v6 body": cat([]byte("TXCS\x01"), good[5:]),
		"v2 header, v6 body": cat([]byte("TXCS\x02"), good[5:]),
		"v3 header, v6 body": cat([]byte("TXCS\x03"), good[5:]),
		"v4 header, v6 body": cat([]byte("TXCS\x04"), good[5:]),
		"v5 header, v6 body": cat([]byte("TXCS\x05"), good[5:]),
		"trailing byte":      cat(good, []byte{0}),
		"trailing snapshot":  cat(good, good),
		"huge record":        cat(header, uv(1<<60)),
		"record over limit":  cat(header, uv(16<<20+1)),
		"bad varint":         cat(header, bytes.Repeat([]byte{0xff}, 11)),
		"header short":       cat(header, uv(2), []byte{1, 1}),
		"header long":        cat(header, uv(5), []byte{1, 0, 0, 0, 9}),
		"missing txn":        cat(header, uv(4), []byte{1, 1, 0, 0}),
		"missing key":        cat(header, uv(4), []byte{1, 0, 1, 0}),
		"missing member":     cat(header, uv(4), []byte{1, 0, 0, 1}),
		"member short":       cat(header, uv(4), []byte{1, 0, 0, 1}, uv(2), []byte{1, 'a'}),
		"member long":        cat(header, uv(4), []byte{1, 0, 0, 1}, uv(5), []byte{1, 'a', 1, 'b', 0}),
		"key bad id tag":     cat(header, uv(4), []byte{1, 0, 1, 0}, uv(4), []byte{1, 'k', 7, 0}),
	}
	// A transaction record with an impossible status.
	{
		n := newNode(t)
		n.must(begin("s", 1))
		b := snapBytes(t, n.f)
		i := bytes.Index(b, []byte("\x00\x01s")) // id tag 0, length 1, "s"
		if i < 0 {
			t.Fatalf("txn record not found in %x", b)
		}
		// id(3) key(1) created(varint) deadline delta(varint) status
		j := i + 3 + 1 + len(binary.AppendVarint(nil, t0)) + len(binary.AppendVarint(nil, 5000))
		if fsm.Status(b[j]) != fsm.StatusPreparing {
			t.Fatalf("status byte not at %d in %x", j, b)
		}
		for _, st := range []byte{0, 7, 255} {
			bad := bytes.Clone(b)
			bad[j] = st
			cases["status "+strconv.Itoa(int(st))] = bad
		}
	}
	// Every truncation of a good snapshot.
	for i := range len(good) {
		cases["truncated at "+strconv.Itoa(i)] = good[:i]
	}

	prev := variedState(t)
	prevBytes := snapBytes(t, prev.f)
	prevTx := prev.get("order-42")
	for name, b := range cases {
		rc := &closeRecorder{Reader: bytes.NewReader(b)}
		err := prev.f.Restore(rc)
		if !errors.Is(err, fsm.ErrCorrupt) {
			t.Fatalf("%s: Restore = %v, want ErrCorrupt", name, err)
		}
		if !rc.closed {
			t.Fatalf("%s: Restore did not close the reader", name)
		}
		if prev.get("order-42") != prevTx {
			t.Fatalf("%s: failed Restore replaced a record", name)
		}
		if got := snapBytes(t, prev.f); !bytes.Equal(got, prevBytes) {
			t.Fatalf("%s: failed Restore changed the state", name)
		}
	}
	// A failed Restore leaves the FSM usable.
	prev.must(decideAbort("0190a8e2-7b3c-7def-8123-456789abcdef", 1))
}

// TestRestoreReaderError: an I/O error from the snapshot stream is reported and the state
// stays as it was.
func TestRestoreReaderError(t *testing.T) {
	good := snapBytes(t, variedState(t).f)
	n := variedState(t)
	before := snapBytes(t, n.f)
	ioErr := errors.New("read failed")
	r := io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotestErr{ioErr})
	if err := n.f.Restore(io.NopCloser(r)); err == nil {
		t.Fatal("Restore of a failing reader succeeded")
	}
	if !bytes.Equal(snapBytes(t, n.f), before) {
		t.Fatal("failed Restore changed the state")
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// TestRestoreReplacesState: Restore drops everything the FSM held before.
func TestRestoreReplacesState(t *testing.T) {
	n := variedState(t)
	other := newNode(t)
	other.must(begin("only", 2))
	other.must(&fsm.SetMember{NodeID: "m", HTTPAddr: "a"})
	want := snapBytes(t, other.f)
	if err := n.f.Restore(nopCloser(want)); err != nil {
		t.Fatal(err)
	}
	if got := snapBytes(t, n.f); !bytes.Equal(got, want) {
		t.Fatal("Restore merged instead of replacing")
	}
	if act := n.f.Active(); len(act) != 1 || act[0].ID != "only" {
		t.Fatalf("Active after Restore = %v", ids(act))
	}
	if _, ok := n.f.ByKey("key-order-42"); ok {
		t.Fatal("old key survived Restore")
	}
	if n.f.AppliedIndex() != 2 {
		t.Fatalf("AppliedIndex = %d, want 2", n.f.AppliedIndex())
	}
}

func FuzzRestore(f *testing.F) {
	f.Add(snapBytes(f, variedState(f).f))
	f.Add(snapBytes(f, fsm.New()))
	small := newNode(f)
	small.must(begin("0190a8e2-7b3c-7def-8123-456789abcdef", 2))
	small.must(&fsm.SetMember{NodeID: "n", HTTPAddr: "a"})
	f.Add(snapBytes(f, small.f))
	f.Add([]byte("TXCS\x01"))
	f.Add([]byte("TXCS\x01\x04\x00\x00\x00\x00"))
	f.Add([]byte("TXCS\x02\x04\x00\x00\x00\x00"))
	for _, name := range []string{"snapshot-v1-769af25.bin", "snapshot-v2a-9b29729.bin", "snapshot-v2b-2bbc0cb.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	empty := snapBytes(f, fsm.New())
	f.Fuzz(func(t *testing.T, b []byte) {
		r := fsm.New()
		if err := r.Restore(nopCloser(b)); err != nil {
			if !errors.Is(err, fsm.ErrCorrupt) {
				t.Fatalf("Restore = %v, want ErrCorrupt", err)
			}
			if !bytes.Equal(snapBytes(t, r), empty) {
				t.Fatal("failed Restore changed the state")
			}
			return
		}
		// What was restored writes a snapshot that restores to the same state, and that
		// second snapshot is a fixed point.
		b2 := snapBytes(t, r)
		r2 := restore(t, b2)
		if b3 := snapBytes(t, r2); !bytes.Equal(b2, b3) {
			t.Fatalf("snapshot of a restored snapshot differs:\n%x\n%x", b2, b3)
		}
		if !reflect.DeepEqual(allTxns(r), allTxns(r2)) || !reflect.DeepEqual(r.Members(), r2.Members()) ||
			r.AppliedIndex() != r2.AppliedIndex() {
			t.Fatal("restored states differ")
		}
		// The restored FSM stays usable.
		for _, tx := range r.Active() {
			r.ApplyCommand(r.AppliedIndex()+1, decideAbort(tx.ID, len(tx.Participants)))
		}
	})
}

// goldenSnapshotState is a small state whose snapshot bytes are pinned below: a newer
// binary must restore a snapshot an older one wrote.
func goldenSnapshotState(t testing.TB) *node {
	n := newNode(t)
	n.must(goldens[0].cmd) // Begin of goldenID, key order-42, derived and explicit URLs
	n.must(&fsm.Decide{ID: goldenID, Decision: fsm.DecisionCommit, At: t0 + 120, Votes: votes(2, fsm.VoteYes), Reasons: make([]string, 2)})
	n.must(&fsm.Complete{At: t0 + 300, Items: []fsm.Completion{{ID: goldenID, Attempts: []uint32{1, 2}}}})
	n.must(goldens[1].cmd) // Begin of legacy-7, preparing
	n.must(&fsm.Decide{ID: "legacy-7", Decision: fsm.DecisionAbort, At: 5, Votes: []fsm.Vote{fsm.VoteNo}, Reasons: []string{"full"}})
	n.must(&fsm.Fail{ID: "legacy-7", At: 9, Reports: []fsm.Report{{Attempts: 3, Error: "HTTP 500"}}})
	n.must(&fsm.SetMember{NodeID: "node-1", HTTPAddr: "10.0.0.1:8080"})
	return n
}

// goldenSnapshotHex pins the current (version 6) encoding of goldenSnapshotState; its header
// holds level 0, lastTs t0+300 (the Complete's time) and horizon 0.
const goldenSnapshotHex = "" +
	"54584353060d070201010000d8a4abfef962009001010190a8e27b3c7def8123456789abcdef086f726465722d343280" +
	"a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f" +
	"707265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f6874" +
	"74703a2f2f7061792f74782f7201000102000000025800086c65676163792d3700010006020a12000601011068747470" +
	"3a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c" +
	"000308485454502035303000000220086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215" +
	"066e6f64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV5 is the same state as written by version 5 (31d74c1): it must still
// restore.
const goldenSnapshotHexV5 = "" +
	"54584353050d070201010000d8a4abfef962008f01010190a8e27b3c7def8123456789abcdef086f726465722d343280" +
	"a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f" +
	"707265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f6874" +
	"74703a2f2f7061792f74782f72010001020000005700086c65676163792d3700010006020a120006010110687474703a" +
	"2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c00" +
	"03084854545020353030000020086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e" +
	"6f64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV4 is the same state as written by version 4 (fd03fea): it must still
// restore.
const goldenSnapshotHexV4 = "" +
	"54584353040c070201010000d8a4abfef9628f01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0" +
	"abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f70" +
	"7265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474" +
	"703a2f2f7061792f74782f72010001020000005700086c65676163792d3700010006020a120006010110687474703a2f" +
	"2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c0003" +
	"084854545020353030000020086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e6f" +
	"64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV3 is the same state as written by version 3 (0ebedb6): it must still
// restore.
const goldenSnapshotHexV3 = "" +
	"54584353030c070201010000d8a4abfef9628d01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0" +
	"abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f70" +
	"7265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474" +
	"703a2f2f7061792f74782f7201000102005500086c65676163792d3700010006020a120006010110687474703a2f2f68" +
	"2f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c00030848" +
	"5454502035303020086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e6f64652d31" +
	"0d31302e302e302e313a38303830"

// goldenSnapshotHexV2 is the same state as written by version 2 (no endpoint records, so
// the v2a and v2b layouts are the same bytes): it must still restore.
const goldenSnapshotHexV2 = "" +
	"54584353020507020101008d01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0abfef962904e04" +
	"01f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f7072657061726501" +
	"00010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474703a2f2f706179" +
	"2f74782f7201000102005500086c65676163792d3700010006020a120006010110687474703a2f2f682f707265706172" +
	"650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c0003084854545020353030" +
	"20086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e6f64652d310d31302e302e30" +
	"2e313a38303830"

// goldenSnapshotHexV1 is the same state as written by version 1 (before the endpoint
// table): it must still restore.
const goldenSnapshotHexV1 = "" +
	"545843530104070201018d01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0abfef962904e0401" +
	"f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f707265706172650100" +
	"010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474703a2f2f7061792f" +
	"74782f7201000102005500086c65676163792d3700010006020a120006010110687474703a2f2f682f70726570617265" +
	"0f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c000308485454502035303020" +
	"086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e6f64652d310d31302e302e302e" +
	"313a38303830"

func TestGoldenSnapshot(t *testing.T) {
	n := goldenSnapshotState(t)
	pinSnapshot(t, n.f, goldenSnapshotHex)
	for name, golden := range map[string]string{"v6": goldenSnapshotHex, "v5": goldenSnapshotHexV5, "v4": goldenSnapshotHexV4, "v3": goldenSnapshotHexV3, "v2": goldenSnapshotHexV2, "v1": goldenSnapshotHexV1} {
		r := restoreHex(t, golden)
		if !reflect.DeepEqual(allTxns(r), allTxns(n.f)) || !reflect.DeepEqual(r.Members(), n.f.Members()) || r.AppliedIndex() != 7 {
			t.Fatalf("%s golden snapshot restores to\n%+v\nwant\n%+v", name, allTxns(r), allTxns(n.f))
		}
		if tx, ok := r.ByKey("order-42"); !ok || tx.ID != goldenID {
			t.Fatalf("%s: ByKey(order-42) = %v, %v", name, tx, ok)
		}
	}
}

// goldenPayloadState adds to goldenSnapshotState what version 4 added: a preparing
// transaction whose participants carry payloads, and a failed one an operator retried.
func goldenPayloadState(t testing.TB) *node {
	n := goldenSnapshotState(t)
	n.must(&fsm.SetFeatures{Level: 2, At: t0 + 400})
	n.must(&fsm.Begin{ID: "pl-1", CreatedAt: t0 + 500, Deadline: t0 + 1500,
		Participants: []fsm.Participant{
			{Prepare: "http://flight/prepare", Commit: "http://flight/commit", Rollback: "http://flight/rollback"},
			{Prepare: "http://hotel/prepare", Commit: "http://hotel/commit", Rollback: "http://hotel/rollback"},
		},
		Payloads: []string{`{"seats":2}`, ""}})
	n.must(&fsm.Retry{ID: "legacy-7", At: t0 + 600, Note: "dns fixed"})
	return n
}

// goldenSnapshotHexV6Payloads pins the current (version 6) encoding of goldenPayloadState.
const goldenSnapshotHexV6Payloads = "" +
	"54584353060d0a0301010002b0a9abfef962009001010190a8e27b3c7def8123456789abcdef086f726465722d343280" +
	"a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f" +
	"707265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f6874" +
	"74703a2f2f7061792f74782f7201000102000000026600086c65676163792d3700010003020a0009646e732066697865" +
	"640a010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f75" +
	"6e646f020466756c6c0000084854545020353030b0a9abfef96200025d0004706c2d3100e8a7abfef962d00f01000000" +
	"0009020015687474703a2f2f666c696768742f7072657061726500000000000014687474703a2f2f686f74656c2f7072" +
	"6570617265000000000000020b7b227365617473223a327d000220086f726465722d3432010190a8e27b3c7def812345" +
	"6789abcdef80a0abfef96215066e6f64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV5Payloads is goldenPayloadState as version 5 (31d74c1) wrote it.
const goldenSnapshotHexV5Payloads = "" +
	"54584353050d0a0301010002b0a9abfef962008f01010190a8e27b3c7def8123456789abcdef086f726465722d343280" +
	"a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f" +
	"707265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f6874" +
	"74703a2f2f7061792f74782f72010001020000006500086c65676163792d3700010003020a0009646e73206669786564" +
	"0a010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e" +
	"646f020466756c6c0000084854545020353030b0a9abfef962005c0004706c2d3100e8a7abfef962d00f010000000009" +
	"020015687474703a2f2f666c696768742f7072657061726500000000000014687474703a2f2f686f74656c2f70726570" +
	"617265000000000000020b7b227365617473223a327d0020086f726465722d3432010190a8e27b3c7def8123456789ab" +
	"cdef80a0abfef96215066e6f64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV4Payloads is goldenPayloadState as version 4 (fd03fea) wrote it.
const goldenSnapshotHexV4Payloads = "" +
	"54584353040c0a0301010002b0a9abfef9628f01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0" +
	"abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a393030312f70" +
	"7265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474" +
	"703a2f2f7061792f74782f72010001020000006500086c65676163792d3700010003020a0009646e732066697865640a" +
	"010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e64" +
	"6f020466756c6c0000084854545020353030b0a9abfef962005c0004706c2d3100e8a7abfef962d00f01000000000902" +
	"0015687474703a2f2f666c696768742f7072657061726500000000000014687474703a2f2f686f74656c2f7072657061" +
	"7265000000000000020b7b227365617473223a327d0020086f726465722d3432010190a8e27b3c7def8123456789abcd" +
	"ef80a0abfef96215066e6f64652d310d31302e302e302e313a38303830"

// TestGoldenSnapshotV4Payloads: payloads and retriedAt survive a version-4 snapshot written
// by the payloads build, and the payloads go once the decision is logged.
func TestGoldenSnapshotV4Payloads(t *testing.T) {
	n := goldenPayloadState(t)
	pinSnapshot(t, n.f, goldenSnapshotHexV6Payloads)
	for name, golden := range map[string]string{"v4": goldenSnapshotHexV4Payloads, "v5": goldenSnapshotHexV5Payloads, "v6": goldenSnapshotHexV6Payloads} {
		if r := restoreHex(t, golden); !reflect.DeepEqual(allTxns(r), allTxns(n.f)) {
			t.Fatalf("%s golden restores to\n%+v\nwant\n%+v", name, allTxns(r), allTxns(n.f))
		}
	}
	r := restoreHex(t, goldenSnapshotHexV6Payloads)
	pl, _ := r.Get("pl-1")
	if pl.Payload(0) != `{"seats":2}` || pl.Payload(1) != "" || len(pl.Payloads) != 2 {
		t.Fatalf("payloads %q", pl.Payloads)
	}
	if lg, _ := r.Get("legacy-7"); lg.RetriedAt != t0+600 || lg.PhaseTwoSince() != t0+600 || lg.Status != fsm.StatusRollingBack {
		t.Fatalf("retried record %+v", lg)
	}
	res := r.ApplyCommand(r.AppliedIndex()+1, decideAbort("pl-1", 2))
	if res.Err != nil || res.Txn.Payloads != nil {
		t.Fatalf("after the decision: %+v", res)
	}
}

// goldenInquiryState adds to goldenPayloadState what version 5 added: a cluster at level
// 3, a presumed-abort record, fast-mode records and a retention horizon.
func goldenInquiryState(t testing.TB) *node {
	n := goldenPayloadState(t)
	n.must(&fsm.SetFeatures{Level: 3, At: t0 + 700})
	n.must(&fsm.PresumeAbort{ID: "0190a8e2-7b3c-7def-8123-000000000001", At: t0 + 7000, Deadline: t0 + 5000})
	n.must(&fsm.FastDecide{Begin: fsm.Begin{ID: "0190a8e2-7b3c-7def-8123-000000000002", Key: "fast-1", CreatedAt: t0 + 800, Deadline: t0 + 1800,
		Participants: parts(3)}, Decision: fsm.DecisionCommit, AfterMs: 4})
	n.must(&fsm.FastDecide{Begin: fsm.Begin{ID: "0190a8e2-7b3c-7def-8123-000000000003", CreatedAt: t0 + 900, Deadline: t0 + 1900,
		Participants: parts(2)}, Decision: fsm.DecisionAbort, AfterMs: 6, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo}, Reasons: []string{"", "sold out"}})
	n.must(&fsm.Prune{FinishedBefore: t0 + 750})
	return n
}

// goldenSnapshotHexV5Inquiry is goldenInquiryState as version 5 (31d74c1) wrote it.
const goldenSnapshotHexV5Inquiry = "" +
	"5458435305120f0602010003b08dacfef962dcababfef962a301010190a8e27b3c7def812300000000000100b08dacfe" +
	"f9629f1f0502b08dacfef962b08dacfef9627670726573756d65642061626f72743a2061207061727469636970616e74" +
	"2061736b656420666f7220746865206f7574636f6d6520706173742069747320646561646c696e6520616e6420746865" +
	"20636c757374657220686164206e6f207265636f7264206f6620746865207472616e73616374696f6e0c0000009a0101" +
	"0190a8e27b3c7def812300000000000206666173742d31c0acabfef962d00f0201c8acabfef96200000d03001d687474" +
	"703a2f2f3132372e302e302e313a393030312f707265706172650100000000001d687474703a2f2f3132372e302e302e" +
	"313a393030322f707265706172650100000000001d687474703a2f2f3132372e302e302e313a393030332f7072657061" +
	"72650100000000000078010190a8e27b3c7def81230000000000030088aeabfef962d00f030294aeabfef96200000e02" +
	"001d687474703a2f2f3132372e302e302e313a393030312f707265706172650100000000001d687474703a2f2f313237" +
	"2e302e302e313a393030322f707265706172650208736f6c64206f757400000000008f01010190a8e27b3c7def812345" +
	"6789abcdef086f726465722d343280a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f" +
	"3132372e302e302e313a393030312f707265706172650100010100010f687474703a2f2f7061792f74782f700f687474" +
	"703a2f2f7061792f74782f630f687474703a2f2f7061792f74782f72010001020000006500086c65676163792d370001" +
	"0003020a0009646e732066697865640a010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d" +
	"6d69740d687474703a2f2f682f756e646f020466756c6c0000084854545020353030b0a9abfef962005c0004706c2d31" +
	"00e8a7abfef962d00f010000000009020015687474703a2f2f666c696768742f70726570617265000000000000146874" +
	"74703a2f2f686f74656c2f70726570617265000000000000020b7b227365617473223a327d001e06666173742d310101" +
	"90a8e27b3c7def8123000000000002c0acabfef96220086f726465722d3432010190a8e27b3c7def8123456789abcdef" +
	"80a0abfef96215066e6f64652d310d31302e302e302e313a38303830"

// goldenSnapshotHexV6Inquiry pins the current (version 6) encoding of goldenInquiryState.
const goldenSnapshotHexV6Inquiry = "" +
	"5458435306120f0602010003b08dacfef962dcababfef962a401010190a8e27b3c7def812300000000000100b08dacfe" +
	"f9629f1f0502b08dacfef962b08dacfef9627670726573756d65642061626f72743a2061207061727469636970616e74" +
	"2061736b656420666f7220746865206f7574636f6d6520706173742069747320646561646c696e6520616e6420746865" +
	"20636c757374657220686164206e6f207265636f7264206f6620746865207472616e73616374696f6e0c000000029b01" +
	"010190a8e27b3c7def812300000000000206666173742d31c0acabfef962d00f0201c8acabfef96200000d03001d6874" +
	"74703a2f2f3132372e302e302e313a393030312f707265706172650100000000001d687474703a2f2f3132372e302e30" +
	"2e313a393030322f707265706172650100000000001d687474703a2f2f3132372e302e302e313a393030332f70726570" +
	"617265010000000000000279010190a8e27b3c7def81230000000000030088aeabfef962d00f030294aeabfef9620000" +
	"0e02001d687474703a2f2f3132372e302e302e313a393030312f707265706172650100000000001d687474703a2f2f31" +
	"32372e302e302e313a393030322f707265706172650208736f6c64206f75740000000000029001010190a8e27b3c7def" +
	"8123456789abcdef086f726465722d343280a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d68747470" +
	"3a2f2f3132372e302e302e313a393030312f707265706172650100010100010f687474703a2f2f7061792f74782f700f" +
	"687474703a2f2f7061792f74782f630f687474703a2f2f7061792f74782f7201000102000000026600086c6567616379" +
	"2d3700010003020a0009646e732066697865640a010110687474703a2f2f682f707265706172650f687474703a2f2f68" +
	"2f636f6d6d69740d687474703a2f2f682f756e646f020466756c6c0000084854545020353030b0a9abfef96200025d00" +
	"04706c2d3100e8a7abfef962d00f010000000009020015687474703a2f2f666c696768742f7072657061726500000000" +
	"000014687474703a2f2f686f74656c2f70726570617265000000000000020b7b227365617473223a327d00021e066661" +
	"73742d31010190a8e27b3c7def8123000000000002c0acabfef96220086f726465722d3432010190a8e27b3c7def8123" +
	"456789abcdef80a0abfef96215066e6f64652d310d31302e302e302e313a38303830"

// TestGoldenSnapshotV5Inquiry: presumed-abort and fast-mode records, the level and the
// horizon survive a version-5 snapshot written by 31d74c1 and the current version, in
// pinned bytes.
func TestGoldenSnapshotV5Inquiry(t *testing.T) {
	n := goldenInquiryState(t)
	if n.f.Horizon() != t0+750 {
		t.Fatalf("horizon %d", n.f.Horizon())
	}
	pinSnapshot(t, n.f, goldenSnapshotHexV6Inquiry)
	for name, golden := range map[string]string{"v5": goldenSnapshotHexV5Inquiry, "v6": goldenSnapshotHexV6Inquiry} {
		r := restoreHex(t, golden)
		if !reflect.DeepEqual(allTxns(r), allTxns(n.f)) || r.Horizon() != t0+750 || r.FeatureLevel() != 3 {
			t.Fatalf("%s golden restores to\n%+v (horizon %d, level %d)\nwant\n%+v", name, allTxns(r), r.Horizon(), r.FeatureLevel(), allTxns(n.f))
		}
		tomb, _ := r.Get("0190a8e2-7b3c-7def-8123-000000000001")
		if !tomb.PresumedAborted() || tomb.Status != fsm.StatusRolledBack {
			t.Fatalf("%s: presumed-abort record %+v", name, tomb)
		}
		// Restored, it still refuses a late decision for the presumed-aborted id.
		late := &fsm.FastDecide{Begin: fsm.Begin{ID: tomb.ID, CreatedAt: t0 + 1000, Deadline: t0 + 5000, Participants: parts(1)}, Decision: fsm.DecisionCommit}
		if res := r.ApplyCommand(r.AppliedIndex()+1, late); !errors.Is(res.Err, fsm.ErrPresumedAbort) {
			t.Fatalf("%s: late fast decision after restore: %+v", name, res)
		}
	}
}

// goldenTraceState adds to goldenPayloadState what version 6 added: transactions begun with
// a trace context (feature level 4), with and without payloads.
func goldenTraceState(t testing.TB) *node {
	n := goldenPayloadState(t)
	n.must(&fsm.SetFeatures{Level: 4, At: t0 + 700})
	n.must(&fsm.Begin{ID: "tr-1", CreatedAt: t0 + 800, Deadline: t0 + 1800,
		Participants: []fsm.Participant{{Prepare: "http://flight/prepare", Commit: "http://flight/commit", Rollback: "http://flight/rollback"}},
		Trace:        goldenTrace})
	n.must(&fsm.Begin{ID: "tr-2", CreatedAt: t0 + 900, Deadline: t0 + 1900,
		Participants: []fsm.Participant{{Prepare: "http://flight/prepare", Commit: "http://flight/commit", Rollback: "http://flight/rollback"}},
		Payloads:     []string{`{"seats":1}`},
		Trace:        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"})
	return n
}

// goldenSnapshotHexV6Trace pins the version 6 encoding of goldenTraceState.
const goldenSnapshotHexV6Trace = "" +
	"5458435306120d050101000488aeabfef962f8aaabfef9629001010190a8e27b3c7def8123456789abcdef086f726465" +
	"722d343280a0abfef962904e0401f0a1abfef962d8a4abfef962000302001d687474703a2f2f3132372e302e302e313a" +
	"393030312f707265706172650100010100010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f7478" +
	"2f630f687474703a2f2f7061792f74782f7201000102000000026600086c65676163792d3700010003020a0009646e73" +
	"2066697865640a010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a" +
	"2f2f682f756e646f020466756c6c0000084854545020353030b0a9abfef96200025d0004706c2d3100e8a7abfef962d0" +
	"0f010000000009020015687474703a2f2f666c696768742f7072657061726500000000000014687474703a2f2f686f74" +
	"656c2f70726570617265000000000000020b7b227365617473223a327d00024e000474722d3100c0acabfef962d00f01" +
	"000000000c010015687474703a2f2f666c696768742f7072657061726500000000000000010af7651916cd43dd8448eb" +
	"211c80319cb7ad6b7169203331018001000474722d320088aeabfef962d00f01000000000d010015687474703a2f2f66" +
	"6c696768742f70726570617265000000000000010b7b227365617473223a317d003e30312d3061663736353139313663" +
	"6434336464383434386562323131633830333139632d623761643662373136393230333333312d30312d667574757265" +
	"20086f726465722d3432010190a8e27b3c7def8123456789abcdef80a0abfef96215066e6f64652d310d31302e302e30" +
	"2e313a38303830"

// TestGoldenSnapshotV6Trace: the trace context survives a version-6 snapshot, in pinned
// bytes, in both its compact and its text form.
func TestGoldenSnapshotV6Trace(t *testing.T) {
	n := goldenTraceState(t)
	pinSnapshot(t, n.f, goldenSnapshotHexV6Trace)
	r := restoreHex(t, goldenSnapshotHexV6Trace)
	if !reflect.DeepEqual(allTxns(r), allTxns(n.f)) {
		t.Fatalf("v6 golden restores to\n%+v\nwant\n%+v", allTxns(r), allTxns(n.f))
	}
	if tr, _ := r.Get("tr-1"); tr.Trace != goldenTrace {
		t.Fatalf("trace %q", tr.Trace)
	}
	if tr, _ := r.Get("tr-2"); tr.Payload(0) != `{"seats":1}` || !strings.HasSuffix(tr.Trace, "-future") {
		t.Fatalf("record %+v", tr)
	}
}
