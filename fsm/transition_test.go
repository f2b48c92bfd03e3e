package fsm_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

const nParts = 3

// setups bring transaction "tx" into each status through the log. "failed(abort)" is a
// second failed row because Retry, Resolve and Decide depend on the logged decision.
var setups = []struct {
	name string
	cmds []fsm.Command
}{
	{"missing", nil},
	{"preparing", []fsm.Command{begin("tx", nParts)}},
	{"committing", []fsm.Command{begin("tx", nParts), decideCommit("tx", nParts)}},
	{"rolling_back", []fsm.Command{begin("tx", nParts), decideAbort("tx", nParts)}},
	{"committed", []fsm.Command{begin("tx", nParts), decideCommit("tx", nParts), complete(t0+500, "tx")}},
	{"rolled_back", []fsm.Command{begin("tx", nParts), decideAbort("tx", nParts), complete(t0+500, "tx")}},
	{"failed", []fsm.Command{begin("tx", nParts), decideCommit("tx", nParts), fail("tx", nParts)}},
	{"failed(abort)", []fsm.Command{begin("tx", nParts), decideAbort("tx", nParts), fail("tx", nParts)}},
}

var commands = []struct {
	name string
	cmd  fsm.Command
}{
	{"Begin", begin("tx", nParts)},
	{"Decide(commit)", decideCommit("tx", nParts)},
	{"Decide(abort)", decideAbort("tx", nParts)},
	{"Decide(commit,NACK)", &fsm.Decide{ID: "tx", Decision: fsm.DecisionCommit, At: t0, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo, fsm.VoteYes}}},
	{"Complete", complete(t0+600, "tx")},
	{"Fail", fail("tx", nParts)},
	{"Progress", &fsm.Progress{ID: "tx", Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 2, Error: "timeout"}, {Attempts: 2, Error: "HTTP 503"}}}},
	{"Retry", &fsm.Retry{ID: "tx", At: t0 + 2000, Note: "retry after fix"}},
	{"Resolve", &fsm.Resolve{ID: "tx", At: t0 + 2000, Note: "settled by hand"}},
	{"Prune", &fsm.Prune{FinishedBefore: t0 + 1_000_000, KeysBefore: t0 + 1_000_000}},
}

// outcome is the status of "tx" after the command (0: no record) and the error.
type outcome struct {
	st  fsm.Status
	err error
}

const gone fsm.Status = 0

var (
	prep   = fsm.StatusPreparing
	cing   = fsm.StatusCommitting
	rbing  = fsm.StatusRollingBack
	cted   = fsm.StatusCommitted
	rbed   = fsm.StatusRolledBack
	failed = fsm.StatusFailed
)

// transitions[setup][command]. Columns follow the commands slice.
var transitions = map[string][]outcome{
	//                 Begin               Decide(commit)         Decide(abort)             Decide(commit,NACK)      Complete                   Fail                       Progress                   Retry                      Resolve                    Prune
	"missing":       {{prep, nil}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, fsm.ErrNotFound}, {gone, nil}},
	"preparing":     {{prep, fsm.ErrExists}, {cing, nil}, {rbing, nil}, {prep, fsm.ErrInvalid}, {prep, fsm.ErrBadTransition}, {prep, fsm.ErrBadTransition}, {prep, fsm.ErrBadTransition}, {prep, fsm.ErrBadTransition}, {prep, fsm.ErrBadTransition}, {prep, nil}},
	"committing":    {{cing, fsm.ErrExists}, {cing, nil}, {cing, fsm.ErrDecided}, {cing, nil}, {cted, nil}, {failed, nil}, {cing, nil}, {cing, fsm.ErrBadTransition}, {cing, fsm.ErrBadTransition}, {cing, nil}},
	"rolling_back":  {{rbing, fsm.ErrExists}, {rbing, fsm.ErrDecided}, {rbing, nil}, {rbing, fsm.ErrDecided}, {rbed, nil}, {failed, nil}, {rbing, nil}, {rbing, fsm.ErrBadTransition}, {rbing, fsm.ErrBadTransition}, {rbing, nil}},
	"committed":     {{cted, fsm.ErrExists}, {cted, nil}, {cted, fsm.ErrDecided}, {cted, nil}, {cted, nil}, {cted, fsm.ErrBadTransition}, {cted, fsm.ErrBadTransition}, {cted, fsm.ErrBadTransition}, {cted, fsm.ErrBadTransition}, {gone, nil}},
	"rolled_back":   {{rbed, fsm.ErrExists}, {rbed, fsm.ErrDecided}, {rbed, nil}, {rbed, fsm.ErrDecided}, {rbed, nil}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {rbed, fsm.ErrBadTransition}, {gone, nil}},
	"failed":        {{failed, fsm.ErrExists}, {failed, nil}, {failed, fsm.ErrDecided}, {failed, nil}, {failed, fsm.ErrBadTransition}, {failed, fsm.ErrBadTransition}, {failed, fsm.ErrBadTransition}, {cing, nil}, {cted, nil}, {failed, nil}},
	"failed(abort)": {{failed, fsm.ErrExists}, {failed, fsm.ErrDecided}, {failed, nil}, {failed, fsm.ErrDecided}, {failed, fsm.ErrBadTransition}, {failed, fsm.ErrBadTransition}, {failed, fsm.ErrBadTransition}, {rbing, nil}, {rbed, nil}, {failed, nil}},
}

