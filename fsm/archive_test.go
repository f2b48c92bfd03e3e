package fsm_test

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

// fakeArchiver records what the FSM hands over, and reads the FSM from inside Pruned to
// prove the lock is released first.
type fakeArchiver struct {
	f        *fsm.FSM
	mu       sync.Mutex
	pruned   map[uint64][]string
	covered  []uint64
	restored []uint64
}

func (a *fakeArchiver) Pruned(index uint64, txns []*fsm.Txn) {
	a.f.AppliedIndex() // deadlocks if called under the FSM's lock
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range txns {
		a.pruned[index] = append(a.pruned[index], t.ID)
	}
}
func (a *fakeArchiver) Covered(index uint64) error { a.covered = append(a.covered, index); return nil }
func (a *fakeArchiver) Restored(index uint64)      { a.restored = append(a.restored, index) }

func TestArchiverHook(t *testing.T) {
	f := fsm.New()
	arch := &fakeArchiver{f: f, pruned: map[uint64][]string{}}
	f.SetArchiver(arch)
	idx := uint64(0)
	apply := func(c fsm.Command) fsm.Result { idx++; return f.ApplyCommand(idx, c) }
	for i := 0; i < 3; i++ {
		id := benchID(i)
		apply(&fsm.Begin{ID: id, CreatedAt: t0, Deadline: t0 + 1000, Participants: parts(3)})
		apply(&fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: t0 + 1, Votes: votes(3, fsm.VoteYes), Reasons: make([]string, 3)})
		if i < 2 {
			apply(&fsm.Complete{At: t0 + 2, Items: []fsm.Completion{{ID: id, Attempts: []uint32{1, 1, 1}}}})
		}
	}
	apply(&fsm.Prune{FinishedBefore: t0 + 3})
	if got := arch.pruned[idx]; len(got) != 2 || len(arch.pruned) != 1 {
		t.Fatalf("Pruned got %v, want the 2 finished transactions at index %d", arch.pruned, idx)
	}
	apply(&fsm.Prune{FinishedBefore: t0 + 3}) // nothing left to prune: no call
	if len(arch.pruned) != 1 {
		t.Fatalf("a Prune that removed nothing was handed over: %v", arch.pruned)
	}
	snap, _ := f.Snapshot()
	sink := newSink()
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if len(arch.covered) != 1 || arch.covered[0] != idx {
		t.Fatalf("Persist called Covered %v, want [%d]", arch.covered, idx)
	}
	var w bytes.Buffer
	if err := f.WriteSnapshot(&w); err != nil || len(arch.covered) != 1 {
		t.Fatalf("WriteSnapshot (%v) must not wait for the archive: covered %v", err, arch.covered)
	}
	g := fsm.New()
	g.SetArchiver(arch)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if len(arch.restored) != 1 || arch.restored[0] != idx {
		t.Fatalf("Restore called Restored %v, want [%d]", arch.restored, idx)
	}
}
