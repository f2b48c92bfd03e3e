package archive

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/codec"
)

const t0 = int64(1_760_000_000_000) // unix ms

// v7 returns a UUIDv7 whose timestamp is ms and whose random part is i.
func v7(ms int64, i int) string {
	var b [16]byte
	for j := 5; j >= 0; j-- {
		b[j] = byte(ms)
		ms >>= 8
	}
	b[6], b[8] = 0x70, 0x80
	for j := 15; j > 9; j-- {
		b[j] = byte(i)
		i >>= 8
	}
	return codec.UUIDString(b[:])
}

func parts(n int) []fsm.Participant {
	out := make([]fsm.Participant, n)
	for i := range out {
		base := fmt.Sprintf("http://10.0.0.%d:9000/", i+1)
		out[i] = fsm.Participant{Prepare: base + "prepare", Commit: base + "commit", Rollback: base + "rollback"}
	}
	return out
}

// committed is a realistic finished 3-participant transaction.
func committed(i int) *fsm.Txn {
	c := t0 + int64(i)
	return &fsm.Txn{ID: v7(c, i), CreatedAt: c, Deadline: c + 1000, Status: fsm.StatusCommitted, Decision: fsm.DecisionCommit,
		DecidedAt: c + 4, FinishedAt: c + 9, Index: uint64(1_000_000 + 3*i), Participants: parts(3),
		States: []fsm.ParticipantState{{Vote: fsm.VoteYes, Acked: true, Attempts: 1}, {Vote: fsm.VoteYes, Acked: true, Attempts: 1}, {Vote: fsm.VoteYes, Acked: true, Attempts: 1}}}
}

func open(t testing.TB, dir string, o Options) *Archive {
	t.Helper()
	a, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return a
}

func mustGet(t testing.TB, a *Archive, want *fsm.Txn) {
	t.Helper()
	got, ok, err := a.Get(want.ID)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %v, %v", want.ID, ok, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get(%s):\n got %+v\nwant %+v", want.ID, got, want)
	}
}

func TestTxnRoundTrip(t *testing.T) {
	odd := &fsm.Txn{ID: "not-a-uuid", Key: "order-4711", CreatedAt: t0, Deadline: t0 + 60000, Status: fsm.StatusRolledBack,
		Decision: fsm.DecisionAbort, DecidedAt: t0 - 3, FinishedAt: t0 + 500, Note: "settled by hand", Index: 7,
		Participants: []fsm.Participant{{Prepare: "http://a/p", Commit: "http://a/c", Rollback: "http://a/r"}, parts(1)[0]},
		States:       []fsm.ParticipantState{{Vote: fsm.VoteNo, Reason: "no rooms left", Attempts: 3}, {Vote: fsm.VoteError, Reason: "HTTP 500", LastError: "reset", Attempts: 9}}}
	undecided := &fsm.Txn{ID: v7(t0, 1), CreatedAt: t0 + 17, Deadline: t0 + 1017, Status: fsm.StatusCommitted, Participants: []fsm.Participant{}, States: []fsm.ParticipantState{}}
	for _, want := range []*fsm.Txn{committed(1), odd, undecided} {
		refs := map[fsm.Participant]uint32{}
		var table []fsm.Participant
		for _, p := range want.Participants {
			if _, ok := refs[p]; !ok {
				refs[p] = uint32(len(table))
				table = append(table, p)
			}
		}
		var e enc
		encodeTxn(&e, want, func(p fsm.Participant) uint32 { return refs[p] })
		d := newDec(e.B)
		got := decodeTxn(d, table)
		if err := d.End(); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip (%v):\n got %+v\nwant %+v", err, got, want)
		}
	}
}