func TestTransitionTable(t *testing.T) {
	if len(transitions) != len(setups) {
		t.Fatalf("table has %d rows for %d setups", len(transitions), len(setups))
	}
	for _, s := range setups {
		row, ok := transitions[s.name]
		if !ok || len(row) != len(commands) {
			t.Fatalf("row %q: %d outcomes for %d commands", s.name, len(row), len(commands))
		}
		for i, c := range commands {
			want := row[i]
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				n := newNode(t)
				for _, sc := range s.cmds {
					n.must(sc)
				}
				before := n.get("tx")
				beforeCopy := copyTxn(before)
				res := n.do(c.cmd)

				if !errors.Is(res.Err, want.err) || (want.err == nil) != (res.Err == nil) {
					t.Fatalf("err = %v, want %v", res.Err, want.err)
				}
				after := n.get("tx")
				var got fsm.Status
				if after != nil {
					got = after.Status
				}
				if got != want.st {
					t.Fatalf("status = %v, want %v", got, want.st)
				}
				// The record before the command is never touched (records are replaced).
				if !reflect.DeepEqual(before, beforeCopy) {
					t.Fatalf("record mutated in place:\nbefore %+v\nnow    %+v", beforeCopy, before)
				}
				if res.Err != nil {
					// A refused command changes nothing and reports the record that blocked it.
					if after != before {
						t.Fatalf("refused command replaced the record: %+v", after)
					}
					if res.Txn != before {
						t.Fatalf("Result.Txn = %p, want the current record %p", res.Txn, before)
					}
				} else if c.name != "Prune" && res.Txn != after {
					t.Fatalf("Result.Txn = %p, want the current record %p", res.Txn, after)
				}
				if after != nil && after != before && after.Index != n.idx {
					t.Fatalf("new record Index = %d, want entry index %d", after.Index, n.idx)
				}
				// Active holds exactly the non-terminal transactions.
				inActive := slices.ContainsFunc(n.f.Active(), func(x *fsm.Txn) bool { return x.ID == "tx" })
				if wantActive := after != nil && !after.Status.Terminal(); inActive != wantActive {
					t.Fatalf("in Active() = %v, want %v (status %v)", inActive, wantActive, got)
				}
				if cnt := n.f.Counts(); want.st != gone && cnt[want.st] != 1 {
					t.Fatalf("Counts() = %v", cnt)
				}
			})
		}
	}
}

