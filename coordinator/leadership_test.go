package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// TestC01_RollbackToParticipantThatNeverPrepared: FP-C never sees the Prepare (the
// connection drops before it is processed) and FP-B NACKs. Rollback goes to all three,
// FP-C acknowledges the rollback of a transaction it does not know as a no-op, and the
// transaction is rolled back after a small bounded number of rollback calls; no lock is
// left (O3).
func TestC01_RollbackToParticipantThatNeverPrepared(t *testing.T) {
	fps := newFPs(t, 3)
	// FP-B's NACK waits until FP-A and FP-C have their Prepares (sent, so they count as
	// reached: a Prepare canceled before it was sent needs no Rollback).
	nackAfterArrivals(t, fps[1], "no rooms", fps[0], fps[2])
	// FP-C holds the Prepare unprocessed (so FP-B's NACK decides), then drops it.
	fps[2].Set(prepare, participanttest.Behavior{Hold: true, Drop: participanttest.DropBefore})
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	defer fps[2].Release(prepare)
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusRolledBack {
		t.Fatalf("got %s, want rolled_back", describe(got))
	}
	errorsContain(t, got, fps[1].Endpoints().Prepare+": NACK: no rooms")
	for i, fp := range fps {
		if n := fp.Count(rollback); n < 1 || n > 2 {
			t.Errorf("FP %d got %d rollbacks, want 1 (at most 2)", i, n)
		}
		if fp.Count(commit) != 0 {
			t.Errorf("FP %d got a commit", i)
		}
	}
	var sawNoop bool
	for _, c := range fps[2].Calls(txn.ID) {
		if c.Phase == rollback && c.Outcome == "ACK: unknown txn, nothing to do" {
			sawNoop = true
		}
	}
	if !sawNoop {
		t.Errorf("FP-C did not acknowledge an unknown-txn rollback: %+v", fps[2].Calls(txn.ID))
	}
	if a := got.States[2].Attempts; a < 1 || a > 2 {
		t.Errorf("FP-C rollback attempts %d", a)
	}
	l.stop(t)
	checkFPs(t, fps...)
	checkO1(t, r.log)
}

// TestC05_LeadershipLostOnDecide: the Log answers the Decide entry with
// raft.ErrLeadershipLost, once without writing it and once after writing it (the outcome
// is unknown to the proposer either way). The engine sends no phase-two message, neither
// Commit nor Rollback, and its driver stops. A second engine, the new leader over the same
// FSM, finishes the transaction to one outcome: the logged decision if the entry survived,
// else it runs phase one again.
func TestC05_LeadershipLostOnDecide(t *testing.T) {
	for _, decision := range []fsm.Decision{fsm.DecisionCommit, fsm.DecisionAbort} {
		for _, applied := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/applied=%v", decision, applied), func(t *testing.T) {
				fps := newFPs(t, 2)
				if decision == fsm.DecisionAbort {
					fps[1].Set(prepare, participanttest.NACK("no rooms"))
				}
				r := newRig(t)
				r.log.fail(isDecide, fmt.Errorf("applying: %w", raft.ErrLeadershipLost), applied)
				old := r.lead(fastCfg(), nil)
				txn := old.submit(t, roomy, fps...)
				eventually(t, "the old leader's driver to stop", func() bool { return old.eng.InFlight() == 0 })

				x, _ := r.fsm.Get(txn.ID)
				if applied && x.Decision != decision || !applied && x.Status != fsm.StatusPreparing {
					t.Fatalf("after the lost Decide: %s", describe(x))
				}
				if n := old.caller.count(commit) + old.caller.count(rollback); n != 0 {
					t.Fatalf("the deposed leader sent %d phase-two messages", n)
				}
				old.stop(t)
				r.log.clearFaults()

				newer := r.lead(fastCfg(), nil)
				got := r.waitTerminal(t, txn.ID)
				want := fsm.StatusCommitted
				if decision == fsm.DecisionAbort {
					want = fsm.StatusRolledBack
				}
				if got.Status != want {
					t.Fatalf("new leader: %s, want %v", describe(got), want)
				}
				// (Counted where the engine calls: a Prepare the old leader canceled may still
				// reach an FP late.)
				if applied && newer.caller.count(prepare) != 0 {
					t.Errorf("the decision was logged, yet the new leader prepared again")
				}
				if !applied && decision == fsm.DecisionCommit && newer.caller.count(prepare) != len(fps) {
					t.Errorf("no decision was logged: the new leader must prepare again (%d prepares)", newer.caller.count(prepare))
				}
				newer.stop(t)
				old.assertNoLateCalls(t)
				newer.assertNoLateCalls(t)
				checkFPs(t, fps...)
				checkO1(t, r.log)
			})
		}
	}
}

