package coordinator_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// TestPhaseTwoRetriedByTimeNotAttempts (issue 14, item 2): with no attempt cap (the
// default) a participant that answers 500 to Commit far more often than the old cap of 30
// is retried until it recovers, and the transaction ends committed. Meanwhile it is
// committing with the participant's last error and attempts in the log (what /v1/stuck
// lists).
func TestPhaseTwoRetriedByTimeNotAttempts(t *testing.T) {
	fps := newFPs(t, 2)
	fps[1].FailFirst(commit, 60, participanttest.Status(500, "ledger down"))
	r := newRig(t)
	cfg := fastCfg()
	cfg.PhaseTwoMaxAttempts = 0 // the default: time alone
	cfg.RetryMax = 2 * time.Millisecond
	l := r.lead(cfg, nil)
	txn := l.submit(t, roomy, fps...)
	mid := r.waitFor(t, txn.ID, "committing with FP-B's error in the log", func(x *fsm.Txn) bool {
		return x != nil && x.Status == fsm.StatusCommitting && x.States[1].LastError != "" && x.States[0].Acked
	})
	if !strings.Contains(mid.States[1].LastError, "HTTP 500: ledger down") {
		t.Errorf("last error %q", mid.States[1].LastError)
	}
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusCommitted || got.States[1].Attempts != 61 {
		t.Fatalf("got %s, want committed after 61 attempts", describe(got))
	}
	counts(t, fps[1], 1, 61, 0)
}

// TestPhaseTwoWindowEnds: past PhaseTwoRetryFor from the decision, a participant still
// refusing makes the transaction failed (heuristic), with its last error; the decision stays.
func TestPhaseTwoWindowEnds(t *testing.T) {
	fps := newFPs(t, 2)
	fps[1].Set(commit, participanttest.Status(500, "ledger down"))
	r := newRig(t)
	cfg := fastCfg()
	cfg.PhaseTwoMaxAttempts = 0
	cfg.PhaseTwoRetryFor = 100 * time.Millisecond
	l := r.lead(cfg, nil)
	txn := l.submit(t, roomy, fps...)
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusFailed || got.Decision != fsm.DecisionCommit || got.States[1].Attempts < 2 {
		t.Fatalf("got %s, want failed after several attempts", describe(got))
	}
	if got.FinishedAt < got.DecidedAt+100 {
		t.Errorf("failed %d ms after the decision, before the 100 ms window ended", got.FinishedAt-got.DecidedAt)
	}
	counts(t, fps[1], 1, int(got.States[1].Attempts), 0)
}

// deadParticipant is a participant at deadURL: every call to it is refused before a
// request is written.
func deadParticipant(t *testing.T) (string, fsm.Participant) {
	d := deadURL(t)
	return d, fsm.Participant{Prepare: d + "/prepare", Commit: d + "/commit", Rollback: d + "/rollback"}
}

// deadURL returns the base URL of a loopback port where nothing listens (a typo'd URL:
// every call is refused before a request is written).
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// TestConnectionRefusedEndsRolledBack (issue 14, item 2): a participant URL where nothing
// listens (a typo) never received a call: the transaction ends rolled_back, not failed,
// with a clear error, and no Rollback is sent there; the others get theirs.
func TestConnectionRefusedEndsRolledBack(t *testing.T) {
	fps := newFPs(t, 2)
	dead, deadP := deadParticipant(t)
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	ps := append(parts(fps...), deadP)
	txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	got := r.waitTerminal(t, txn.ID)
	if got.Status != fsm.StatusRolledBack {
		t.Fatalf("got %s, want rolled_back", describe(got))
	}
	line := ""
	for _, e := range got.Errors() {
		if strings.HasPrefix(e, dead+"/prepare: ") {
			line = e
		}
	}
	if !strings.Contains(line, "connection refused") || !strings.Contains(line, "never delivered: no rollback needed") {
		t.Errorf("errors %q: want the refused participant named with its reason", got.Errors())
	}
	if n := len(l.caller.times(dead + "/rollback")); n != 0 {
		t.Errorf("%d rollbacks sent to a participant that never received a call", n)
	}
	for _, fp := range fps { // their Prepare may have been cut short by the refusal, even before it was sent
		prep, rb := fp.Count(participant.PhasePrepare), fp.Count(rollback)
		if prep > 1 || fp.Count(commit) != 0 || rb > 1 || prep > 0 && rb != 1 {
			t.Errorf("%s: %d prepares, %d commits, %d rollbacks; want at most 1, 0, and a Rollback for a Prepare that arrived", fp.URL(), prep, fp.Count(commit), rb)
		}
	}
}