// TestTransitionFields checks what each successful transition records beyond the status.
func TestTransitionFields(t *testing.T) {
	n := newNode(t)
	tx := n.must(begin("a", 3))
	if tx.Decision != fsm.DecisionNone || len(tx.States) != 3 || tx.CreatedAt != t0 || tx.Deadline != t0+5000 || tx.Index != 1 {
		t.Fatalf("after Begin: %+v", tx)
	}
	tx = n.must(decideAbort("a", 3))
	if tx.Decision != fsm.DecisionAbort || tx.DecidedAt != t0+100 || tx.FinishedAt != 0 ||
		tx.States[1].Vote != fsm.VoteNo || tx.States[1].Reason != "no rooms" || tx.States[2].Vote != fsm.VoteNone {
		t.Fatalf("after Decide: %+v", tx)
	}
	tx = n.must(&fsm.Progress{ID: "a", Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 2, Error: "HTTP 500"}, {Attempts: 1, Error: "reset"}}})
	if !tx.States[0].Acked || tx.States[1].LastError != "HTTP 500" || tx.States[1].Attempts != 2 {
		t.Fatalf("after Progress: %+v", tx.States)
	}
	// A later report without the ack does not take the ack back.
	tx = n.must(&fsm.Progress{ID: "a", Reports: []fsm.Report{{Attempts: 9, Error: "late"}, {Attempts: 3, Error: "HTTP 502"}, {Attempts: 2, Error: "reset"}}})
	if !tx.States[0].Acked || tx.States[0].LastError != "" || tx.States[1].Attempts != 3 {
		t.Fatalf("after second Progress: %+v", tx.States)
	}
	tx = n.must(&fsm.Fail{ID: "a", At: t0 + 900, Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 5, Error: "HTTP 500"}, {Acked: true, Attempts: 4}}})
	if tx.Status != fsm.StatusFailed || tx.FinishedAt != t0+900 || tx.Decision != fsm.DecisionAbort {
		t.Fatalf("after Fail: %+v", tx)
	}
	if got := tx.Errors(); len(got) != 2 || got[0] != "http://127.0.0.1:9002/prepare: NACK: no rooms" || got[1] != "http://127.0.0.1:9002/rollback: HTTP 500 (attempt 5)" {
		t.Fatalf("Errors() = %q", got)
	}
	tx = n.must(&fsm.Retry{ID: "a", At: t0 + 1000, Note: "again"})
	if tx.Status != fsm.StatusRollingBack || tx.FinishedAt != 0 || tx.Note != "again" ||
		tx.States[1].Attempts != 0 || tx.States[0].Attempts != 1 {
		t.Fatalf("after Retry: %+v", tx)
	}
	n.must(fail("a", 3))
	tx = n.must(&fsm.Resolve{ID: "a", At: t0 + 3000, Note: "refunded by hand"})
	if tx.Status != fsm.StatusRolledBack || tx.FinishedAt != t0+3000 || tx.Note != "refunded by hand" {
		t.Fatalf("after Resolve: %+v", tx)
	}
}

func TestFirstDecisionWins(t *testing.T) {
	n := newNode(t)
	n.must(begin("tx", 3))
	won := n.must(decideCommit("tx", 3))

	res := n.do(decideAbort("tx", 3))
	if !errors.Is(res.Err, fsm.ErrDecided) {
		t.Fatalf("conflicting Decide: err = %v, want ErrDecided", res.Err)
	}
	if res.Txn != won || res.Txn.Status != fsm.StatusCommitting || res.Txn.Decision != fsm.DecisionCommit {
		t.Fatalf("conflicting Decide: Result.Txn = %+v, want the committing winner", res.Txn)
	}
	if got := n.get("tx"); got != won {
		t.Fatalf("record replaced by a refused Decide: %+v", got)
	}

	// The identical decision again (a leader retrying its proposal) is a no-op.
	res = n.do(decideCommit("tx", 3))
	if res.Err != nil || res.Txn != won || n.get("tx") != won {
		t.Fatalf("repeated Decide: %+v, want no-op returning the winner", res)
	}

	// The same holds once phase two finished.
	n.must(complete(t0+500, "tx"))
	if res := n.do(decideAbort("tx", 3)); !errors.Is(res.Err, fsm.ErrDecided) || res.Txn.Status != fsm.StatusCommitted {
		t.Fatalf("abort after commit finished: %+v", res)
	}
}

func TestDecideInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *fsm.Decide
	}{
		{"commit with NACK", &fsm.Decide{ID: "tx", Decision: fsm.DecisionCommit, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo, fsm.VoteYes}}},
		{"commit with no answer", &fsm.Decide{ID: "tx", Decision: fsm.DecisionCommit, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteYes, fsm.VoteNone}}},
		{"commit with error vote", &fsm.Decide{ID: "tx", Decision: fsm.DecisionCommit, Votes: []fsm.Vote{fsm.VoteError, fsm.VoteYes, fsm.VoteYes}}},
		{"too few votes", &fsm.Decide{ID: "tx", Decision: fsm.DecisionCommit, Votes: votes(2, fsm.VoteYes)}},
		{"too many votes", &fsm.Decide{ID: "tx", Decision: fsm.DecisionAbort, Votes: votes(4, fsm.VoteNo)}},
		{"no votes", &fsm.Decide{ID: "tx", Decision: fsm.DecisionAbort}},
		{"decision none", &fsm.Decide{ID: "tx", Decision: fsm.DecisionNone, Votes: votes(3, fsm.VoteYes)}},
		{"decision 7", &fsm.Decide{ID: "tx", Decision: 7, Votes: votes(3, fsm.VoteYes)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			tx := n.must(begin("tx", 3))
			res := n.do(tc.d)
			if !errors.Is(res.Err, fsm.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", res.Err)
			}
			if n.get("tx") != tx || tx.Status != fsm.StatusPreparing || tx.Decision != fsm.DecisionNone {
				t.Fatalf("invalid Decide changed the record: %+v", n.get("tx"))
			}
			// An invalid Decide decides nothing: a valid one still goes through.
			if got := n.must(decideAbort("tx", 3)); got.Status != fsm.StatusRollingBack {
				t.Fatalf("Decide after invalid one: %+v", got)
			}
		})
	}
}

// assertNoEffect applies setup to two FSMs, then cmd to one and a no-op entry (Prune of
// nothing) at the same index to the other: the states must be byte-identical.
func assertNoEffect(t *testing.T, setup []fsm.Command, cmd fsm.Command) fsm.Result {
	t.Helper()
	a, b := newNode(t), newNode(t)
	for _, c := range setup {
		a.must(c)
		b.must(c)
	}
	res := a.do(cmd)
	b.must(&fsm.Prune{})
	if ab, bb := snapBytes(t, a.f), snapBytes(t, b.f); string(ab) != string(bb) {
		t.Fatalf("%T changed the state:\n%x\n%x", cmd, ab, bb)
	}
	return res
}

func TestRepeatedCommands(t *testing.T) {
	first := &fsm.Begin{ID: "first", Key: "k1", CreatedAt: t0, Deadline: t0 + 5000, Participants: parts(2)}
	t.Run("Begin again", func(t *testing.T) {
		res := assertNoEffect(t, []fsm.Command{first}, first)
		if !errors.Is(res.Err, fsm.ErrExists) || res.Txn == nil || res.Txn.ID != "first" {
			t.Fatalf("repeated Begin: %+v", res)
		}
	})
	t.Run("Begin same id other key", func(t *testing.T) {
		other := &fsm.Begin{ID: "first", Key: "k2", CreatedAt: t0 + 1, Deadline: t0 + 5000, Participants: parts(3)}
		res := assertNoEffect(t, []fsm.Command{first}, other)
		if !errors.Is(res.Err, fsm.ErrExists) || res.Txn.Key != "k1" || len(res.Txn.Participants) != 2 {
			t.Fatalf("Begin of existing id: %+v", res)
		}
	})
	t.Run("Begin used key", func(t *testing.T) {
		second := &fsm.Begin{ID: "second", Key: "k1", CreatedAt: t0 + 10, Deadline: t0 + 5000, Participants: parts(1)}
		res := assertNoEffect(t, []fsm.Command{first, decideCommit("first", 2)}, second)
		if !errors.Is(res.Err, fsm.ErrKeyExists) || res.Txn == nil || res.Txn.ID != "first" || res.Txn.Status != fsm.StatusCommitting {
			t.Fatalf("Begin with used key: %+v, want ErrKeyExists and the first txn", res)
		}
		n := newNode(t)
		n.must(first)
		n.do(second)
		if _, ok := n.f.Get("second"); ok {
			t.Fatal("second txn created under a used key")
		}
		if got, ok := n.f.ByKey("k1"); !ok || got.ID != "first" {
			t.Fatalf("ByKey(k1) = %+v, %v", got, ok)
		}
	})
	t.Run("Begin invalid", func(t *testing.T) {
		for _, b := range []*fsm.Begin{
			{ID: "", Key: "k", Participants: parts(1)},
			{ID: "x", Key: "k"},
		} {
			res := assertNoEffect(t, []fsm.Command{first}, b)
			if !errors.Is(res.Err, fsm.ErrInvalid) {
				t.Fatalf("Begin %+v: err = %v, want ErrInvalid", b, res.Err)
			}
		}
	})
	t.Run("Complete again", func(t *testing.T) {
		setup := []fsm.Command{first, decideCommit("first", 2), complete(t0+500, "first")}
		res := assertNoEffect(t, setup, complete(t0+999, "first"))
		if res.Err != nil || res.Txn == nil || res.Txn.Status != fsm.StatusCommitted || res.Txn.FinishedAt != t0+500 {
			t.Fatalf("repeated Complete: %+v", res)
		}
	})
	t.Run("Decide again", func(t *testing.T) {
		setup := []fsm.Command{first, decideCommit("first", 2)}
		if res := assertNoEffect(t, setup, decideCommit("first", 2)); res.Err != nil {
			t.Fatalf("repeated Decide: %v", res.Err)
		}
	})
	t.Run("Fail again", func(t *testing.T) {
		setup := []fsm.Command{first, decideCommit("first", 2), fail("first", 2)}
		if res := assertNoEffect(t, setup, fail("first", 2)); !errors.Is(res.Err, fsm.ErrBadTransition) {
			t.Fatalf("repeated Fail: %v", res.Err)
		}
	})
}

