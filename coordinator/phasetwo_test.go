package coordinator_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// TestC03_CommitRetriedUntilAcked: the decision is commit; FP-B answers Commit with 500,
// then 200 + NACK, alternately, 20 times, then ACKs. No Rollback is ever sent, the record
// stays committing with FP-B's attempts and last error visible (Progress entries) until the
// ACK, then it is committed.
func TestC03_CommitRetriedUntilAcked(t *testing.T) {
	fps := newFPs(t, 3)
	fps[1].FailFirst(commit, 20, participanttest.Status(500, "overloaded"), participanttest.NACK("busy"))
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, fps...)

	mid := r.waitFor(t, txn.ID, "committing with FP-B's failures recorded", func(x *fsm.Txn) bool {
		return x != nil && x.Status == fsm.StatusCommitting && x.States[1].Attempts >= 3 && x.States[1].LastError != ""
	})
	if !mid.States[0].Acked || !mid.States[2].Acked || mid.States[1].Acked {
		t.Errorf("progress while stuck: %+v", mid.States)
	}
	var line string
	for _, e := range mid.Errors() {
		if strings.HasPrefix(e, fps[1].Endpoints().Commit+": ") {
			line = e
		}
	}
	if !strings.Contains(line, "(attempt ") {
		t.Errorf("errors while stuck %q name no attempt of %s", mid.Errors(), fps[1].Endpoints().Commit)
	}

	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusCommitted {
		t.Fatalf("got %s, want committed", describe(got))
	}
	if got.States[1].Attempts != 21 {
		t.Errorf("FP-B attempts %d, want 21", got.States[1].Attempts)
	}
	counts(t, fps[0], 1, 1, 0)
	counts(t, fps[1], 1, 21, 0)
	counts(t, fps[2], 1, 1, 0)

	// The log's history: never rolling_back or failed; Progress shows both kinds of refusal.
	errs := map[string]bool{}
	var last fsm.Command
	for _, e := range entriesFor(r.log, txn.ID) {
		if e.Res.Txn == nil {
			continue
		}
		switch s := e.Res.Txn.Status; s {
		case fsm.StatusPreparing, fsm.StatusCommitting, fsm.StatusCommitted:
		default:
			t.Errorf("entry %d (%T) left status %v", e.Index, e.Cmd, s)
		}
		if p, ok := e.Cmd.(*fsm.Progress); ok {
			errs[p.Reports[1].Error] = true
			if e.Res.Txn.Status != fsm.StatusCommitting {
				t.Errorf("progress entry %d in status %v", e.Index, e.Res.Txn.Status)
			}
		}
		last = e.Cmd
	}
	if !errs["HTTP 500: overloaded"] || !errs["NACK: busy"] {
		t.Errorf("progress entries recorded errors %v, want both the 500 and the NACK", errs)
	}
	if _, ok := last.(*fsm.Complete); !ok {
		t.Errorf("last entry %T, want Complete", last)
	}
	checkFPs(t, fps...)
	checkO1(t, r.log)
}

// TestC03_CommitNeverAcked: FP-B never acknowledges Commit. After PhaseTwoMaxAttempts the
// transaction is failed (heuristic, needs an operator), the decision is still commit, and
// no Rollback was sent to anyone.
func TestC03_CommitNeverAcked(t *testing.T) {
	fps := newFPs(t, 3)
	fps[1].Set(commit, participanttest.Status(500, "down"))
	cfg := fastCfg()
	cfg.PhaseTwoMaxAttempts = 5
	r := newRig(t)
	l := r.lead(cfg, nil)
	txn := l.submit(t, roomy, fps...)
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusFailed || got.Decision != fsm.DecisionCommit {
		t.Fatalf("got %s, want failed with decision commit", describe(got))
	}
	errorsContain(t, got, fps[1].Endpoints().Commit+": HTTP 500: down (attempt 5)")
	if !got.States[0].Acked || !got.States[2].Acked || got.States[1].Acked {
		t.Errorf("states %+v", got.States)
	}
	counts(t, fps[0], 1, 1, 0)
	counts(t, fps[1], 1, 5, 0)
	counts(t, fps[2], 1, 1, 0)
	checkFPs(t, fps[0], fps[2])
	if err := fps[1].CheckO2(); err != nil {
		t.Error(err)
	}
	// Failed is terminal: the engine leaves it to an operator.
	l.stop(t)
	if n := fps[1].Count(commit); n != 5 {
		t.Errorf("commit calls after failing: %d", n)
	}
}

