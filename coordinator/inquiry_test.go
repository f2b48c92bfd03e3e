package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
)

// level3 enables feature level 3 in the rig's FSM, as a cluster that finished upgrading.
func (r *rig) level3(t testing.TB) {
	r.log.preload(t, &fsm.SetFeatures{Level: 3, At: time.Now().Add(-time.Hour).UnixMilli()})
}

// newLevel3Rig is a rig whose log already enabled feature level 3 (fast mode, inquiry,
// presumed abort) an hour ago, so the retention horizon is no obstacle.
func newLevel3Rig(t *testing.T) *rig {
	r := newRig(t)
	r.level3(t)
	return r
}

func inquire(t *testing.T, l *leader, id string, deadline time.Time) coordinator.Answer {
	t.Helper()
	a, err := l.eng.Inquire(context.Background(), id, deadline)
	if err != nil {
		t.Fatalf("Inquire(%s): %v", id, err)
	}
	return a
}

func countType(l *memLog, typ fsm.CommandType) int {
	n := 0
	for _, e := range l.all() {
		if e.Cmd.Type() == typ {
			n++
		}
	}
	return n
}

// TestInquireDecided: a logged decision is the answer, whatever the deadline says.
func TestInquireDecided(t *testing.T) {
	fps := newFPs(t, 2)
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	ok := l.submit(t, roomy, fps...)
	r.waitTerminal(t, ok.ID)
	fps[1].Set(prepare, participanttest.NACK("sold out"))
	no := l.submit(t, roomy, fps...)
	r.waitTerminal(t, no.ID)
	past := time.Now().Add(-time.Minute)
	if a := inquire(t, l, ok.ID, past); a.Outcome != coordinator.OutcomeCommitted {
		t.Fatalf("committed transaction: %+v", a)
	}
	if a := inquire(t, l, no.ID, time.Time{}); a.Outcome != coordinator.OutcomeRolledBack {
		t.Fatalf("rolled-back transaction: %+v", a)
	}
	if n := countType(r.log, fsm.CmdPresumeAbort); n != 0 {
		t.Fatalf("%d presumed aborts logged for transactions the cluster knows", n)
	}
}

// TestInquirePresumesAbort: an id with no record, asked about past its deadline, is
// presumed aborted through the log once; the FSM then refuses a late decision for it.
func TestInquirePresumesAbort(t *testing.T) {
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	id := uuid.Must(uuid.NewV7()).String() // minted now: after the horizon (a version-7 id carries its time)
	deadline := time.Now().Add(-5 * time.Second)
	a := inquire(t, l, id, deadline)
	if a.Outcome != coordinator.OutcomeRolledBack || a.Txn == nil || !a.Txn.PresumedAborted() {
		t.Fatalf("answer %+v", a)
	}
	if tx, ok := r.fsm.Get(id); !ok || !tx.PresumedAborted() || tx.Deadline != deadline.UnixMilli() {
		t.Fatalf("FSM holds %+v", tx)
	}
	if a := inquire(t, l, id, deadline); a.Outcome != coordinator.OutcomeRolledBack {
		t.Fatalf("second inquiry: %+v", a)
	}
	if n := countType(r.log, fsm.CmdPresumeAbort); n != 1 {
		t.Fatalf("%d presumed-abort entries, want 1 (a second inquiry reads the record)", n)
	}
	late := &fsm.FastDecide{Begin: fsm.Begin{ID: id, CreatedAt: deadline.Add(-time.Second).UnixMilli(), Deadline: deadline.UnixMilli(),
		Participants: []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}}}, Decision: fsm.DecisionCommit}
	if res, err := r.log.Apply(context.Background(), late); err != nil || !errors.Is(res.Err, fsm.ErrPresumedAbort) {
		t.Fatalf("late commit after the presumed abort: %+v, %v", res, err)
	}
}

// TestInquirePending: without a deadline, before it, or within the skew allowance after
// it, an unknown id is pending and nothing is logged; Retry-After points at the deadline.
func TestInquirePending(t *testing.T) {
	fps := newFPs(t, 1)
	r := newLevel3Rig(t)
	cfg := fastCfg()
	cfg.InquirySkew = 2 * time.Second
	l := r.lead(cfg, nil)
	const id = "unknown-1"
	before := r.log.len()
	if a := inquire(t, l, id, time.Time{}); a.Outcome != coordinator.OutcomePending || a.RetryAfter != time.Second {
		t.Fatalf("no deadline: %+v", a)
	}
	if a := inquire(t, l, id, time.Now().Add(30*time.Second)); a.Outcome != coordinator.OutcomePending || a.RetryAfter < 25*time.Second || a.RetryAfter > 33*time.Second {
		t.Fatalf("before the deadline: %+v", a)
	}
	if a := inquire(t, l, id, time.Now().Add(-500*time.Millisecond)); a.Outcome != coordinator.OutcomePending {
		t.Fatalf("within the skew allowance: %+v", a)
	}
	if r.log.len() != before {
		t.Fatalf("pending inquiries logged %d entries", r.log.len()-before)
	}
	// A transaction in phase one is pending too, even past its deadline on the clock.
	fps[0].Set(prepare, participanttest.Hang())
	txn := l.submit(t, roomy, fps...)
	waitFP(t, fps[0], "the Prepare held", func() bool { return fps[0].Count(prepare) == 1 })
	if a := inquire(t, l, txn.ID, time.Now().Add(-time.Minute)); a.Outcome != coordinator.OutcomePending {
		t.Fatalf("preparing: %+v", a)
	}
	fps[0].Release(prepare)
	r.waitTerminal(t, txn.ID)
}