// TestC05_LeadershipLostOnBegin: Begin is written but the proposer hears
// ErrLeadershipLost. Submit reports the outcome unknown (ErrIndeterminate) with the id, not
// a failure; the deposed leader calls no participant; the next leader runs the transaction.
func TestC05_LeadershipLostOnBegin(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	r.log.fail(func(c fsm.Command) bool { _, ok := c.(*fsm.Begin); return ok }, raft.ErrLeadershipLost, true)
	old := r.lead(fastCfg(), nil)
	txn, err := old.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy})
	if !errors.Is(err, coordinator.ErrIndeterminate) || txn == nil || txn.ID == "" {
		t.Fatalf("Submit: %v, %v; want ErrIndeterminate with the id", txn, err)
	}
	if x, ok := r.fsm.Get(txn.ID); !ok || x.Status != fsm.StatusPreparing {
		t.Fatalf("the Begin entry is not in the FSM: %v", x)
	}
	if old.eng.InFlight() != 0 {
		t.Errorf("in flight %d after an indeterminate Submit", old.eng.InFlight())
	}
	old.stop(t)
	if n := len(old.caller.calls); n != 0 {
		t.Errorf("the deposed leader made %d calls", n)
	}
	r.log.clearFaults()
	r.lead(fastCfg(), nil)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("new leader: %s", describe(got))
	}
	checkFPs(t, fps...)
}

