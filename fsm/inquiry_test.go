package fsm_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/fsm"
)

// level3 returns a node whose cluster enabled feature level 3 at t0-10000 (index 1).
func level3(t *testing.T) *node {
	n := newNode(t)
	n.must(&fsm.SetFeatures{Level: 3, At: t0 - 10_000})
	return n
}

func presume(id string) *fsm.PresumeAbort {
	return &fsm.PresumeAbort{ID: id, At: t0 + 6000, Deadline: t0 + 5000}
}

func fastCommit(id string, n int) *fsm.FastDecide {
	return &fsm.FastDecide{Begin: fsm.Begin{ID: id, Key: "k-" + id, CreatedAt: t0, Deadline: t0 + 5000, Participants: parts(n)},
		Decision: fsm.DecisionCommit, AfterMs: 40}
}

func fastAbort(id string, n int) *fsm.FastDecide {
	d := decideAbort(id, n)
	return &fsm.FastDecide{Begin: fsm.Begin{ID: id, CreatedAt: t0, Deadline: t0 + 5000, Participants: parts(n)},
		Decision: fsm.DecisionAbort, AfterMs: 150, Votes: d.Votes, Reasons: d.Reasons}
}

// TestPresumedAbortTransitions is the transition table of the level-3 commands: each
// against "tx" in every status (plus the presumed-abort record itself), and every command
// against the presumed-abort record.
func TestPresumedAbortTransitions(t *testing.T) {
	tomb := []fsm.Command{presume("tx")}
	rows := append(append([]struct {
		name string
		cmds []fsm.Command
	}{}, setups...), struct {
		name string
		cmds []fsm.Command
	}{"presumed_abort", tomb})
	cmds := []struct {
		name string
		cmd  fsm.Command
	}{{"PresumeAbort", presume("tx")}, {"FastDecide(commit)", fastCommit("tx", nParts)}, {"FastDecide(abort)", fastAbort("tx", nParts)}}
	//                 PresumeAbort          FastDecide(commit)     FastDecide(abort)
	want := map[string][]outcome{
		"missing":       {{rbed, nil}, {cing, nil}, {rbing, nil}},
		"preparing":     {{prep, fsm.ErrExists}, {prep, fsm.ErrExists}, {prep, fsm.ErrExists}},
		"committing":    {{cing, fsm.ErrExists}, {cing, fsm.ErrExists}, {cing, fsm.ErrExists}},
		"rolling_back":  {{rbing, fsm.ErrExists}, {rbing, fsm.ErrExists}, {rbing, fsm.ErrExists}},
		"committed":     {{cted, fsm.ErrExists}, {cted, fsm.ErrExists}, {cted, fsm.ErrExists}},
		"rolled_back":   {{rbed, fsm.ErrExists}, {rbed, fsm.ErrExists}, {rbed, fsm.ErrExists}},
		"failed":        {{failed, fsm.ErrExists}, {failed, fsm.ErrExists}, {failed, fsm.ErrExists}},
		"failed(abort)": {{failed, fsm.ErrExists}, {failed, fsm.ErrExists}, {failed, fsm.ErrExists}},
		// A second inquiry finds the record; every decision after it is refused.
		"presumed_abort": {{rbed, fsm.ErrExists}, {rbed, fsm.ErrPresumedAbort}, {rbed, fsm.ErrPresumedAbort}},
	}
	// The earlier commands against the presumed-abort record: Begin and every decision
	// are refused, phase-two and operator commands do not apply, Prune removes it.
	wantOld := []outcome{{rbed, fsm.ErrPresumedAbort}, {rbed, fsm.ErrPresumedAbort}, {rbed, fsm.ErrPresumedAbort}, {rbed, fsm.ErrPresumedAbort},
		{rbed, nil}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {gone, nil}}
	check := func(t *testing.T, pre []fsm.Command, cmd fsm.Command, w outcome) {
		n := level3(t)
		for _, c := range pre {
			n.must(c)
		}
		before := n.get("tx")
		res := n.do(cmd)
		if !errors.Is(res.Err, w.err) || (w.err == nil) != (res.Err == nil) {
			t.Fatalf("err = %v, want %v", res.Err, w.err)
		}
		after := n.get("tx")
		var got fsm.Status
		if after != nil {
			got = after.Status
		}
		if got != w.st {
			t.Fatalf("status = %v, want %v", got, w.st)
		}
		if res.Err != nil && (after != before || res.Txn != before) {
			t.Fatalf("refused command changed the record or reported another: %+v, %+v", after, res.Txn)
		}
	}
	for _, r := range rows {
		for i, c := range cmds {
			t.Run(r.name+"/"+c.name, func(t *testing.T) { check(t, r.cmds, c.cmd, want[r.name][i]) })
		}
	}
	for i, c := range commands {
		t.Run("presumed_abort/"+c.name, func(t *testing.T) { check(t, tomb, c.cmd, wantOld[i]) })
	}
	t.Run("presumed_abort/DecideCommit", func(t *testing.T) {
		check(t, tomb, &fsm.DecideCommit{ID: "tx", AfterMs: 5}, outcome{rbed, fsm.ErrPresumedAbort})
	})
}

