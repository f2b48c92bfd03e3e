package coordinator_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

func (l *leader) submitFast(t testing.TB, timeout time.Duration, key string, fps ...*participanttest.FP) (*fsm.Txn, error) {
	t.Helper()
	return l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: timeout, Key: key, Mode: coordinator.ModeFast})
}

// checkAtomic fails the test if one participant of id received Commit and another
// Rollback (no participant may be told Commit while another is told Rollback).
func checkAtomic(t testing.TB, id string, fps ...*participanttest.FP) {
	t.Helper()
	var commits, rollbacks int
	for _, fp := range fps {
		for _, c := range fp.Calls(id) {
			switch c.Phase {
			case commit:
				commits++
			case rollback:
				rollbacks++
			}
		}
	}
	if commits > 0 && rollbacks > 0 {
		t.Errorf("atomicity violated for %s: %d commit and %d rollback calls", id, commits, rollbacks)
	}
}

// begins counts the Begin entries in the log (fast mode logs none).
func begins(l *memLog) int {
	return countType(l, fsm.CmdBegin) + countType(l, fsm.CmdBeginPayloads)
}

func TestFastCommit(t *testing.T) {
	fps := newFPs(t, 3)
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	txn, err := l.submitFast(t, roomy, "", fps...)
	if err != nil {
		t.Fatal(err)
	}
	if txn.Status != fsm.StatusCommitting && txn.Status != fsm.StatusCommitted {
		t.Fatalf("Submit returned %s, want the logged commit", describe(txn))
	}
	r.waitStatus(t, txn.ID, fsm.StatusCommitted)
	for _, fp := range fps {
		counts(t, fp, 1, 1, 0)
	}
	if n := countType(r.log, fsm.CmdFastDecide); n != 1 || begins(r.log) != 0 {
		t.Fatalf("log has %d fast entries and %d Begins, want 1 and 0", n, begins(r.log))
	}
	checkO1(t, r.log)
	checkFPs(t, fps...)
}

// TestFastNACKRollsBackAtOnce: a NACK aborts; every participant that was prepared gets
// Rollback, and the transaction ends rolled_back with the reason.
func TestFastNACKRollsBackAtOnce(t *testing.T) {
	fps := newFPs(t, 3)
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	nackAfterArrivals(t, fps[1], "no rooms", fps[0], fps[2]) // the others have voted yes first
	// The abort entry is held until the yes-voters got their Rollback: the calls go out
	// without waiting for it (a leader that logged first would never get past this gate).
	var early bool
	r.log.setGate(func(c fsm.Command) {
		if fd, ok := c.(*fsm.FastDecide); ok && fd.Decision == fsm.DecisionAbort {
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			early = fps[0].Wait(ctx, func() bool { return fps[0].Count(rollback) >= 1 }) == nil &&
				fps[2].Wait(ctx, func() bool { return fps[2].Count(rollback) >= 1 }) == nil
		}
	})
	txn, err := l.submitFast(t, roomy, "", fps...)
	if err != nil {
		t.Fatal(err)
	}
	got := r.waitStatus(t, txn.ID, fsm.StatusRolledBack)
	errorsContain(t, got, fps[1].Endpoints().Prepare+": NACK: no rooms")
	if !early {
		t.Error("the Rollback calls waited for the abort entry")
	}
	for _, fp := range []*participanttest.FP{fps[0], fps[2]} {
		if n := fp.Count(rollback); n != 1 {
			t.Errorf("%s: %d Rollback calls, want 1 (phase two does not repeat an acknowledged early one)", fp.URL(), n)
		}
	}
	for _, fp := range fps {
		if fp.Count(commit) != 0 {
			t.Errorf("%s got Commit", fp.URL())
		}
	}
	checkAtomic(t, txn.ID, fps...)
	checkO1(t, r.log)
	checkFPs(t, fps...)
}

// TestFastTimeout: a participant that does not answer by the deadline aborts the
// transaction; the others are rolled back.
func TestFastTimeout(t *testing.T) {
	fps := newFPs(t, 2)
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	fps[1].Script(prepare, participanttest.Hang())
	txn, err := l.submitFast(t, 300*time.Millisecond, "", fps...)
	if err != nil {
		t.Fatal(err)
	}
	fps[1].Release(prepare) // the late Prepare is processed and takes its lock
	r.waitStatus(t, txn.ID, fsm.StatusRolledBack)
	waitFP(t, fps[1], "the late prepare released", func() bool { return len(fps[1].Held()) == 0 })
	checkAtomic(t, txn.ID, fps...)
	checkFPs(t, fps...)
}