// TestRecordsNotMutated keeps every version of a record and checks, after the whole
// lifecycle, that none of them changed: readers holding a *Txn need no lock.
func TestRecordsNotMutated(t *testing.T) {
	n := newNode(t)
	b := begin("tx", 3)
	var versions, copies []*fsm.Txn
	keep := func(tx *fsm.Txn) {
		versions = append(versions, tx)
		copies = append(copies, copyTxn(tx))
	}
	keep(n.must(b))
	// The command's slices are not shared with the record.
	b.Participants[0].Prepare = "http://mutated/prepare"
	d := decideAbort("tx", 3)
	keep(n.must(d))
	d.Votes[0], d.Reasons[1] = fsm.VoteError, "mutated"
	keep(n.must(&fsm.Progress{ID: "tx", Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 2, Error: "x"}, {}}}))
	keep(n.must(fail("tx", 3)))
	keep(n.must(&fsm.Retry{ID: "tx", At: t0 + 5, Note: "n"}))
	keep(n.must(fail("tx", 3)))
	keep(n.must(&fsm.Resolve{ID: "tx", At: t0 + 6, Note: "m"}))
	n.must(&fsm.Prune{FinishedBefore: t0 + 7})
	n2 := newNode(t)
	n2.must(begin("tx", 3))
	keep(n2.must(decideCommit("tx", 3)))
	keep(n2.must(complete(t0+9, "tx")))
	snap := snapBytes(t, n2.f)
	if err := n2.f.Restore(nopCloser(snap)); err != nil {
		t.Fatal(err)
	}

	for i := range versions {
		if !reflect.DeepEqual(versions[i], copies[i]) {
			t.Errorf("version %d changed after later commands:\nwas %+v\nnow %+v", i, copies[i], versions[i])
		}
		for j := range i {
			if versions[i] == versions[j] {
				t.Errorf("versions %d and %d are the same pointer", j, i)
			}
		}
	}
	// ApplyCommand hands the command itself to the FSM: its slices must not be kept.
	direct := fsm.New()
	db := begin("d", 2)
	rec := direct.ApplyCommand(1, db).Txn
	db.Participants[0].Prepare = "http://mutated/prepare"
	dd := decideAbort("d", 2)
	direct.ApplyCommand(2, dd)
	dd.Votes[1], dd.Reasons[1] = fsm.VoteYes, "mutated"
	if rec.Participants[0].Prepare != "http://127.0.0.1:9001/prepare" {
		t.Errorf("ApplyCommand kept Begin's participant slice")
	}
	if got, _ := direct.Get("d"); got.States[1].Vote != fsm.VoteNo || got.States[1].Reason != "no rooms" {
		t.Errorf("ApplyCommand kept Decide's slices: %+v", got.States)
	}
	if versions[0].Participants[0].Prepare != "http://127.0.0.1:9001/prepare" {
		t.Errorf("Begin's participant slice is shared with the record")
	}
	if versions[1].States[0].Vote != fsm.VoteYes || versions[1].States[1].Reason != "no rooms" {
		t.Errorf("Decide's vote slices are shared with the record: %+v", versions[1].States)
	}
}