// c08Replies are the participant replies of case C08.
type c08Reply struct {
	name       string
	b          participanttest.Behavior
	msg        string        // the call error the engine records ("" for hang: per phase)
	retryAfter time.Duration // the spacing phase two must keep
}

func c08Replies() []c08Reply {
	ra := func(code int) participanttest.Behavior { return participanttest.RetryAfter(code, 1) }
	return []c08Reply{
		{"401", participanttest.Status(401, "unauthorized"), "HTTP 401: unauthorized", 0},
		{"403", participanttest.Status(403, "forbidden"), "HTTP 403: forbidden", 0},
		{"404", participanttest.Status(404, "not found"), "HTTP 404: not found", 0},
		{"405", participanttest.Status(405, ""), "HTTP 405", 0},
		{"413", participanttest.Status(413, "too large"), "HTTP 413: too large", 0},
		{"429+Retry-After", ra(429), "HTTP 429", time.Second},
		{"500", participanttest.Status(500, "internal"), "HTTP 500: internal", 0},
		{"502", participanttest.Status(502, "bad gateway"), "HTTP 502: bad gateway", 0},
		{"503", participanttest.Status(503, "unavailable"), "HTTP 503: unavailable", 0},
		{"503+Retry-After", ra(503), "HTTP 503", time.Second},
		{"200+HTML", participanttest.Status(200, "<html><body>Sign in</body></html>"), "invalid reply: not JSON: <html><body>Sign in</body></html>", 0},
		{"200+empty", participanttest.Status(200, ""), "invalid reply: empty body", 0},
		{"hang", participanttest.Hang(), "", 0}, // msg depends on the phase
	}
}

// TestC08_UnclassifiedRepliesOnPrepare: on Prepare only an explicit ACK counts; every other
// reply (and no reply) is a no, and the transaction rolls back with the reason recorded.
func TestC08_UnclassifiedRepliesOnPrepare(t *testing.T) {
	for _, tc := range c08Replies() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fps := newFPs(t, 2)
			fps[1].Set(prepare, tc.b)
			r := newRig(t)
			l := r.lead(fastCfg(), nil)
			timeout := roomy
			if tc.b.Hold {
				timeout = 150 * time.Millisecond
			}
			txn := l.submit(t, timeout, fps...)
			got := r.waitTerminal(t, txn.ID)
			if got.Status != fsm.StatusRolledBack {
				t.Fatalf("got %s, want rolled_back", describe(got))
			}
			msg := tc.msg
			if msg == "" {
				msg = "no answer within 150 ms"
			}
			errorsContain(t, got, fps[1].Endpoints().Prepare+": "+msg)
			// (A hanging FP-B may not even have received the Prepare on a loaded machine.) A's
			// Prepare may have been canceled before it was sent once B refused: A then needs
			// no Rollback; one that arrived gets exactly one.
			aPrep, aRb := fps[0].Count(prepare), fps[0].Count(rollback)
			if fps[1].Count(prepare) > 1 || fps[1].Count(rollback) != 1 || aRb > 1 || aPrep > 0 && aRb != 1 {
				t.Errorf("calls: A %+v, B %+v", fps[0].Log(), fps[1].Log())
			}
			fps[1].Release(prepare)
			checkFPs(t, fps...)
		})
	}
}