// TestFirstWriterWinsEveryOrder: whichever of the presumed abort and a decision for the
// same id comes first in the log wins, and two nodes fed the same log agree.
func TestFirstWriterWinsEveryOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  []fsm.Command
		want fsm.Status
	}{
		{"abort then fast commit", []fsm.Command{presume("tx"), fastCommit("tx", 3)}, rbed},
		{"fast commit then abort", []fsm.Command{fastCommit("tx", 3), presume("tx")}, cing},
		{"fast abort then abort", []fsm.Command{fastAbort("tx", 3), presume("tx")}, rbing},
		{"abort then begin and decide", []fsm.Command{presume("tx"), begin("tx", 3), decideCommit("tx", 3)}, rbed},
		{"abort, fast commit, complete", []fsm.Command{presume("tx"), fastCommit("tx", 3), complete(t0+9000, "tx")}, rbed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := level3(t), level3(t)
			for i, c := range tc.log {
				ra, rb := a.do(c), b.do(c)
				if (ra.Err == nil) != (rb.Err == nil) || (ra.Err != nil && ra.Err.Error() != rb.Err.Error()) || !reflect.DeepEqual(ra.Txn, rb.Txn) {
					t.Fatalf("entry %d: nodes disagree: %+v vs %+v", i, ra, rb)
				}
				if i > 0 && ra.Err == nil && c.Type() != fsm.CmdComplete {
					t.Fatalf("entry %d (%T) after the first writer was accepted", i, c)
				}
			}
			if got := a.get("tx").Status; got != tc.want {
				t.Fatalf("status %v, want %v", got, tc.want)
			}
			if !bytes.Equal(snapBytes(t, a.f), snapBytes(t, b.f)) {
				t.Fatal("the two nodes' states differ")
			}
		})
	}
}