// TestFastRefusedAfterPresumedAbort: a presumed abort that reaches the log before the
// fast decision (an inquiry answered by another leader) wins: the commit is refused, the
// leader rolls back what it prepared, and the client is told rolled_back.
func TestFastRefusedAfterPresumedAbort(t *testing.T) {
	fps := newFPs(t, 3)
	r := newLevel3Rig(t)
	hooks := &coordinator.Hooks{BeforeDecide: func(id string, d fsm.Decision) {
		r.log.preload(t, &fsm.PresumeAbort{ID: id, At: time.Now().UnixMilli(), Deadline: time.Now().Add(-time.Second).UnixMilli()})
	}}
	l := r.lead(fastCfg(), hooks)
	txn, err := l.submitFast(t, roomy, "", fps...)
	if err != nil {
		t.Fatal(err)
	}
	if txn.Status != fsm.StatusRolledBack || !txn.PresumedAborted() {
		t.Fatalf("Submit returned %s, want the presumed-abort record", describe(txn))
	}
	for _, fp := range fps {
		waitFP(t, fp, "rolled back", func() bool { return fp.Count(rollback) >= 1 && len(fp.Held()) == 0 })
		if fp.Count(commit) != 0 {
			t.Errorf("%s got Commit", fp.URL())
		}
	}
	if rec, _ := r.fsm.Get(txn.ID); !rec.PresumedAborted() {
		t.Fatalf("FSM holds %s", describe(rec))
	}
	checkO1(t, r.log)
	checkFPs(t, fps...)
}

// TestFastKeyBoundElsewhere: the key got bound to another transaction before the fast
// decision was logged: the fast one is refused and rolled back, and the client gets the
// transaction the key names.
func TestFastKeyBoundElsewhere(t *testing.T) {
	fps := newFPs(t, 2)
	r := newLevel3Rig(t)
	var otherID string
	hooks := &coordinator.Hooks{BeforeDecide: func(id string, d fsm.Decision) {
		now := time.Now()
		otherID = "0190a8e2-7b3c-7def-8123-0000000000cc"
		r.log.preload(t, &fsm.Begin{ID: otherID, Key: "k1", CreatedAt: now.UnixMilli(), Deadline: now.Add(roomy).UnixMilli(), Participants: parts(fps...)})
	}}
	l := r.lead(fastCfg(), hooks)
	txn, err := l.submitFast(t, roomy, "k1", fps...)
	if err != nil {
		t.Fatal(err)
	}
	if txn.ID != otherID {
		t.Fatalf("Submit returned %s, want the key's transaction %s", txn.ID, otherID)
	}
	var fastID string
	for _, e := range r.log.all() {
		if fd, ok := e.Cmd.(*fsm.FastDecide); ok {
			fastID = fd.ID
			if !errors.Is(e.Res.Err, fsm.ErrKeyExists) {
				t.Fatalf("fast entry: %v, want ErrKeyExists", e.Res.Err)
			}
		}
	}
	for _, fp := range fps {
		waitFP(t, fp, "the refused one rolled back", func() bool {
			for _, c := range fp.Calls(fastID) {
				if c.Phase == rollback && c.Outcome == "ACK" {
					return true
				}
			}
			return false
		})
	}
	checkAtomic(t, fastID, fps...)
}

