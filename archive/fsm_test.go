package archive

import (
	"bytes"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// logOf returns the encoded log of n committed 3-participant transactions with a Prune
// (of everything finished so far) after every pruneEvery of them.
func logOf(n, pruneEvery int) [][]byte {
	var log [][]byte
	for i := 0; i < n; i++ {
		x := committed(i)
		log = append(log,
			fsm.Encode(&fsm.Begin{ID: x.ID, CreatedAt: x.CreatedAt, Deadline: x.Deadline, Participants: x.Participants}),
			fsm.Encode(&fsm.DecideCommit{ID: x.ID, AfterMs: 4}),
			fsm.Encode(&fsm.Complete{At: x.FinishedAt, Items: []fsm.Completion{{ID: x.ID, Attempts: []uint32{1, 1, 1}}}}))
		if (i+1)%pruneEvery == 0 {
			log = append(log, fsm.Encode(&fsm.Prune{FinishedBefore: x.FinishedAt + 1}))
		}
	}
	return log
}

func replay(t testing.TB, f *fsm.FSM, log [][]byte, from int) {
	for i := from; i < len(log); i++ {
		if r, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Data: log[i]}).(fsm.Result); ok && r.Err != nil {
			t.Fatalf("entry %d: %v", i+1, r.Err)
		}
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// TestReplayNeverWritesTwice: the log applied once, then replayed from the start into a
// fresh FSM (a restart without a snapshot) and from a snapshot (a restart with one), with
// the archive reopened each time: every transaction is in the archive exactly once, with
// its final record, and there is no gap.
func TestReplayNeverWritesTwice(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Now: func() time.Time { return time.UnixMilli(t0) }}
	log := logOf(300, 25)
	a := open(t, dir, opts)
	f := fsm.New()
	f.SetArchiver(a)
	replay(t, f, log[:len(log)/2], 0)
	snap, _ := f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil { // waits for the archive (Covered)
		t.Fatal(err)
	}
	replay(t, f, log, len(log)/2)
	a.Close()

	for _, how := range []string{"from the start", "from the snapshot"} {
		a = open(t, dir, opts)
		g := fsm.New()
		g.SetArchiver(a)
		from := 0
		if how == "from the snapshot" {
			if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
				t.Fatal(err)
			}
			from = len(log) / 2
		}
		replay(t, g, log, from)
		if err := a.Sync(); err != nil {
			t.Fatal(err)
		}
		var ids []string
		a.Scan(0, 0, Cursor{}, func(x *fsm.Txn, _ Cursor) bool { ids = append(ids, x.ID); return true })
		sort.Strings(ids)
		if len(ids) != 300 {
			t.Fatalf("%s: %d archived records, want 300", how, len(ids))
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] == ids[i-1] {
				t.Fatalf("%s: %s archived twice", how, ids[i])
			}
		}
		if st := a.Stats(); len(st.Gaps) != 0 {
			t.Fatalf("%s: gaps %v", how, st.Gaps)
		}
		got, ok, err := a.Get(committed(7).ID)
		if err != nil || !ok || got.Status != fsm.StatusCommitted || len(got.Participants) != 3 || !got.States[2].Acked {
			t.Fatalf("%s: Get = %+v, %v, %v", how, got, ok, err)
		}
		a.Close()
	}
}

// BenchmarkApply measures Apply with and without the archive in one run: each op is one
// committed 3-participant transaction's three entries, and every 1,000 ops a Prune removes
// the 1,000 finished ones (handing them to the archive when it is on). apply-p50/p99-ns is
// the latency of every entry's Apply; prune-p50/p99-ns that of the Prune entries alone,
// the only ones the archive touches (its writer runs meanwhile on its own goroutine).
//
//	go test -run '^$' -bench Apply -benchtime 200000x ./archive/
func BenchmarkApply(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "archive=off"
		if on {
			name = "archive=on"
		}
		b.Run(name, func(b *testing.B) {
			f := fsm.New()
			if on {
				a := open(b, b.TempDir(), Options{Now: func() time.Time { return time.UnixMilli(t0) }})
				defer a.Close()
				f.SetArchiver(a)
			}
			log := logOf(b.N, 1000)
			var prunes []time.Duration
			all := make([]time.Duration, 0, len(log))
			b.ReportAllocs()
			b.ResetTimer()
			for i, data := range log {
				start := time.Now()
				f.Apply(&raft.Log{Index: uint64(i + 1), Data: data})
				d := time.Since(start)
				all = append(all, d)
				if data[0] == byte(fsm.CmdPrune) {
					prunes = append(prunes, d)
				}
			}
			b.StopTimer()
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "apply-p50-ns")
			b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "apply-p99-ns")
			if len(prunes) > 0 {
				sort.Slice(prunes, func(i, j int) bool { return prunes[i] < prunes[j] })
				b.ReportMetric(float64(prunes[len(prunes)/2].Nanoseconds()), "prune-p50-ns")
				b.ReportMetric(float64(prunes[len(prunes)*99/100].Nanoseconds()), "prune-p99-ns")
			}
		})
	}
}