func TestFastDecideRecord(t *testing.T) {
	n := level3(t)
	ps := parts(3)
	n.must(&fsm.Define{Participants: ps[:2]})
	fd := fastCommit("a", 3)
	fd.Refs = []int32{0, 1, -1}
	fd.Participants = []fsm.Participant{{}, {}, ps[2]}
	tx := n.must(fd)
	if tx.Status != fsm.StatusCommitting || tx.Decision != fsm.DecisionCommit || tx.DecidedAt != t0+40 || tx.CreatedAt != t0 || tx.Deadline != t0+5000 ||
		!reflect.DeepEqual(tx.Participants, ps) || tx.Payloads != nil || tx.Index != n.idx {
		t.Fatalf("record %+v", tx)
	}
	for i, st := range tx.States {
		if st.Vote != fsm.VoteYes || st.Acked {
			t.Fatalf("state %d: %+v", i, st)
		}
	}
	if k, ok := n.f.ByKey("k-a"); !ok || k != tx {
		t.Fatalf("key not bound: %v %v", k, ok)
	}
	if a := n.f.Active(); len(a) != 1 || a[0] != tx {
		t.Fatalf("Active() = %v: a new leader must resume it", a)
	}
	// A Begin (default mode) before the inquiry is the first writer: the presumed abort is
	// refused and the transaction goes on.
	n.must(begin("d", 3))
	if res := n.do(presume("d")); !errors.Is(res.Err, fsm.ErrExists) || res.Txn.Status != fsm.StatusPreparing {
		t.Fatalf("presumed abort after Begin: %+v", res)
	}
	if tx := n.must(decideCommit("d", 3)); tx.Status != fsm.StatusCommitting {
		t.Fatalf("decision after a refused presumed abort: %+v", tx)
	}
	// The leader proposing the same entry again changes nothing.
	if res := n.do(fd); res.Err != nil || res.Txn != tx {
		t.Fatalf("repeated entry: %+v", res)
	}
	// Another transaction with the same key is refused and told which one holds it.
	other := fastCommit("b", 3)
	other.Key = "k-a"
	if res := n.do(other); !errors.Is(res.Err, fsm.ErrKeyExists) || res.Txn != tx || n.get("b") != nil {
		t.Fatalf("key bound elsewhere: %+v", res)
	}
	// The abort keeps votes and reasons; phase two then ends it like any other.
	ab := n.must(fastAbort("c", 3))
	if ab.Status != fsm.StatusRollingBack || ab.States[1].Vote != fsm.VoteNo || ab.States[1].Reason != "no rooms" || ab.States[2].Vote != fsm.VoteNone {
		t.Fatalf("abort record %+v", ab)
	}
	if got := n.must(complete(t0+9000, "a", "c")); got.Status != fsm.StatusRolledBack || n.get("a").Status != fsm.StatusCommitted {
		t.Fatalf("after Complete: %v %v", n.get("a").Status, got.Status)
	}
	for name, bad := range map[string]*fsm.FastDecide{
		"no participants": {Begin: fsm.Begin{ID: "x", CreatedAt: t0, Deadline: t0 + 1}, Decision: fsm.DecisionCommit},
		"decision none":   {Begin: fsm.Begin{ID: "x", CreatedAt: t0, Deadline: t0 + 1, Participants: parts(1)}},
		"vote count":      {Begin: fsm.Begin{ID: "x", CreatedAt: t0, Deadline: t0 + 1, Participants: parts(2)}, Decision: fsm.DecisionAbort, Votes: []fsm.Vote{fsm.VoteNo}},
		"undefined ref":   {Begin: fsm.Begin{ID: "x", CreatedAt: t0, Deadline: t0 + 1, Participants: parts(1), Refs: []int32{99}}, Decision: fsm.DecisionCommit},
	} {
		if res := n.do(bad); !errors.Is(res.Err, fsm.ErrInvalid) || n.get("x") != nil {
			t.Errorf("%s: %+v, want ErrInvalid", name, res)
		}
	}
}

// TestLevel3Gate: before the cluster enables level 3 both commands are refused on every
// node (a correct leader never proposes them; Node.Apply refuses first).
func TestLevel3Gate(t *testing.T) {
	n := newNode(t)
	n.must(&fsm.SetFeatures{Level: 2, At: t0})
	for _, c := range []fsm.Command{presume("tx"), fastCommit("tx", 2)} {
		if fsm.RequiredLevel(c.Type()) != 3 {
			t.Fatalf("%T: level %d", c, fsm.RequiredLevel(c.Type()))
		}
		if res := n.do(c); !errors.Is(res.Err, fsm.ErrInvalid) || n.get("tx") != nil {
			t.Fatalf("%T at level 2: %+v", c, res)
		}
	}
}