// TestFastIdempotencyRetry: a retry with the same key while the first attempt is still in
// phase one joins it: one transaction, one Prepare per participant, one answer.
func TestFastIdempotencyRetry(t *testing.T) {
	fps := newFPs(t, 2)
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	fps[0].Script(prepare, participanttest.Hang())
	var wg sync.WaitGroup
	res := make([]*fsm.Txn, 2)
	errs := make([]error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); res[0], errs[0] = l.submitFast(t, roomy, "retry-me", fps...) }()
	waitFP(t, fps[0], "the first Prepare held", func() bool { return fps[0].Count(prepare) == 1 })
	wg.Add(1)
	go func() { defer wg.Done(); res[1], errs[1] = l.submitFast(t, roomy, "retry-me", fps...) }()
	// The retry is waiting on the first (or has not reached the engine yet): an inquiry
	// about the running one is pending, and nothing is logged for it.
	eventually(t, "both submits in", func() bool { return l.eng.InFlight() == 1 })
	// Meanwhile a request with the same key and other participants is refused at once.
	if _, err := l.submitFast(t, roomy, "retry-me", fps[0]); !errors.Is(err, coordinator.ErrKeyReused) {
		t.Fatalf("same key, other participants, while running: %v", err)
	}
	fps[0].Release(prepare)
	wg.Wait()
	for i := range res {
		if errs[i] != nil {
			t.Fatalf("submit %d: %v", i, errs[i])
		}
	}
	if res[0].ID != res[1].ID {
		t.Fatalf("two transactions for one key: %s and %s", res[0].ID, res[1].ID)
	}
	r.waitTerminal(t, res[0].ID)
	for _, fp := range fps {
		counts(t, fp, 1, 1, 0)
	}
	// A request with the same key and other participants is refused, not joined.
	if _, err := l.submitFast(t, roomy, "retry-me", fps[0]); !errors.Is(err, coordinator.ErrKeyReused) {
		t.Fatalf("same key, other participants: %v", err)
	}
	// Once logged, the key is bound in the FSM: a later retry answers from it.
	again, err := l.submitFast(t, roomy, "retry-me", fps...)
	if err != nil || again.ID != res[0].ID || countType(r.log, fsm.CmdFastDecide) != 1 {
		t.Fatalf("retry after the decision: %v %v, %d fast entries", again, err, countType(r.log, fsm.CmdFastDecide))
	}
}

// TestFastUnloggedIsPendingAndGated: while the decision is not logged, an inquiry on the
// leader is pending (never a presumed abort), and without feature level 3 fast mode sends
// nothing.
func TestFastUnloggedIsPendingAndGated(t *testing.T) {
	fps := newFPs(t, 1)
	r := newLevel3Rig(t)
	var id string
	var mu sync.Mutex
	hooks := &coordinator.Hooks{BeforeDecide: func(i string, d fsm.Decision) { mu.Lock(); id = i; mu.Unlock() }}
	l := r.lead(fastCfg(), hooks)
	fps[0].Script(prepare, participanttest.Hang())
	done := make(chan struct{})
	go func() { defer close(done); l.submitFast(t, roomy, "", fps...) }()
	waitFP(t, fps[0], "Prepare held", func() bool { return fps[0].Count(prepare) == 1 })
	held := fps[0].Log()[0].TxnID
	if a := inquire(t, l, held, time.Now().Add(-time.Minute)); a.Outcome != coordinator.OutcomePending {
		t.Fatalf("inquiry while unlogged: %+v", a)
	}
	fps[0].Release(prepare)
	<-done
	mu.Lock()
	if id != held {
		t.Errorf("decided %s, held %s", id, held)
	}
	mu.Unlock()
	if countType(r.log, fsm.CmdPresumeAbort) != 0 {
		t.Fatal("a presumed abort was logged for a transaction the leader was running")
	}

	r2 := newRig(t)
	cfg := fastCfg()
	errGate := errors.New("fast mode needs feature level 3")
	cfg.FeatureGate = func(uint32, string) error { return errGate }
	l2 := r2.lead(cfg, nil)
	fp := participanttest.New(t)
	if _, err := l2.submitFast(t, roomy, "", fp); !errors.Is(err, errGate) || fp.Count(prepare) != 0 {
		t.Fatalf("gated: %v, %d prepares", err, fp.Count(prepare))
	}
}