// TestGoldenSegment pins the segment format (version 1): a header, one endpoint table, one
// committed transaction and its Prune marker, written by an archive.
func TestGoldenSegment(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Now: func() time.Time { return time.UnixMilli(t0 + 3_600_000) }})
	txn := committed(1)
	txn.Participants = parts(1)
	txn.States = txn.States[:1]
	a.Pruned(42, []*fsm.Txn{txn})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "0000000000000001.seg"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "5458434101" + "0000000000000000" + "89b6034e" + // header: "TXCA" v1, through 0, CRC
		"451e001c687474703a2f2f31302e302e302e313a393030302f70726570617265" + "366f6115" + // E: a derived endpoint, CRC
		"541e" + "1914" + "0199c82cc00170008000000000000001" + "00d00f0812c3843d" + "01000501" + "fe6ab1bf" + // T: flags, status|decision, id, times, index, 1 participant, CRC
		"5008" + "2a01" + "80ba9d86b966" + "b4721cce" // P: index 42, 1 transaction, archived at (unix ms), CRC
	if hex.EncodeToString(got) != want {
		t.Fatalf("segment bytes changed (a format change needs a new version):\n got %x\nwant %s", got, want)
	}
	b, _ := hex.DecodeString(want)
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "0000000000000001.seg"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	a2 := open(t, d, Options{Now: func() time.Time { return time.UnixMilli(t0) }})
	defer a2.Close()
	mustGet(t, a2, txn)
	if a2.Through() != 42 {
		t.Fatalf("Through = %d, want 42", a2.Through())
	}
}

// TestExactlyOnce: a Prune handed over again (replay after restart or restore) or one at a
// lower index is skipped, before and after reopening.
func TestExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{})
	batch := []*fsm.Txn{committed(1), committed(2)}
	a.Pruned(10, batch)
	a.Pruned(10, batch)
	a.Pruned(9, []*fsm.Txn{committed(3)})
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Records != 2 || st.Through != 10 {
		t.Fatalf("stats %+v, want 2 records through 10", st)
	}
	a.Close()
	a = open(t, dir, Options{})
	defer a.Close()
	a.Pruned(10, batch)
	a.Pruned(11, []*fsm.Txn{committed(4)})
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Records != 3 || st.Through != 11 {
		t.Fatalf("after reopen: stats %+v, want 3 records through 11", st)
	}
	for _, i := range []int{1, 2, 4} {
		mustGet(t, a, committed(i))
	}
	if _, ok, _ := a.Get(committed(3).ID); ok {
		t.Fatal("a Prune below Through was archived")
	}
}

// TestTornTail cuts the segment at every byte offset inside the last Prune's records
// (its endpoint-free transactions and its marker, the last record) and flips each byte
// of the last record: every reopen keeps the earlier Prune, drops the unfinished one
// without a gap (Through stays before it), and archives it when it is handed over again.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{})
	first := []*fsm.Txn{committed(1), committed(2)}
	a.Pruned(10, first)
	a.Sync()
	cut := a.Stats().Bytes
	second := []*fsm.Txn{committed(3), committed(4)}
	a.Pruned(20, second)
	a.Close()
	full, err := os.ReadFile(filepath.Join(dir, "0000000000000001.seg"))
	if err != nil {
		t.Fatal(err)
	}
	// The last record (the 'P' marker) starts 4+2+1+n bytes before the end: find it.
	lastStart := int64(0)
	boundary := map[int64]bool{}
	for off := int64(headerSize); off < int64(len(full)); {
		_, _, n, err := parseRecord(full[off:])
		if err != nil {
			t.Fatal(err)
		}
		boundary[off] = true
		lastStart = off
		off += int64(n)
	}
	// skipped is how many torn or corrupt records the reopen must report: one, unless the
	// bytes end between two whole records (an unfinished Prune, nothing damaged).
	check := func(name string, b []byte, skipped int) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "0000000000000001.seg"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		a := open(t, d, Options{})
		defer a.Close()
		if st := a.Stats(); st.Through != 10 || st.Records != 2 || len(st.Gaps) != 0 || st.Bytes != cut || st.Skipped != skipped || st.Written != 0 {
			t.Fatalf("%s: stats %+v, want 2 records through 10 in %d bytes, %d skipped, none written", name, st, cut, skipped)
		}
		for _, x := range first {
			mustGet(t, a, x)
		}
		if _, ok, err := a.Get(second[0].ID); ok || err != nil {
			t.Fatalf("%s: unfinished Prune readable (%v, %v)", name, ok, err)
		}
		a.Pruned(20, second) // Raft's replay
		if err := a.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, x := range append(first, second...) {
			mustGet(t, a, x)
		}
		if st := a.Stats(); st.Written != int64(len(second)) || st.WriteErrors != 0 {
			t.Fatalf("%s: after the replay: %+v, want %d written", name, st, len(second))
		}
	}
	for n := cut; n < int64(len(full)); n++ {
		skipped := 1
		if boundary[n] {
			skipped = 0
		}
		check(fmt.Sprintf("cut at %d of %d", n, len(full)), full[:n], skipped)
	}
	for i := lastStart; i < int64(len(full)); i++ {
		b := bytes.Clone(full)
		b[i] ^= 0x40
		check(fmt.Sprintf("byte %d flipped", i), b, 1)
	}
}