// TestInquireDecisionLoggedFirst: a decision that reaches the log before the presumed
// abort wins; the answer is that decision.
func TestInquireDecisionLoggedFirst(t *testing.T) {
	r := newLevel3Rig(t)
	l := r.lead(fastCfg(), nil)
	id := uuid.Must(uuid.NewV7()).String()
	deadline := time.Now().Add(-3 * time.Second)
	r.log.setGate(func(c fsm.Command) {
		if c.Type() == fsm.CmdPresumeAbort {
			r.log.setGate(nil)
			// A deposed leader's fast commit, committed just ahead of the presumed abort.
			r.log.preload(t, &fsm.FastDecide{Begin: fsm.Begin{ID: id, CreatedAt: deadline.Add(-time.Second).UnixMilli(), Deadline: deadline.UnixMilli(),
				Participants: []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}}}, Decision: fsm.DecisionCommit})
		}
	})
	if a := inquire(t, l, id, deadline); a.Outcome != coordinator.OutcomeCommitted {
		t.Fatalf("answer %+v, want the decision logged first", a)
	}
	if tx, _ := r.fsm.Get(id); tx.Status != fsm.StatusCommitting {
		t.Fatalf("FSM holds %s", describe(tx))
	}
}

// TestInquireRefusals: nothing is logged when the cluster lacks feature level 3, when the
// deadline is before the retention horizon, or when this node does not lead; an archived
// record answers for a pruned one.
func TestInquireRefusals(t *testing.T) {
	past := time.Now().Add(-time.Minute)
	t.Run("feature level", func(t *testing.T) {
		r := newRig(t)
		cfg := fastCfg()
		errGate := errors.New("needs feature level 3")
		cfg.FeatureGate = func(need uint32, what string) error { return errGate }
		l := r.lead(cfg, nil)
		if _, err := l.eng.Inquire(context.Background(), "x", past); !errors.Is(err, errGate) || r.log.len() != 0 {
			t.Fatalf("err %v, %d entries", err, r.log.len())
		}
	})
	t.Run("horizon", func(t *testing.T) {
		r := newLevel3Rig(t)
		r.log.preload(t, &fsm.Prune{FinishedBefore: time.Now().UnixMilli()})
		l := r.lead(fastCfg(), nil)
		n := r.log.len()
		if _, err := l.eng.Inquire(context.Background(), "x", past); !errors.Is(err, coordinator.ErrNotKept) || r.log.len() != n {
			t.Fatalf("err %v, %d entries", err, r.log.len()-n)
		}
	})
	t.Run("archived", func(t *testing.T) {
		r := newLevel3Rig(t)
		r.log.preload(t, &fsm.Prune{FinishedBefore: time.Now().UnixMilli()})
		cfg := fastCfg()
		cfg.Archived = func(id string) (*fsm.Txn, bool, error) {
			return &fsm.Txn{ID: id, Status: fsm.StatusCommitted, Decision: fsm.DecisionCommit}, id == "old", nil
		}
		l := r.lead(cfg, nil)
		if a := inquire(t, l, "old", past); a.Outcome != coordinator.OutcomeCommitted || !a.Archived {
			t.Fatalf("archived: %+v", a)
		}
	})
	t.Run("not leading", func(t *testing.T) {
		r := newLevel3Rig(t)
		eng := coordinator.New(fastCfg(), r.log, r.fsm, r.client)
		if _, err := eng.Inquire(context.Background(), "x", past); !errors.Is(err, coordinator.ErrNotLeader) || r.log.len() != 1 {
			t.Fatalf("err %v", err)
		}
	})
}

// TestPrepareCarriesInquiryURLs: every Prepare names where to ask (Config.InquiryURLs);
// Commit and Rollback do not.
func TestPrepareCarriesInquiryURLs(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	cfg := fastCfg()
	urls := []string{"http://10.0.0.1:8080", "http://10.0.0.2:8080"}
	cfg.InquiryURLs = func() []string { return urls }
	l := r.lead(cfg, nil)
	txn := l.submit(t, roomy, fps...)
	r.waitTerminal(t, txn.ID)
	l.caller.mu.Lock()
	defer l.caller.mu.Unlock()
	for _, c := range l.caller.calls {
		want := urls
		if c.Phase != prepare {
			want = nil
		}
		if !slices.Equal(c.Inquiry, want) {
			t.Errorf("%s to %s: inquiry %q, want %q", c.Phase, c.URL, c.Inquiry, want)
		}
	}
}