func TestCompleteBatch(t *testing.T) {
	n := newNode(t)
	for _, id := range []string{"c1", "c2", "r1", "p1", "f1", "d1"} {
		n.must(begin(id, 3))
	}
	n.must(decideCommit("c1", 3))
	n.must(decideCommit("c2", 3))
	n.must(decideAbort("r1", 3))
	n.must(decideCommit("f1", 3))
	n.must(fail("f1", 3))
	n.must(decideCommit("d1", 3))
	n.must(complete(t0+50, "d1"))
	before := map[string]*fsm.Txn{}
	for _, id := range []string{"p1", "f1", "d1"} {
		before[id] = n.get(id)
	}

	c := &fsm.Complete{At: t0 + 777, Items: []fsm.Completion{
		{ID: "p1", Attempts: []uint32{1, 1, 1}},
		{ID: "c1", Attempts: []uint32{1, 2, 3}},
		{ID: "nope", Attempts: []uint32{1}},
		{ID: "r1", Attempts: []uint32{4}}, // fewer attempts than participants
		{ID: "f1", Attempts: []uint32{1, 1, 1}},
		{ID: "d1", Attempts: []uint32{1, 1, 1}},
		{ID: "c2", Attempts: []uint32{2, 2, 2}},
	}}
	res := n.do(c)
	if res.Err != nil || res.Txn == nil || res.Txn.ID != "c2" || res.Txn.Status != fsm.StatusCommitted {
		t.Fatalf("Result = %+v, want c2 committed (the last item)", res)
	}
	c1 := n.get("c1")
	if c1.Status != fsm.StatusCommitted || c1.FinishedAt != t0+777 || c1.Index != n.idx {
		t.Fatalf("c1 = %+v", c1)
	}
	for i, st := range c1.States {
		if !st.Acked || st.Attempts != uint32(i+1) || st.LastError != "" {
			t.Fatalf("c1 state %d = %+v", i, st)
		}
	}
	r1 := n.get("r1")
	if r1.Status != fsm.StatusRolledBack || r1.States[0].Attempts != 4 || !r1.States[2].Acked {
		t.Fatalf("r1 = %+v", r1)
	}
	if n.get("c2").Status != fsm.StatusCommitted {
		t.Fatalf("c2 = %+v", n.get("c2"))
	}
	for id, old := range before {
		if n.get(id) != old {
			t.Errorf("%s in status %v was not skipped", id, old.Status)
		}
	}
	if _, ok := n.f.Get("nope"); ok {
		t.Error("Complete created a record")
	}
	if act := n.f.Active(); len(act) != 1 || act[0].ID != "p1" {
		t.Errorf("Active() = %v, want only p1", ids(act))
	}
	// An empty batch is harmless.
	if res := assertNoEffect(t, nil, &fsm.Complete{At: t0}); res.Err != nil || res.Txn != nil {
		t.Fatalf("empty Complete: %+v", res)
	}
}

func ids(ts []*fsm.Txn) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