// TestCoveredIsDurable: once Covered returns, a copy of the files (a crash: no Close)
// holds everything handed over before it.
func TestCoveredIsDurable(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{})
	defer a.Close()
	for i := 0; i < 50; i++ {
		a.Pruned(uint64(100+i), []*fsm.Txn{committed(i)})
	}
	if err := a.Covered(200); err != nil {
		t.Fatal(err)
	}
	crash := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(dir, "0000000000000001.seg"))
	os.WriteFile(filepath.Join(crash, "0000000000000001.seg"), b, 0o600)
	c := open(t, crash, Options{})
	defer c.Close()
	if st := c.Stats(); st.Records != 50 || st.Through != 200 {
		t.Fatalf("after a crash: %+v, want 50 records through 200", st)
	}
}

// TestRestoredGap: a restore beyond Through is recorded as a gap, persists, and moves
// Through; a restore at or below it is nothing.
func TestRestoredGap(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{})
	a.Pruned(10, []*fsm.Txn{committed(1)})
	a.Restored(5)
	a.Restored(30)
	a.Pruned(25, []*fsm.Txn{committed(2)}) // below the restore: its state is gone anyway
	a.Sync()
	a.Close()
	a = open(t, dir, Options{})
	defer a.Close()
	st := a.Stats()
	if st.Through != 30 || len(st.Gaps) != 1 || st.Gaps[0] != (Gap{10, 30}) || st.Records != 1 {
		t.Fatalf("stats %+v, want gap (10, 30] and 1 record", st)
	}
}

