package coordinator_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

const (
	prepare  = participant.PhasePrepare
	commit   = participant.PhaseCommit
	rollback = participant.PhaseRollback
)

func newFPs(t testing.TB, n int) []*participanttest.FP {
	fps := make([]*participanttest.FP, n)
	for i := range fps {
		fps[i] = participanttest.New(t)
	}
	return fps
}

// counts asserts the number of calls of each phase each FP received.
func counts(t testing.TB, fp *participanttest.FP, nPrepare, nCommit, nRollback int) {
	t.Helper()
	if p, c, r := fp.Count(prepare), fp.Count(commit), fp.Count(rollback); p != nPrepare || c != nCommit || r != nRollback {
		t.Errorf("%s: prepare/commit/rollback calls = %d/%d/%d, want %d/%d/%d; log %+v", fp.URL(), p, c, r, nPrepare, nCommit, nRollback, fp.Log())
	}
}

func TestAllACKCommits(t *testing.T) {
	fps := newFPs(t, 3)
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	if txn.Status != fsm.StatusPreparing {
		t.Fatalf("Submit returned status %v, want preparing", txn.Status)
	}
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusCommitted || got.Decision != fsm.DecisionCommit {
		t.Fatalf("got %s, want committed", describe(got))
	}
	for i, fp := range fps {
		counts(t, fp, 1, 1, 0)
		for _, c := range fp.Calls(txn.ID) {
			if want := txn.ID + ":" + string(c.Phase); c.IdempotencyKey != want {
				t.Errorf("fp %d %s: Idempotency-Key %q, want %q", i, c.Phase, c.IdempotencyKey, want)
			}
			if c.Outcome != "ACK" {
				t.Errorf("fp %d %s: outcome %q", i, c.Phase, c.Outcome)
			}
		}
		if st := got.States[i]; st.Vote != fsm.VoteYes || !st.Acked || st.Attempts != 1 {
			t.Errorf("participant %d state %+v", i, st)
		}
	}
	if len(got.Errors()) != 0 {
		t.Errorf("errors on a clean commit: %q", got.Errors())
	}
	checkFPs(t, fps...)
	checkO1(t, r.log)
}

func TestOneNACKRollsBackAll(t *testing.T) {
	fps := newFPs(t, 3)
	fps[1].Set(prepare, participanttest.NACK("no rooms"))
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusRolledBack || got.Decision != fsm.DecisionAbort {
		t.Fatalf("got %s, want rolled_back", describe(got))
	}
	errorsContain(t, got, fps[1].Endpoints().Prepare+": NACK: no rooms")
	if got.States[1].Vote != fsm.VoteNo {
		t.Errorf("vote of the NACKing participant: %v", got.States[1].Vote)
	}
	for _, fp := range fps {
		if c, r := fp.Count(commit), fp.Count(rollback); c != 0 || r != 1 {
			t.Errorf("%s: %d commits, %d rollbacks; want 0, 1", fp.URL(), c, r)
		}
	}
	checkFPs(t, fps...)
	checkO1(t, r.log)
}

// TestSlowParticipantTimesOut is C02 from the coordinator's side: FP-B holds the Prepare
// past the deadline. The coordinator rolls back at the deadline and sends Rollback to FP-B
// too, while its Prepare is still in flight; the late answer changes nothing. With
// tombstones FP-B refuses the late Prepare and holds nothing; without them it holds a lock
// nobody releases (the participant contract must require tombstones).
func TestSlowParticipantTimesOut(t *testing.T) {
	for _, tombstones := range []bool{true, false} {
		t.Run(fmt.Sprintf("tombstones=%v", tombstones), func(t *testing.T) {
			fps := newFPs(t, 2)
			fps[1].SetTombstones(tombstones)
			fps[1].Set(prepare, participanttest.Hang())
			r := newRig(t)
			// Before deciding, make sure FP-B holds the Prepare (on a loaded machine the
			// deadline could pass before the request is even sent).
			l := r.lead(fastCfg(), &coordinator.Hooks{BeforeDecide: func(string, fsm.Decision) {
				ctx, cancel := context.WithTimeout(context.Background(), waitBound)
				defer cancel()
				if err := fps[1].Wait(ctx, func() bool { return fps[1].Count(prepare) == 1 }); err != nil {
					t.Errorf("the prepare never reached FP-B: %v", err) // not Fatal: a driver goroutine
				}
			}})
			start := time.Now()
			txn := l.submit(t, 300*time.Millisecond, fps...)
			got := r.waitTerminal(t, txn.ID)
			if got.Status != fsm.StatusRolledBack {
				t.Fatalf("got %s, want rolled_back", describe(got))
			}
			if el := time.Since(start); el < 300*time.Millisecond {
				t.Errorf("decided after %v, before the 300 ms deadline", el)
			}
			errorsContain(t, got, fps[1].Endpoints().Prepare+": no answer within 300 ms")
			if st := fps[1].Calls(txn.ID); len(st) != 2 || st[0].Phase != prepare || st[0].Outcome != "" || st[1].Phase != rollback {
				t.Errorf("FP-B should have the Prepare held and the Rollback done: %+v", st)
			}
			if fps[1].Count(rollback) != 1 || fps[0].Count(rollback) != 1 {
				t.Errorf("rollbacks: %d, %d; want 1 each (also to the participant still preparing)", fps[0].Count(rollback), fps[1].Count(rollback))
			}
			// The late Prepare completes now.
			fps[1].Release(prepare)
			waitFP(t, fps[1], "the late prepare to finish", func() bool { return fps[1].Calls(txn.ID)[0].Outcome != "" })
			late := fps[1].Calls(txn.ID)[0] // the Prepare
			if tombstones {
				if late.Outcome != "NACK: already rolled back" {
					t.Errorf("late prepare outcome %q", late.Outcome)
				}
				checkFPs(t, fps...)
			} else if late.Outcome != "ACK" || fps[1].CheckO3() == nil {
				t.Errorf("without tombstones the late prepare should hold a lock: outcome %q, held %v", late.Outcome, fps[1].Held())
			}
			l.stop(t)
			if c := fps[0].Count(commit) + fps[1].Count(commit); c != 0 {
				t.Errorf("%d commits sent for a rolled-back transaction", c)
			}
			if x, _ := r.fsm.Get(txn.ID); x.Status != fsm.StatusRolledBack || x.Index != got.Index {
				t.Errorf("the late ACK changed the record: %s", describe(x))
			}
			checkO1(t, r.log)
		})
	}
}