// TestNeverDeliveredSurvivesLeaderChange (issue 14, item 2): that no call ever reached a
// participant is known only to the term that sent its Prepare; it is logged before the
// other Rollbacks, so a later leader that finishes phase two never calls that URL either
// and the transaction still ends rolled_back, not failed after the retry window.
func TestNeverDeliveredSurvivesLeaderChange(t *testing.T) {
	fps := newFPs(t, 1)
	// The other participant's Rollback hangs: no failed attempt (whose Progress entry would
	// carry every report anyway) before the leader changes.
	fps[0].Set(rollback, participanttest.Hang())
	dead, deadP := deadParticipant(t)
	r := newRig(t)
	l1 := r.lead(fastCfg(), nil)
	// The dead URL is tried once the live participant has its Prepare, so that the refusal
	// (which cancels the other Prepares) cannot come before that one was sent.
	l1.afterArrival(t, dead+"/prepare", fps[0])
	ps := append(parts(fps...), deadP)
	txn, err := l1.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, txn.ID, "rolling_back with the unreached participant logged as acknowledged", func(x *fsm.Txn) bool {
		return x != nil && x.Status == fsm.StatusRollingBack && x.States[1].Acked
	})
	waitFP(t, fps[0], "its Rollback arrived (and hangs)", func() bool { return fps[0].Count(rollback) > 0 })
	l1.stop(t)
	fps[0].Set(rollback, participanttest.ACK())
	fps[0].Release(rollback)
	l2 := r.lead(fastCfg(), nil)
	if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusRolledBack {
		t.Fatalf("got %s, want rolled_back", describe(got))
	}
	for i, l := range []*leader{l1, l2} {
		if n := len(l.caller.times(dead + "/rollback")); n != 0 {
			t.Errorf("leader %d sent %d rollbacks to a participant that never received a call", i+1, n)
		}
	}
}

// resetter is a participant that answers Commit with 500 on a new connection and, on a
// reused keep-alive connection, reads the request and then resets the connection; it ACKs
// once it has seen ackAfter requests. It counts every request it read.
type resetter struct {
	srv      *httptest.Server
	requests atomic.Int64
	ackAfter int64
}

type connCount struct{}