// TestRotationAndRetention: segments rotate by size; retention deletes the oldest by
// size and by age, never the one being written; lookups and scans cover what is kept.
func TestRotationAndRetention(t *testing.T) {
	dir := t.TempDir()
	now := time.UnixMilli(t0 + 1000)
	a := open(t, dir, Options{SegmentBytes: 1024, MaxBytes: 4096, Now: func() time.Time { return now }})
	for i := 0; i < 200; i++ {
		a.Pruned(uint64(i+1), []*fsm.Txn{committed(i)})
	}
	a.Sync()
	st := a.Stats()
	if st.Segments < 3 || st.Bytes > 4096+1024 {
		t.Fatalf("stats %+v: want several segments within about MaxBytes", st)
	}
	mustGet(t, a, committed(199))
	if _, ok, _ := a.Get(committed(0).ID); ok {
		t.Fatal("the oldest record survived size retention")
	}
	var seen []string
	if err := a.Scan(0, 0, Cursor{}, func(x *fsm.Txn, _ Cursor) bool { seen = append(seen, x.ID); return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != st.Records || seen[len(seen)-1] != committed(199).ID {
		t.Fatalf("scan saw %d records, stats %d", len(seen), st.Records)
	}
	a.Close()
	// 31 days later every sealed segment is expired; the last one stays.
	now = now.Add(31 * 24 * time.Hour)
	a = open(t, dir, Options{SegmentBytes: 1024, MaxBytes: 4096, Now: func() time.Time { return now }})
	defer a.Close()
	if st := a.Stats(); st.Segments != 1 || st.Through != 200 {
		t.Fatalf("after age retention: %+v, want 1 segment through 200", st)
	}
	mustGet(t, a, committed(199))
}

// TestScanRange: time bounds, cursors and early stop.
func TestScanRange(t *testing.T) {
	a := open(t, t.TempDir(), Options{SegmentBytes: 2048, Now: func() time.Time { return time.UnixMilli(t0) }})
	defer a.Close()
	for i := 0; i < 100; i++ {
		a.Pruned(uint64(i+1), []*fsm.Txn{committed(i)})
	}
	a.Sync()
	var got []int64
	var cur Cursor
	for page := 0; page < 100; page++ {
		n := 0
		more := false
		err := a.Scan(t0+20, t0+60, cur, func(x *fsm.Txn, at Cursor) bool {
			if n == 7 {
				more = true
				return false
			}
			got = append(got, x.CreatedAt-t0)
			cur, n = at, n+1
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		c2, err := ParseCursor(cur.String())
		if err != nil || c2 != cur {
			t.Fatalf("cursor round trip %v -> %v (%v)", cur, c2, err)
		}
	}
	if len(got) != 40 || got[0] != 20 || got[39] != 59 {
		t.Fatalf("scan [20, 60) in pages of 7: %v", got)
	}
}

// TestBytesPerTransaction measures the archive on disk for realistic 3-participant
// transactions (UUIDv7 ids, 1 s timeout, committed, pruned 1,000 per Prune): the target
// is at most 64 bytes each.
func TestBytesPerTransaction(t *testing.T) {
	a := open(t, t.TempDir(), Options{})
	defer a.Close()
	const n = 20000
	for b := 0; b < n/1000; b++ {
		batch := make([]*fsm.Txn, 1000)
		for i := range batch {
			batch[i] = committed(b*1000 + i)
		}
		a.Pruned(uint64(b+1)*10000, batch)
	}
	a.Sync()
	st := a.Stats()
	per := float64(st.Bytes) / n
	t.Logf("archive: %d transactions in %d bytes on disk: %.1f bytes per 3-participant transaction", n, st.Bytes, per)
	if per > 64 {
		t.Fatalf("%.1f bytes per transaction, target <= 64", per)
	}
	for _, i := range []int{0, 4095, 4097, 12345, n - 1} { // across merged index runs
		mustGet(t, a, committed(i))
	}
}

// TestRebase: after a restore at index 15 into a copy of an archive that held up to 30,
// the old records stay readable and Prunes of the new log above 15 are archived.
func TestRebase(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Now: func() time.Time { return time.UnixMilli(t0) }})
	a.Pruned(10, []*fsm.Txn{committed(1)})
	a.Pruned(30, []*fsm.Txn{committed(2)})
	a.Close()
	if err := Rebase(dir, 15); err != nil {
		t.Fatal(err)
	}
	a = open(t, dir, Options{Now: func() time.Time { return time.UnixMilli(t0) }})
	defer a.Close()
	a.Restored(15)
	a.Pruned(20, []*fsm.Txn{committed(3)})
	a.Sync()
	for _, i := range []int{1, 2, 3} {
		mustGet(t, a, committed(i))
	}
	if st := a.Stats(); st.Through != 20 || len(st.Gaps) != 0 {
		t.Fatalf("stats %+v, want through 20 and no gap", st)
	}
}

// TestPresumedAbortRecord (issue 17): a presumed-abort record (rolled back, no
// participants, its deadline before its creation) leaves the FSM through Prune like any
// finished transaction: it is archived, read back whole, and after a reopen.
func TestPresumedAbortRecord(t *testing.T) {
	tomb := &fsm.Txn{ID: v7(t0, 77), CreatedAt: t0 + 6000, Deadline: t0 + 5000, Status: fsm.StatusRolledBack, Decision: fsm.DecisionAbort,
		DecidedAt: t0 + 6000, FinishedAt: t0 + 6000, Note: fsm.PresumedAbortNote, Index: 42,
		Participants: []fsm.Participant{}, States: []fsm.ParticipantState{}}
	if !tomb.PresumedAborted() {
		t.Fatal("not a presumed-abort record")
	}
	dir := t.TempDir()
	a := open(t, dir, Options{})
	a.Pruned(50, []*fsm.Txn{committed(1), tomb})
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, a, tomb)
	a.Close()
	a = open(t, dir, Options{})
	defer a.Close()
	mustGet(t, a, tomb)
	mustGet(t, a, committed(1))
}

// TestWriteErrorStopsSnapshots: a write that fails (here the next segment cannot be
// created: a directory holds its name) is counted and reported, Covered fails so that no
// snapshot drops log entries whose records are not archived, and Through does not move
// past what is durable. After a restart without the obstacle, Raft's replay archives the
// Prune.
func TestWriteErrorStopsSnapshots(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 64, Now: func() time.Time { return time.UnixMilli(t0) }} // no record expires
	a := open(t, dir, o)
	a.Pruned(10, []*fsm.Txn{committed(1)})
	if err := a.Covered(10); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "0000000000000002.seg"), 0o750); err != nil {
		t.Fatal(err)
	}
	a.Pruned(11, []*fsm.Txn{committed(2)}) // the first segment is full: rotation fails
	if err := a.Covered(11); err == nil {
		t.Fatal("Covered succeeded although the Prune at 11 could not be written")
	}
	st := a.Stats()
	if st.WriteErrors != 1 || st.Error == "" || st.Through != 10 || st.Written != 1 {
		t.Fatalf("stats after a failed write: %+v, want an error counted and set, through 10, 1 written", st)
	}
	// The archive has stopped: with the obstacle gone, a later Prune is still not
	// written (it stays in the log), and the error stays.
	if err := os.Remove(filepath.Join(dir, "0000000000000002.seg")); err != nil {
		t.Fatal(err)
	}
	a.Pruned(12, []*fsm.Txn{committed(3)})
	if err := a.Sync(); err == nil {
		t.Fatal("Sync succeeded after the archive stopped")
	}
	if _, err := os.Stat(filepath.Join(dir, "0000000000000002.seg")); !os.IsNotExist(err) {
		t.Fatalf("a stopped archive went on writing: %v", err)
	}
	if st := a.Stats(); st.WriteErrors != 1 || st.Written != 1 || st.Through != 10 {
		t.Fatalf("stats of a stopped archive: %+v", st)
	}
	a.Close()
	a = open(t, dir, o)
	defer a.Close()
	a.Pruned(11, []*fsm.Txn{committed(2)}) // Raft's replay
	a.Pruned(12, []*fsm.Txn{committed(3)})
	if err := a.Covered(12); err != nil {
		t.Fatal(err)
	}
	mustGet(t, a, committed(1))
	mustGet(t, a, committed(2))
	mustGet(t, a, committed(3))
	if st := a.Stats(); st.WriteErrors != 0 || st.Error != "" || st.Written != 2 {
		t.Fatalf("after the restart: %+v", st)
	}
}