// TestC04_ResumeEveryNonTerminalState: the engine, started as a new leader over an FSM that
// holds a transaction in every non-terminal state, drives each to a terminal state.
// Participants that already acknowledged phase two are not called again; terminal
// transactions are left alone.
func TestC04_ResumeEveryNonTerminalState(t *testing.T) {
	fps := newFPs(t, 3)
	r := newRig(t)
	client := call.NewClient(call.ClientOptions{})
	now := time.Now().UnixMilli()
	ps := parts(fps...)
	begin := func(id string, created, deadline int64) *fsm.Begin {
		return &fsm.Begin{ID: id, CreatedAt: created, Deadline: deadline, Participants: ps}
	}
	yes := []fsm.Vote{fsm.VoteYes, fsm.VoteYes, fsm.VoteYes}
	decideCommit := func(id string) *fsm.Decide {
		return &fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: now, Votes: yes, Reasons: make([]string, 3)}
	}
	// The earlier leader's Prepares: the participants of decided transactions hold locks.
	prepared := func(ids ...string) {
		for _, id := range ids {
			for _, fp := range fps {
				ctx, cancel := context.WithTimeout(context.Background(), waitBound)
				reply, err := client.Call(ctx, fp.Endpoints().Prepare, prepare, participant.Request{TransactionID: id})
				cancel()
				if err != nil || reply.Status != participant.ACK {
					t.Fatalf("pre-prepare %s: %v %v", id, reply, err)
				}
			}
		}
	}
	prepared("committing-0-acked", "committing", "rolling-back-1-acked")
	// ... and the acknowledgements the Progress entries below record.
	for _, c := range []struct {
		fp    int
		phase participant.Phase
		id    string
	}{{0, commit, "committing-0-acked"}, {1, rollback, "rolling-back-1-acked"}} {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		reply, err := client.Call(ctx, fps[c.fp].Endpoints().URL(c.phase), c.phase, participant.Request{TransactionID: c.id})
		cancel()
		if err != nil || reply.Status != participant.ACK {
			t.Fatalf("pre-%s %s: %v %v", c.phase, c.id, reply, err)
		}
	}
	r.log.preload(t,
		begin("preparing-future", now, now+roomy.Milliseconds()),
		begin("preparing-past", now-2000, now-1000),
		begin("committing-0-acked", now, now+1000),
		decideCommit("committing-0-acked"),
		&fsm.Progress{ID: "committing-0-acked", Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 1, Error: "HTTP 500"}, {}}},
		begin("committing", now, now+1000),
		decideCommit("committing"),
		begin("rolling-back-1-acked", now, now+1000),
		&fsm.Decide{ID: "rolling-back-1-acked", Decision: fsm.DecisionAbort, At: now,
			Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteYes, fsm.VoteNone}, Reasons: []string{"", "", "no answer within 1000 ms"}},
		&fsm.Progress{ID: "rolling-back-1-acked", Reports: []fsm.Report{{}, {Acked: true, Attempts: 1}, {}}},
		begin("failed", now, now+1000),
		decideCommit("failed"),
		&fsm.Fail{ID: "failed", At: now, Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 30, Error: "HTTP 500"}, {Acked: true, Attempts: 1}}},
		begin("committed", now, now+1000),
		decideCommit("committed"),
		&fsm.Complete{At: now, Items: []fsm.Completion{{ID: "committed", Attempts: []uint32{1, 1, 1}}}},
	)
	if n := len(r.fsm.Active()); n != 5 {
		t.Fatalf("%d active transactions preloaded, want 5", n)
	}

	l := r.lead(fastCfg(), nil)
	want := map[string]fsm.Status{
		"preparing-future":     fsm.StatusCommitted,
		"preparing-past":       fsm.StatusRolledBack,
		"committing-0-acked":   fsm.StatusCommitted,
		"committing":           fsm.StatusCommitted,
		"rolling-back-1-acked": fsm.StatusRolledBack,
	}
	for id, st := range want {
		if got := r.waitTerminal(t, id); got.Status != st {
			t.Errorf("%s: %s, want %v", id, describe(got), st)
		}
	}
	eventually(t, "every driver to finish", func() bool { return l.eng.InFlight() == 0 })
	l.stop(t)

	// The new leader's prepares, commits and rollbacks per FP for each transaction.
	type calls struct{ p, c, r int }
	expect := map[string][3]calls{
		"preparing-future":     {{1, 1, 0}, {1, 1, 0}, {1, 1, 0}},
		"preparing-past":       {{1, 0, 1}, {1, 0, 1}, {1, 0, 1}}, // the Prepare fails at once: deadline passed
		"committing-0-acked":   {{0, 0, 0}, {0, 1, 0}, {0, 1, 0}},
		"committing":           {{0, 1, 0}, {0, 1, 0}, {0, 1, 0}},
		"rolling-back-1-acked": {{0, 0, 1}, {0, 0, 0}, {0, 0, 1}},
		"failed":               {},
		"committed":            {},
	}
	for id, per := range expect {
		for i, fp := range fps {
			var got calls
			for _, c := range l.caller.calls {
				if c.ID != id || c.URL != fp.Endpoints().URL(c.Phase) {
					continue
				}
				switch c.Phase {
				case prepare:
					got.p++
				case commit:
					got.c++
				case rollback:
					got.r++
				}
			}
			if got != per[i] {
				t.Errorf("%s at FP %d: prepare/commit/rollback calls %v, want %v", id, i, got, per[i])
			}
		}
	}
	for i, fp := range fps {
		for _, c := range fp.Calls("preparing-past") {
			if c.Phase == prepare {
				t.Errorf("FP %d received a Prepare past its deadline", i)
			}
		}
	}
	if x, _ := r.fsm.Get("committing-0-acked"); x.States[1].Attempts != 2 {
		t.Errorf("attempts continue from the logged count: %+v", x.States)
	}
	for _, fp := range fps {
		errorsContain(t, mustGet(t, r, "preparing-past"), fp.Endpoints().Prepare+": no answer within 1000 ms")
	}
	for _, id := range []string{"failed", "committed"} {
		if x := mustGet(t, r, id); x.Index > 20 {
			t.Errorf("%s was changed: %s", id, describe(x))
		}
	}
	checkFPs(t, fps...)
}

func mustGet(t testing.TB, r *rig, id string) *fsm.Txn {
	t.Helper()
	x, ok := r.fsm.Get(id)
	if !ok {
		t.Fatalf("%s not in the FSM", id)
	}
	return x
}