// TestFastKillPoints: the leader is deposed at each point of a fast transaction; a new
// leader takes over the same log, and each participant still holding the transaction asks
// (the inquiry) and applies the answer. Every run ends atomic, with no participant holding.
func TestFastKillPoints(t *testing.T) {
	for _, kp := range []struct {
		name string
		// want is the outcome, or 0 when either is allowed.
		want fsm.Decision
	}{
		{"with a vote in flight", fsm.DecisionAbort},
		{"before the decision entry", fsm.DecisionAbort},
		{"decision entry lost in flight", fsm.DecisionAbort},
		{"decision entry committed, leader told lost", fsm.DecisionCommit},
		{"after the decision entry, before phase two", fsm.DecisionCommit},
		{"during phase two", fsm.DecisionCommit},
	} {
		t.Run(kp.name, func(t *testing.T) {
			fps := newFPs(t, 3)
			r := newLevel3Rig(t)
			cfg := fastCfg()
			cfg.InquirySkew = time.Millisecond
			var (
				mu sync.Mutex
				id string
				l1 *leader
			)
			// kill deposes l1 from inside its driver: its term's context ends, and the log
			// refuses whatever it proposes from then on (as Raft does a deposed leader's).
			kill := func() {
				r.log.fail(func(fsm.Command) bool { return true }, raft.ErrNotLeader, false)
				mu.Lock()
				l := l1
				mu.Unlock()
				l.cancel()
			}
			hooks := &coordinator.Hooks{}
			switch kp.name {
			case "before the decision entry":
				hooks.BeforeDecide = func(i string, _ fsm.Decision) { mu.Lock(); id = i; mu.Unlock(); kill() }
			case "decision entry lost in flight":
				r.log.fail(func(c fsm.Command) bool { return c.Type() == fsm.CmdFastDecide }, raft.ErrLeadershipLost, false)
			case "decision entry committed, leader told lost":
				r.log.fail(func(c fsm.Command) bool { return c.Type() == fsm.CmdFastDecide }, raft.ErrLeadershipLost, true)
			case "after the decision entry, before phase two":
				hooks.AfterDecide = func(string, fsm.Decision) { kill() }
			case "during phase two":
				fps[2].Script(commit, participanttest.Hang())
			case "with a vote in flight":
				fps[0].Script(prepare, participanttest.Hang())
			}
			mu.Lock()
			l1 = r.lead(cfg, hooks)
			mu.Unlock()
			if kp.name == "with a vote in flight" {
				go func() {
					waitFP(t, fps[0], "Prepare held", func() bool { return fps[0].Count(prepare) == 1 })
					kill()
					fps[0].Release(prepare) // the vote is cast after the leader is gone; its reply is lost
				}()
			}
			txn, err := l1.submitFast(t, 500*time.Millisecond, "", fps...)
			if err == nil {
				id = txn.ID
			} else if !errors.Is(err, coordinator.ErrIndeterminate) {
				t.Fatalf("Submit: %v", err)
			}
			if id == "" && txn != nil {
				id = txn.ID
			}
			if kp.name == "during phase two" {
				waitFP(t, fps[2], "commit held", func() bool { return fps[2].Count(commit) == 1 })
			}
			l1.stop(t)
			l1.assertNoLateCalls(t)
			if kp.name == "during phase two" {
				fps[2].Release(commit)
			}
			r.log.clearFaults()
			l2 := r.lead(cfg, nil)
			// Each participant still holding the transaction waits for its deadline and asks.
			deadline := time.Now().Add(time.Second)
			for _, fp := range fps {
				for _, c := range fp.Log() {
					if c.Phase == prepare {
						id = c.TxnID
					}
				}
			}
			if id == "" {
				t.Fatal("no Prepare was sent")
			}
			for time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // the deadline is a wall-clock instant: nothing to await
			}
			for _, fp := range fps {
				if len(fp.Held()) == 0 {
					continue
				}
				a := inquireUntil(t, l2, id, deadline)
				phase := participant.PhaseRollback
				if a.Outcome == coordinator.OutcomeCommitted {
					phase = participant.PhaseCommit
				}
				e := fp.Endpoints()
				if _, err := r.client.Call(context.Background(), e.URL(phase), phase, participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(deadline)}); err != nil {
					t.Fatalf("applying %s at %s: %v", a.Outcome, fp.URL(), err)
				}
			}
			if rec, ok := r.fsm.Get(id); ok && !rec.Status.Terminal() {
				r.waitTerminal(t, id)
			}
			rec, _ := r.fsm.Get(id)
			if rec == nil || (kp.want != 0 && rec.Decision != kp.want) {
				t.Fatalf("the log holds %s, want decision %v", describe(rec), kp.want)
			}
			checkAtomic(t, id, fps...)
			checkO1(t, r.log)
			checkFPs(t, fps...)
		})
	}
}

// inquireUntil asks until the answer is not pending.
func inquireUntil(t *testing.T, l *leader, id string, deadline time.Time) coordinator.Answer {
	t.Helper()
	var a coordinator.Answer
	eventually(t, "an outcome for "+id, func() bool {
		var err error
		a, err = l.eng.Inquire(context.Background(), id, deadline)
		return err == nil && a.Outcome != coordinator.OutcomePending
	})
	return a
}