// TestScanResumesAtCursor: paging reads a segment from the cursor on, with the segment's
// endpoint table from memory; endpoints first written after the cursor (each Prune here
// brings a new participant) still decode, every record comes once and whole, and a cursor
// that is not a record's offset (edited by hand) falls back to reading the segment from
// its start rather than failing.
func TestScanResumesAtCursor(t *testing.T) {
	a := open(t, t.TempDir(), Options{SegmentBytes: 4096, Now: func() time.Time { return time.UnixMilli(t0) }})
	defer a.Close()
	var want []*fsm.Txn
	for i := 0; i < 60; i++ {
		x := committed(i)
		x.Participants = append([]fsm.Participant{{Prepare: fmt.Sprintf("http://10.1.0.%d:9000/prepare", i), Commit: fmt.Sprintf("http://10.1.0.%d:9000/commit", i), Rollback: "http://elsewhere/rollback"}}, x.Participants[1:]...)
		want = append(want, x)
		a.Pruned(uint64(i+1), []*fsm.Txn{x})
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if a.Stats().Segments < 2 {
		t.Fatalf("want several segments, have %+v", a.Stats())
	}
	var got []*fsm.Txn
	var cur Cursor
	for page := 0; page < 100; page++ {
		n, more := 0, false
		if err := a.Scan(0, 0, cur, func(x *fsm.Txn, at Cursor) bool {
			if n == 4 {
				more = true
				return false
			}
			got, cur, n = append(got, x), at, n+1
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paged scan: %d records, want %d, or different ones", len(got), len(want))
	}
	bogus := Cursor{Seg: cur.Seg, Off: cur.Off - 1}
	var rest []*fsm.Txn
	if err := a.Scan(0, 0, bogus, func(x *fsm.Txn, _ Cursor) bool { rest = append(rest, x); return true }); err != nil {
		t.Fatalf("a cursor off a record boundary: %v", err)
	}
	if len(rest) == 0 || !reflect.DeepEqual(rest[len(rest)-1], want[len(want)-1]) {
		t.Fatalf("a cursor off a record boundary: %d records", len(rest))
	}
}