// TestPrepareErrors: a participant that answers with anything but a protocol reply votes no,
// and the errors list says precisely what it did.
func TestPrepareErrors(t *testing.T) {
	target := participanttest.New(t) // a redirect points here; it must see nothing
	cases := []struct {
		name string
		b    participanttest.Behavior
		want string // the error after "<prepare URL>: "
	}{
		{"500", participanttest.Status(500, "boom"), "HTTP 500: boom"},
		{"garbage", participanttest.Status(200, "not json{"), "invalid reply: not JSON: not json{"},
		{"unknown status", participanttest.Status(200, `{"status":"OK"}`), `invalid reply: status "OK" is neither ACK nor NACK`},
		{"redirect", participanttest.Behavior{Code: http.StatusFound, Header: http.Header{"Location": {target.Endpoints().Prepare}}},
			fmt.Sprintf("HTTP 302 redirect to %q (not followed)", target.Endpoints().Prepare)},
		{"close", participanttest.Behavior{Drop: participanttest.DropBefore}, "connection closed before a reply (EOF)"},
		// The Prepare took effect (FP-B holds a lock) but the vote was lost: a no; the
		// Rollback releases the lock (checked by O3 below).
		{"process then close", participanttest.Behavior{Drop: participanttest.DropAfter}, "connection closed before a reply (EOF)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fps := newFPs(t, 2)
			fps[1].Set(prepare, tc.b)
			r := newRig(t)
			l := r.lead(fastCfg(), nil)
			txn := l.submit(t, roomy, fps...)
			got := r.waitTerminal(t, txn.ID)
			if got.Status != fsm.StatusRolledBack {
				t.Fatalf("got %s, want rolled_back", describe(got))
			}
			if got.States[1].Vote != fsm.VoteError {
				t.Errorf("vote %v, want error", got.States[1].Vote)
			}
			errorsContain(t, got, fps[1].Endpoints().Prepare+": "+tc.want)
			// FP-A's Prepare may have been cut short by FP-B's answer, even before it was
			// sent (then FP-A needs no Rollback); one that arrived gets exactly one.
			if aPrep, aRb := fps[0].Count(prepare), fps[0].Count(rollback); aPrep > 1 || fps[0].Count(commit) != 0 || aRb > 1 || aPrep > 0 && aRb != 1 {
				t.Errorf("FP-A log %+v", fps[0].Log())
			}
			counts(t, fps[1], 1, 0, 1)
			checkFPs(t, fps...)
		})
	}
	if n := len(target.Log()); n != 0 {
		t.Errorf("the redirect was followed: target got %d calls", n)
	}
}

// TestEveryFailedPrepareIsReported: when several participants fail phase one (here two
// that never answer), the errors list names each of them, not only the first; only calls
// the engine itself canceled after the first no are left out.
func TestEveryFailedPrepareIsReported(t *testing.T) {
	fps := newFPs(t, 3)
	fps[1].Set(prepare, participanttest.Hang())
	fps[2].Set(prepare, participanttest.Hang())
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, 200*time.Millisecond, fps...)
	got := r.waitStatus(t, txn.ID, fsm.StatusRolledBack)
	for _, fp := range fps[1:] {
		errorsContain(t, got, fp.Endpoints().Prepare+": no answer within 200 ms")
	}
	l.stop(t)
	fps[1].Release(prepare)
	fps[2].Release(prepare)
}

// TestCommitProcessedThenDropped: FP-B commits but the connection drops before the reply.
// The engine cannot tell, so it sends Commit again; FP-B acknowledges the repeat and the
// transaction commits with no lock left. (net/http may itself resend once on a reused
// keep-alive connection, because the call carries an Idempotency-Key: either way FP-B
// sees the Commit at least twice.)
func TestCommitProcessedThenDropped(t *testing.T) {
	fps := newFPs(t, 2)
	fps[1].FailFirst(commit, 1, participanttest.Behavior{Drop: participanttest.DropAfter})
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	r.waitStatus(t, txn.ID, fsm.StatusCommitted)
	if n := fps[1].Count(commit); n < 2 {
		t.Errorf("FP-B saw %d commits, want the dropped one and a repeat", n)
	}
	if fps[0].Count(rollback)+fps[1].Count(rollback) != 0 {
		t.Error("rollback sent for a committed transaction")
	}
	checkFPs(t, fps...)
}