// TestC08_UnclassifiedRepliesInPhaseTwo: on Commit and on Rollback every such reply is
// retried with exponential backoff (O5: a bounded rate, never a tight loop), Retry-After is
// honoured, and after the attempt limit the transaction is failed with the reason recorded;
// the decision does not change.
func TestC08_UnclassifiedRepliesInPhaseTwo(t *testing.T) {
	const (
		retryInitial = 10 * time.Millisecond
		callTimeout  = 100 * time.Millisecond // for the hanging participant only
	)
	// Every case runs at once (each with its own FSM, engine and FPs): they spend their time
	// waiting, so the test takes as long as the slowest case, not their sum.
	type run struct {
		phase participant.Phase
		tc    c08Reply
		cfg   coordinator.Config
		fps   []*participanttest.FP
		r     *rig
		l     *leader
		txn   *fsm.Txn
	}
	var runs []run
	for _, phase := range []participant.Phase{commit, rollback} {
		for _, tc := range c08Replies() {
			cfg := fastCfg()
			cfg.RetryInitial, cfg.RetryMax = retryInitial, 50*time.Millisecond
			if tc.b.Hold {
				cfg.CallTimeout = callTimeout
			}
			cfg.PhaseTwoMaxAttempts = 8
			if tc.retryAfter > 0 {
				cfg.PhaseTwoMaxAttempts = 3 // two waits of a second each
			}
			fps := newFPs(t, 2)
			fps[1].Set(phase, tc.b)
			if phase == rollback {
				nackAfterArrivals(t, fps[0], "no seats", fps[1]) // FP-B got a Prepare: it is sent Rollback
			}
			r := newRig(t)
			l := r.lead(cfg, nil)
			runs = append(runs, run{phase, tc, cfg, fps, r, l, l.submit(t, roomy, fps...)})
		}
	}
	for _, ru := range runs {
		phase, tc, cfg, fps, r, l, txn := ru.phase, ru.tc, ru.cfg, ru.fps, ru.r, ru.l, ru.txn
		t.Run(string(phase)+"/"+tc.name, func(t *testing.T) {
			got := r.waitTerminal(t, txn.ID)
			wantDecision := fsm.DecisionCommit
			if phase == rollback {
				wantDecision = fsm.DecisionAbort
			}
			if got.Status != fsm.StatusFailed || got.Decision != wantDecision {
				t.Fatalf("got %s, want failed with decision %v", describe(got), wantDecision)
			}
			msg := tc.msg
			if msg == "" {
				msg = "no answer within " + strconv.FormatInt(cfg.CallTimeout.Milliseconds(), 10) + " ms"
			}
			n := cfg.PhaseTwoMaxAttempts
			errorsContain(t, got, fps[1].Endpoints().URL(phase)+": "+msg+" (attempt "+strconv.Itoa(n)+")")

			// O5: exactly the attempt limit, spaced by at least the backoff's lower bound
			// (RetryInitial less the jitter) or the Retry-After. Times are taken where the
			// engine makes the calls (a call that times out may never reach the FP).
			at := l.caller.times(fps[1].Endpoints().URL(phase))
			if len(at) != n {
				t.Fatalf("%d %s calls, want %d", len(at), phase, n)
			}
			if got := fps[1].Count(phase); got > n || (!tc.b.Hold && got != n) {
				t.Errorf("FP-B received %d %s calls, engine made %d", got, phase, n)
			}
			minGap := retryInitial / 2
			if tc.retryAfter > 0 {
				minGap = tc.retryAfter
			}
			for i := 1; i < len(at); i++ {
				if gap := at[i].Sub(at[i-1]); gap < minGap {
					t.Errorf("calls %d and %d only %v apart, want >= %v", i-1, i, gap, minGap)
				}
			}
			if tc.retryAfter == 0 {
				// Backoff grows: the last gaps are near RetryMax, not RetryInitial.
				if span := at[len(at)-1].Sub(at[0]); span < 100*time.Millisecond {
					t.Errorf("%d calls within %v: backoff does not grow", n, span)
				}
			}
			other := commit
			if phase == commit {
				other = rollback
			}
			if c := fps[0].Count(other) + fps[1].Count(other); c != 0 {
				t.Errorf("%d %s calls: the decision flipped", c, other)
			}
			if err := fps[1].CheckO2(); err != nil {
				t.Error(err)
			}
			fps[1].Release(phase)
		})
	}
}

// TestRetryAfterIsCapped: a participant asking for an hour's pause gets RetryAfterMax.
func TestRetryAfterIsCapped(t *testing.T) {
	fps := newFPs(t, 1)
	fps[0].FailFirst(commit, 2, participanttest.RetryAfter(http.StatusTooManyRequests, 3600))
	cfg := fastCfg()
	cfg.RetryAfterMax = 30 * time.Millisecond
	r := newRig(t)
	l := r.lead(cfg, nil)
	txn := l.submit(t, roomy, fps...)
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusCommitted || got.States[0].Attempts != 3 {
		t.Fatalf("got %s", describe(got))
	}
	var at []time.Time
	for _, c := range fps[0].Log() {
		if c.Phase == commit {
			at = append(at, c.At)
		}
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 30*time.Millisecond {
			t.Errorf("gap %v below the capped Retry-After", gap)
		}
	}
}