func TestPrune(t *testing.T) {
	n := newNode(t)
	mk := func(id, key string, created int64) {
		n.must(&fsm.Begin{ID: id, Key: key, CreatedAt: created, Deadline: created + 10, Participants: parts(2)})
	}
	// Finished: committed at +10, rolled back at +15, committed at +20 (== cutoff+4), failed at +5.
	mk("c10", "kc10", t0)
	n.must(decideCommit("c10", 2))
	n.must(complete(t0+10, "c10"))
	mk("r15", "", t0)
	n.must(decideAbort("r15", 2))
	n.must(complete(t0+15, "r15"))
	mk("c16", "kc16", t0+1)
	n.must(decideCommit("c16", 2))
	n.must(complete(t0+16, "c16")) // exactly at the cutoff: kept
	mk("f5", "kf5", t0)
	n.must(decideCommit("f5", 2))
	n.must(&fsm.Fail{ID: "f5", At: t0 + 5})
	mk("res5", "", t0) // failed, then resolved late
	n.must(decideAbort("res5", 2))
	n.must(&fsm.Fail{ID: "res5", At: t0 + 1})
	n.must(&fsm.Resolve{ID: "res5", At: t0 + 100})
	// Active ones, created long ago.
	mk("p", "kp", t0-1_000_000)
	mk("cing", "", t0-1_000_000)
	n.must(decideCommit("cing", 2))
	mk("rbing", "", t0-1_000_000)
	n.must(decideAbort("rbing", 2))

	// Zero cutoffs keep everything.
	n.must(&fsm.Prune{})
	if c := n.f.Counts(); c[fsm.StatusCommitted] != 2 || c[fsm.StatusRolledBack] != 2 {
		t.Fatalf("Counts() = %v", c)
	}

	res := n.do(&fsm.Prune{FinishedBefore: t0 + 16})
	if res.Err != nil || res.Txn != nil {
		t.Fatalf("Prune: %+v", res)
	}
	for _, id := range []string{"c10", "r15"} {
		if _, ok := n.f.Get(id); ok {
			t.Errorf("%s not pruned", id)
		}
	}
	for _, id := range []string{"c16", "f5", "res5", "p", "cing", "rbing"} {
		if _, ok := n.f.Get(id); !ok {
			t.Errorf("%s pruned", id)
		}
	}
	// KeysBefore 0 kept every key; the key of a pruned txn still blocks reuse but no
	// longer resolves to a record.
	for _, k := range []string{"kc16", "kf5", "kp"} {
		if _, ok := n.f.ByKey(k); !ok {
			t.Errorf("key %s lost", k)
		}
	}
	if tx, ok := n.f.ByKey("kc10"); ok {
		t.Errorf("ByKey of a pruned txn = %+v", tx)
	}

	// Keys created before the cutoff go, whatever their transaction's state.
	n.must(&fsm.Prune{KeysBefore: t0 + 1})
	for _, k := range []string{"kc10", "kf5", "kp"} {
		if _, ok := n.f.ByKey(k); ok {
			t.Errorf("key %s not pruned", k)
		}
	}
	if tx, ok := n.f.ByKey("kc16"); !ok || tx.ID != "c16" {
		t.Errorf("key kc16 (created at the cutoff) pruned")
	}
	if _, ok := n.f.Get("p"); !ok {
		t.Error("pruning keys removed a transaction")
	}
	// A pruned key may be used again.
	mk("again", "kf5", t0+2000)
	if tx, ok := n.f.ByKey("kf5"); !ok || tx.ID != "again" {
		t.Errorf("ByKey(kf5) after reuse = %+v", tx)
	}

	// Failed and active transactions survive any cutoff.
	n.must(&fsm.Prune{FinishedBefore: 1 << 62, KeysBefore: 1 << 62})
	got := ids(func() []*fsm.Txn { l, _ := n.f.List(0, "", 0); return l }())
	want := []string{"again", "cing", "f5", "p", "rbing"}
	if !slices.Equal(got, want) {
		t.Errorf("after pruning everything: %v, want %v", got, want)
	}
}

func TestStatusNames(t *testing.T) {
	names := map[fsm.Status]string{prep: "preparing", cing: "committing", rbing: "rolling_back", cted: "committed", rbed: "rolled_back", failed: "failed"}
	for st, name := range names {
		if st.String() != name {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), name)
		}
		if got, err := fsm.ParseStatus(name); err != nil || got != st {
			t.Errorf("ParseStatus(%q) = %v, %v", name, got, err)
		}
		if want := st == cted || st == rbed || st == failed; st.Terminal() != want {
			t.Errorf("%v.Terminal() = %v", st, st.Terminal())
		}
	}
	for _, bad := range []string{"", "status(0)", "Committed", "done"} {
		if _, err := fsm.ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) accepted", bad)
		}
	}
	if s := fsm.Status(0).String(); s != "status(0)" {
		t.Errorf("Status(0) = %q", s)
	}
	if s := fsm.Status(99).String(); s != "status(99)" {
		t.Errorf("Status(99) = %q", s)
	}
}