func newResetter(t *testing.T, ackAfter int64) *resetter {
	rs := &resetter{ackAfter: ackAfter}
	rs.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/commit") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ACK"}`))
			return
		}
		n := rs.requests.Add(1)
		if n >= rs.ackAfter {
			_, _ = w.Write([]byte(`{"status":"ACK"}`))
			return
		}
		if r.Context().Value(connCount{}).(*atomic.Int64).Add(1) > 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
			return
		}
		http.Error(w, "busy", http.StatusInternalServerError)
	}))
	rs.srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connCount{}, new(atomic.Int64))
	}
	rs.srv.Start()
	t.Cleanup(rs.srv.Close)
	return rs
}

// TestPhaseTwoAttemptsEqualRequests (issue 14, item 3): a participant that resets reused
// keep-alive connections sees exactly as many Commit requests as the attempts the log
// records: no transport-level replay.
func TestPhaseTwoAttemptsEqualRequests(t *testing.T) {
	rs := newResetter(t, 12)
	r := newRig(t)
	cfg := fastCfg()
	cfg.PhaseTwoMaxAttempts = 0
	l := r.lead(cfg, nil)
	u := rs.srv.URL
	txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: []fsm.Participant{{Prepare: u + "/prepare", Commit: u + "/commit", Rollback: u + "/rollback"}}, Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	got := r.waitStatus(t, txn.ID, fsm.StatusCommitted)
	if seen := rs.requests.Load(); seen != int64(got.States[0].Attempts) || seen != 12 {
		t.Fatalf("participant saw %d Commit requests, the log records %d attempts (want 12 each)", seen, got.States[0].Attempts)
	}
	if n := len(l.caller.times(u + "/commit")); n != 12 {
		t.Fatalf("the engine made %d Commit calls, want 12", n)
	}
}

// TestLateACKIsNoVote (issue 14, item 5): an ACK the leader reads at or after the logged
// deadline is no vote: the transaction rolls back, naming how late it was.
func TestLateACKIsNoVote(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	var skew atomic.Int64 // added to the engine's clock once FP-B's ACK is read
	cfg := fastCfg()
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	wc := &skewCaller{inner: r.client, after: func(url string) {
		if url == fps[1].Endpoints().Prepare {
			skew.Store(int64(2 * roomy)) // the leader stalled past the deadline while reading it
		}
	}}
	eng := coordinator.New(cfg, r.log, r.fsm, wc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Lead(ctx, 1) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "engine leading", eng.Leading)
	// FP-A answers only once FP-B's late ACK has been read.
	fps[0].Set(participant.PhasePrepare, participanttest.Behavior{Hold: true})
	txn, err := eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	waitFP(t, fps[1], "B prepared", func() bool { return fps[1].Count(participant.PhasePrepare) == 1 })
	eventually(t, "B's ACK read", func() bool { return skew.Load() != 0 })
	fps[0].Release(participant.PhasePrepare)
	got := r.waitTerminal(t, txn.ID)
	if got.Decision != fsm.DecisionAbort || got.States[1].Vote != fsm.VoteNone {
		t.Fatalf("got %s, want abort with B's vote none", describe(got))
	}
	if !strings.Contains(got.States[1].Reason, "ACK arrived") || !strings.Contains(got.States[1].Reason, "after the deadline") {
		t.Errorf("B's reason %q", got.States[1].Reason)
	}
}

// skewCaller runs after(url) once a call to url has returned.
type skewCaller struct {
	inner coordinator.Caller
	after func(url string)
}

func (s *skewCaller) Call(ctx context.Context, url string, p participant.Phase, req participant.Request) (participant.Reply, error) {
	rep, err := s.inner.Call(ctx, url, p, req)
	s.after(url)
	return rep, err
}

// pauseCaller holds every Commit call of one leader before it reaches the client, until
// released: the leader is "paused" mid phase two.
type pauseCaller struct {
	inner   coordinator.Caller
	held    atomic.Int64
	release chan struct{}
	sent    atomic.Int64 // calls that returned without a fence refusal
	fenced  atomic.Int64
}

func (p *pauseCaller) Call(ctx context.Context, url string, ph participant.Phase, req participant.Request) (participant.Reply, error) {
	if ph == participant.PhaseCommit {
		p.held.Add(1)
		<-p.release
	}
	rep, err := p.inner.Call(ctx, url, ph, req)
	var ce *call.CallError
	if errors.As(err, &ce) && ce.Kind == call.KindFenced {
		p.fenced.Add(1)
	} else if ph == participant.PhaseCommit {
		p.sent.Add(1)
	}
	return rep, err
}

// TestPausedLeaderSendsNothing (issue 14, item 4): leader A is paused with its Commit calls
// in hand; it loses leadership (its VerifyLeader now fails, but its term has not been
// cancelled yet, as for a process resuming from a pause) and leader B finishes the
// transaction. When A resumes, its fence finds its last confirmation older than the lease,
// asks, learns it was deposed, and not one of its calls reaches a participant.
func TestPausedLeaderSendsNothing(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	var aLeads atomic.Bool
	aLeads.Store(true)
	var verifies atomic.Int64
	cfgA := fastCfg()
	cfgA.FenceLease = time.Nanosecond // every call asks: the pause outlasts any lease
	cfgA.VerifyLeader = func(context.Context) error {
		verifies.Add(1)
		if !aLeads.Load() {
			return errors.New("node is not the leader")
		}
		return nil
	}
	pa := &pauseCaller{inner: r.client, release: make(chan struct{})}
	engA := coordinator.New(cfgA, r.log, r.fsm, pa)
	ctxA, cancelA := context.WithCancel(call.WithOrigin(context.Background(), "a", 1))
	doneA := make(chan struct{})
	go func() { defer close(doneA); engA.Lead(ctxA, 1) }()
	t.Cleanup(func() { cancelA(); <-doneA })
	eventually(t, "A leading", engA.Leading)

	txn, err := engA.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "A's commits held", func() bool { return pa.held.Load() == 2 })

	// A loses leadership; B (a later term) drives the transaction to the end.
	aLeads.Store(false)
	r.lead(fastCfg(), nil)
	r.waitStatus(t, txn.ID, fsm.StatusCommitted)
	before := []int{fps[0].Count(commit), fps[1].Count(commit)}

	// A resumes.
	close(pa.release)
	eventually(t, "A's held calls refused by its fence", func() bool { return pa.fenced.Load() >= 2 })
	cancelA() // A's term ends (it has heard of the new leader)
	<-doneA
	if n := pa.sent.Load(); n != 0 {
		t.Fatalf("paused leader sent %d Commit calls after losing leadership", n)
	}
	if after := []int{fps[0].Count(commit), fps[1].Count(commit)}; after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("participants got commits from A: %v -> %v", before, after)
	}
	counts(t, fps[0], 1, 1, 0)
	counts(t, fps[1], 1, 1, 0)
}

// TestFenceAfterDeadlineStillDecides: a new leader that resumes a transaction past its
// deadline, with fencing on, gets the calls' own timeouts (not fence refusals) and rolls
// the transaction back.
func TestFenceAfterDeadlineStillDecides(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	now := time.Now()
	r.log.preload(t, &fsm.Begin{ID: "late-1", CreatedAt: now.Add(-time.Minute).UnixMilli(), Deadline: now.Add(-59 * time.Second).UnixMilli(), Participants: parts(fps...)})
	cfg := fastCfg()
	cfg.VerifyLeader = func(context.Context) error { return nil }
	cfg.FenceLease = time.Nanosecond
	r.lead(cfg, nil)
	got := r.waitTerminal(t, "late-1")
	if got.Status != fsm.StatusRolledBack {
		t.Fatalf("got %s, want rolled_back", describe(got))
	}
}

// TestSeveralDeadURLsEndRolledBack (QA F15): with several URLs where nothing listens, the
// first refusal decides the transaction and cancels the other Prepares, some of them before
// they had a connection. None of those was ever written either: every dead URL is "never
// delivered: no rollback needed", none gets a Rollback, and the transaction ends
// rolled_back in both modes (not rolling_back until the retry window fails it).
func TestSeveralDeadURLsEndRolledBack(t *testing.T) {
	for _, mode := range []coordinator.Mode{coordinator.ModeDefault, coordinator.ModeFast} {
		t.Run(string(mode), func(t *testing.T) {
			fps := newFPs(t, 1)
			r := newLevel3Rig(t)
			l := r.lead(fastCfg(), nil)
			ps := parts(fps...)
			var dead []string
			for range 4 {
				d, p := deadParticipant(t)
				dead = append(dead, d)
				ps = append(ps, p)
			}
			txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy, Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			got := r.waitStatus(t, txn.ID, fsm.StatusRolledBack)
			for _, d := range dead {
				if n := len(l.caller.times(d + "/rollback")); n != 0 {
					t.Errorf("%d rollbacks sent to %s, which never received a call", n, d)
				}
			}
			for i, st := range got.States {
				if i > 0 && !strings.Contains(st.Reason, "no rollback needed") {
					t.Errorf("participant %d (%s): reason %q, want it named never delivered", i, ps[i].Prepare, st.Reason)
				}
			}
			if fps[0].Count(commit) != 0 || fps[0].Count(rollback) > 1 || len(fps[0].Held()) != 0 {
				t.Errorf("live participant: %d commits, %d rollbacks, holds %v", fps[0].Count(commit), fps[0].Count(rollback), fps[0].Held())
			}
		})
	}
}

// TestNeverDeliveredUnloggedIsNotAnswered (QA F19): when the entry that logs a
// never-delivered participant as acknowledged is lost with the leadership (a transfer, a
// partition), the client is not told rolled_back: the driver stops unsettled, so no answer
// is followed by a record still waiting on that participant.
func TestNeverDeliveredUnloggedIsNotAnswered(t *testing.T) {
	fps := newFPs(t, 1)
	dead, deadP := deadParticipant(t)
	r := newRig(t)
	r.log.fail(func(c fsm.Command) bool { _, ok := c.(*fsm.Progress); return ok }, raft.ErrLeadershipLost, false)
	l := r.lead(fastCfg(), nil)
	l.afterArrival(t, dead+"/prepare", fps[0])
	ps := append(parts(fps...), deadP)
	txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy})
	if err != nil {
		t.Fatal(err)
	}
	settled := l.eng.Settled(txn.ID)
	eventually(t, "the driver stopped", func() bool { return l.eng.Settled(txn.ID) == nil })
	if settled != nil {
		select {
		case <-settled:
			t.Fatal("settled (the client would be answered rolled_back) without the never-delivered participant logged")
		default:
		}
	}
	if got, _ := r.fsm.Get(txn.ID); got.Status != fsm.StatusRollingBack || got.States[1].Acked {
		t.Fatalf("record %s, want rolling_back with the unreached participant not yet acknowledged", describe(got))
	}
	if n := fps[0].Count(rollback); n != 0 {
		t.Errorf("%d Rollbacks sent before the never-delivered entry was logged", n)
	}
}