// TestLeadershipLostInPhaseOne: Lead's context ends while a Prepare is in flight. Lead
// returns only once every driver stopped (no call in progress), no decision is logged, no
// call is made afterwards, and the next leader finishes the transaction.
func TestLeadershipLostInPhaseOne(t *testing.T) {
	fps := newFPs(t, 2)
	fps[1].Set(prepare, participanttest.Hang())
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	waitFP(t, fps[1], "the prepare to be held", func() bool { return fps[1].Count(prepare) == 1 })
	l.stop(t) // fails if a call is still in progress when Lead returns
	checkNoLeak(t)
	if x := mustGet(t, r, txn.ID); x.Status != fsm.StatusPreparing {
		t.Fatalf("deposed leader moved the transaction on: %s", describe(x))
	}
	for _, e := range entriesFor(r.log, txn.ID) {
		if isDecide(e.Cmd) {
			t.Fatalf("a deposed leader logged a decision")
		}
	}
	fps[1].Set(prepare, participanttest.ACK())
	fps[1].Release(prepare)
	waitFP(t, fps[1], "the held prepare to finish", func() bool { return fps[1].Calls(txn.ID)[0].Outcome != "" })
	l.assertNoLateCalls(t)

	r.lead(fastCfg(), nil)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("new leader: %s", describe(got))
	}
	checkFPs(t, fps...)
}

// TestLeadershipLostInPhaseTwo: Lead's context ends while phase two is being retried. Lead
// returns with no call in progress, nothing more is logged or sent, the status stays
// committing, and the next leader finishes it.
func TestLeadershipLostInPhaseTwo(t *testing.T) {
	fps := newFPs(t, 2)
	fps[1].Set(commit, participanttest.Status(500, "down"))
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)
	r.waitFor(t, txn.ID, "FP-A's ack and FP-B's failures logged", func(x *fsm.Txn) bool {
		return x != nil && x.States[0].Acked && x.States[1].Attempts >= 3
	})
	l.stop(t)
	checkNoLeak(t)
	entries := r.log.len()
	if x := mustGet(t, r, txn.ID); x.Status != fsm.StatusCommitting {
		t.Fatalf("status %v after losing leadership in phase two", x.Status)
	}
	sent := fps[1].Count(commit)
	fps[1].Set(commit, participanttest.ACK())
	l.assertNoLateCalls(t)
	if r.log.len() != entries || fps[1].Count(commit) != sent {
		t.Fatal("the deposed leader kept working")
	}

	r.lead(fastCfg(), nil)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("new leader: %s", describe(got))
	}
	if fps[0].Count(commit) != 1 {
		// FP-A's acknowledgement was in a Progress entry: not sent again.
		t.Errorf("FP-A got %d commits", fps[0].Count(commit))
	}
	checkFPs(t, fps...)
}

// stuckCaller holds every Prepare past its context's end until release is closed, like a
// participant client that is slow to notice cancellation.
type stuckCaller struct {
	entered chan struct{} // gets one value per call
	release chan struct{}
}

func (s *stuckCaller) Call(ctx context.Context, _ string, _ participant.Phase, _ participant.Request) (participant.Reply, error) {
	s.entered <- struct{}{}
	<-ctx.Done()
	<-s.release
	return participant.Reply{}, ctx.Err()
}

// TestLeadWaitsForDrivers: Lead does not return while a driver is still inside a call.
func TestLeadWaitsForDrivers(t *testing.T) {
	fps := newFPs(t, 1)
	r := newRig(t)
	sc := &stuckCaller{entered: make(chan struct{}, 1), release: make(chan struct{})}
	eng := coordinator.New(fastCfg(), r.log, r.fsm, sc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Lead(ctx, 1) }()
	eventually(t, "leading", eng.Leading)
	if _, err := eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy}); err != nil {
		t.Fatal(err)
	}
	<-sc.entered
	cancel()
	select {
	case <-done:
		t.Fatal("Lead returned while a driver was still in a call")
	case <-time.After(50 * time.Millisecond): // a negative check: it can only miss, not flake
	}
	close(sc.release)
	select {
	case <-done:
	case <-time.After(waitBound):
		t.Fatal("Lead did not return after the call ended")
	}
	checkNoLeak(t)
}