// TestHorizon: from level 3 on no record whose deadline is at or after the horizon is ever
// pruned, and neither a presumed abort nor a fast decision is accepted before it.
func TestHorizon(t *testing.T) {
	n := newNode(t)
	n.must(&fsm.Prune{FinishedBefore: t0 - 5000})
	if n.f.Horizon() != 0 {
		t.Fatalf("a level-0 Prune moved the horizon to %d", n.f.Horizon())
	}
	n.must(&fsm.SetFeatures{Level: 3, At: t0 - 10_000})
	if n.f.Horizon() != t0-10_000 {
		t.Fatalf("horizon %d after enabling level 3 at %d", n.f.Horizon(), t0-10_000)
	}
	// Decided early: finished at t0+200, well before its deadline t0+5000.
	n.must(begin("early", 2))
	n.must(decideAbort("early", 2))
	n.must(complete(t0+200, "early"))
	n.must(&fsm.Prune{FinishedBefore: t0 + 1000})
	if n.get("early") == nil {
		t.Fatal("pruned a record whose deadline is after the cut-off")
	}
	if n.f.Horizon() != t0+1000 {
		t.Fatalf("horizon %d", n.f.Horizon())
	}
	n.must(&fsm.Prune{FinishedBefore: t0 + 500}) // never goes back
	if n.f.Horizon() != t0+1000 {
		t.Fatalf("horizon went back to %d", n.f.Horizon())
	}
	n.must(&fsm.Prune{FinishedBefore: t0 + 5001})
	if n.get("early") != nil {
		t.Fatal("record kept past its deadline and finish")
	}
	old := &fsm.PresumeAbort{ID: "old", At: t0 + 6000, Deadline: t0 + 5000}
	if res := n.do(old); !errors.Is(res.Err, fsm.ErrBeyondHorizon) || n.get("old") != nil {
		t.Fatalf("presumed abort before the horizon: %+v", res)
	}
	if res := n.do(fastCommit("old", 2)); !errors.Is(res.Err, fsm.ErrBeyondHorizon) || n.get("old") != nil {
		t.Fatalf("fast decision before the horizon: %+v", res)
	}
	// A version-7 id minted before the horizon may belong to a record pruned whatever the
	// deadline a participant names; an id minted after it may be presumed aborted.
	before, after := v7At(t, t0+5000), v7At(t, t0+5002)
	if res := n.do(&fsm.PresumeAbort{ID: before, At: t0 + 9000, Deadline: t0 + 8000}); !errors.Is(res.Err, fsm.ErrBeyondHorizon) || n.get(before) != nil {
		t.Fatalf("presumed abort of an id minted before the horizon: %+v", res)
	}
	if res := n.do(&fsm.PresumeAbort{ID: after, At: t0 + 9000, Deadline: t0 + 8000}); res.Err != nil || n.get(after) == nil {
		t.Fatalf("presumed abort of an id minted after the horizon: %+v", res)
	}
	// The horizon survives a snapshot.
	if r := restore(t, snapBytes(t, n.f)); r.Horizon() != t0+5001 {
		t.Fatalf("restored horizon %d", r.Horizon())
	}
}

// TestPresumedAbortPrunedAndArchived: a presumed-abort record leaves the state through
// the ordinary retention and is handed to the archiver like any finished record.
func TestPresumedAbortPrunedAndArchived(t *testing.T) {
	f := fsm.New()
	arch := &fakeArchiver{f: f, pruned: map[uint64][]string{}}
	f.SetArchiver(arch)
	f.ApplyCommand(1, &fsm.SetFeatures{Level: 3, At: t0})
	res := f.ApplyCommand(2, presume("gone"))
	if res.Err != nil || !res.Txn.PresumedAborted() || res.Txn.Note != fsm.PresumedAbortNote || res.Txn.FinishedAt != t0+6000 {
		t.Fatalf("presumed abort: %+v", res)
	}
	if cut := f.FinishedCutoff(0); cut != t0+6001 {
		t.Fatalf("FinishedCutoff counts it: %d", cut)
	}
	f.ApplyCommand(3, &fsm.Prune{FinishedBefore: t0 + 6001})
	if _, ok := f.Get("gone"); ok || len(arch.pruned[3]) != 1 || arch.pruned[3][0] != "gone" {
		t.Fatalf("pruned %v", arch.pruned)
	}
}

// TestFastEntrySize: a 3-participant fast commit whose participants are in the endpoint
// table, with no key, fits issue 17's 150 bytes of log per transaction with room for the
// completion's share.
func TestFastEntrySize(t *testing.T) {
	fd := &fsm.FastDecide{Begin: fsm.Begin{ID: goldenID, CreatedAt: t0, Deadline: t0 + 5000,
		Participants: make([]fsm.Participant, 3), Refs: []int32{0, 1, 2}}, Decision: fsm.DecisionCommit, AfterMs: 3}
	if b := fsm.Encode(fd); len(b) > 40 {
		t.Fatalf("fast commit entry is %d bytes: %x", len(b), b)
	}
}

// v7At returns a version-7 UUID minted at unix ms ms.
func v7At(t *testing.T, ms int64) string {
	t.Helper()
	u, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	return u.String()
}
