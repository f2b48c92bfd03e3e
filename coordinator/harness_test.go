package coordinator_test

// The harness: the engine with a real fsm.FSM behind a synchronous in-memory Log, and a
// call.Client calling participanttest FPs over loopback. Nothing here sleeps to
// synchronise: outcomes are awaited with fsm.WaitFor or FP.Wait, and the few conditions
// that have no notification (goroutines gone, in-flight count) are polled with a bound.

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// waitBound bounds every wait in these tests; reaching it is a failure, not a timing.
const waitBound = 10 * time.Second

// entry is one command the memLog applied.
type entry struct {
	Index uint64
	Cmd   fsm.Command
	Res   fsm.Result
}

// logFault makes Apply fail for the commands match selects: before applying (nothing
// written) or after (the entry is in the FSM but the proposer is told otherwise: an unknown
// outcome such as raft.ErrLeadershipLost).
type logFault struct {
	match func(fsm.Command) bool
	err   error
	after bool
}

// memLog is a synchronous Log over a real FSM: it encodes each command with fsm.Encode,
// decodes it back (so every command crosses the log format), and applies it at the next
// index. It keeps every entry for the oracles.
type memLog struct {
	fsm *fsm.FSM

	mu      sync.Mutex
	index   uint64
	entries []entry
	faults  []logFault
	fired   int
	gate    func(fsm.Command) // called before each command is applied, outside mu
}

// setGate installs g, called with each command before it is applied (nil removes it).
func (l *memLog) setGate(g func(fsm.Command)) {
	l.mu.Lock()
	l.gate = g
	l.mu.Unlock()
}

func newMemLog(f *fsm.FSM) *memLog { return &memLog{fsm: f} }

func (l *memLog) Apply(_ context.Context, cmd fsm.Command) (fsm.Result, error) {
	dec, err := fsm.Decode(fsm.Encode(cmd))
	if err != nil {
		return fsm.Result{}, fmt.Errorf("memLog: %w", err)
	}
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		gate(dec)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var fault *logFault
	for i := range l.faults {
		if l.faults[i].match(dec) {
			fault = &l.faults[i]
			l.fired++
			break
		}
	}
	if fault != nil && !fault.after {
		return fsm.Result{}, fault.err
	}
	l.index++
	res := l.fsm.ApplyCommand(l.index, dec)
	l.entries = append(l.entries, entry{Index: l.index, Cmd: dec, Res: res})
	if fault != nil {
		return fsm.Result{}, fault.err
	}
	return res, nil
}

// preload applies cmd directly (as entries an earlier leader committed).
func (l *memLog) preload(t testing.TB, cmds ...fsm.Command) {
	t.Helper()
	for _, c := range cmds {
		l.mu.Lock()
		l.index++
		res := l.fsm.ApplyCommand(l.index, c)
		l.entries = append(l.entries, entry{Index: l.index, Cmd: c, Res: res})
		l.mu.Unlock()
		if res.Err != nil {
			t.Fatalf("preload %T: %v", c, res.Err)
		}
	}
}

func (l *memLog) fail(match func(fsm.Command) bool, err error, after bool) {
	l.mu.Lock()
	l.faults = append(l.faults, logFault{match: match, err: err, after: after})
	l.mu.Unlock()
}

func (l *memLog) clearFaults() {
	l.mu.Lock()
	l.faults = nil
	l.mu.Unlock()
}

func (l *memLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// all returns the entries applied so far.
func (l *memLog) all() []entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]entry(nil), l.entries...)
}

// entriesFor returns the entries that name transaction id (Complete: any of its items).
func entriesFor(l *memLog, id string) []entry {
	var out []entry
	for _, e := range l.all() {
		var ids []string
		switch c := e.Cmd.(type) {
		case *fsm.Begin:
			ids = []string{c.ID}
		case *fsm.Decide:
			ids = []string{c.ID}
		case *fsm.DecideCommit:
			ids = []string{c.ID}
		case *fsm.Progress:
			ids = []string{c.ID}
		case *fsm.Fail:
			ids = []string{c.ID}
		case *fsm.Complete:
			for _, it := range c.Items {
				ids = append(ids, it.ID)
			}
		}
		if slices.Contains(ids, id) {
			out = append(out, e)
		}
	}
	return out
}

func isDecide(c fsm.Command) bool {
	_, _, ok := decisionOf(c)
	return ok
}

// decisionOf returns the transaction and decision a Decide or DecideCommit entry logs.
func decisionOf(c fsm.Command) (string, fsm.Decision, bool) {
	switch d := c.(type) {
	case *fsm.Decide:
		return d.ID, d.Decision, true
	case *fsm.DecideCommit:
		return d.ID, fsm.DecisionCommit, true
	case *fsm.FastDecide:
		return d.ID, d.Decision, true
	}
	return "", 0, false
}

// checkO1 fails the test unless every transaction in the log has at most one decision:
// every Decide entry that applied for an id carries the same decision, and it is the one
// the FSM holds.
func checkO1(t testing.TB, l *memLog) {
	t.Helper()
	decided := map[string]fsm.Decision{}
	for _, e := range l.all() {
		id, dec, ok := decisionOf(e.Cmd)
		if !ok || e.Res.Err != nil {
			continue
		}
		if prev, ok := decided[id]; ok && prev != dec {
			t.Errorf("O1 violated: %s decided %v and %v", id, prev, dec)
		}
		decided[id] = dec
	}
	for id, d := range decided {
		if txn, _ := l.fsm.Get(id); txn == nil || txn.Decision != d {
			t.Errorf("O1: FSM holds %v for %s, the log decided %v", txn, id, d)
		}
	}
}

// checkFPs checks O2 and O3 at every FP.
func checkFPs(t testing.TB, fps ...*participanttest.FP) {
	t.Helper()
	for _, fp := range fps {
		if err := fp.CheckO2(); err != nil {
			t.Error(err)
		}
		if err := fp.CheckO3(); err != nil {
			t.Error(err)
		}
	}
}

// callRec is one Call as the watchCaller saw it.
type callRec struct {
	URL   string
	Phase participant.Phase
	ID    string
	At    time.Time // when the engine made the call
	// Inquiry is the request's inquiry URLs.
	Inquiry []string
}

// watchCaller wraps the real client: it records every call, counts calls in progress, and
// flags any call that starts after the leader it serves has stopped.
type watchCaller struct {
	inner coordinator.Caller

	mu sync.Mutex
	// before, when set, runs before each call is passed on (a test orders calls with it).
	before   func(url string)
	calls    []callRec
	inflight int
	stopped  bool
	late     []callRec
}

func (w *watchCaller) Call(ctx context.Context, url string, p participant.Phase, req participant.Request) (participant.Reply, error) {
	rec := callRec{URL: url, Phase: p, ID: req.TransactionID, At: time.Now(), Inquiry: req.Inquiry}
	w.mu.Lock()
	w.calls = append(w.calls, rec)
	if w.stopped {
		w.late = append(w.late, rec)
	}
	w.inflight++
	before := w.before
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.inflight--
		w.mu.Unlock()
	}()
	if before != nil {
		before(url)
	}
	return w.inner.Call(ctx, url, p, req)
}

// times returns when the engine called url (any phase), in order.
func (w *watchCaller) times(url string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for _, c := range w.calls {
		if c.URL == url {
			out = append(out, c.At)
		}
	}
	return out
}

// count returns how many calls of phase p the engine made.
func (w *watchCaller) count(p participant.Phase) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.calls {
		if c.Phase == p {
			n++
		}
	}
	return n
}

// rig is one "cluster" in memory: the FSM, the log, and a participant client shared by the
// leaders a test starts over them.
type rig struct {
	t      testing.TB
	fsm    *fsm.FSM
	log    *memLog
	client *call.Client
	// transport is the client's, kept so that a test can close its idle connections.
	transport *http.Transport
}

func newRig(t testing.TB) *rig {
	f := fsm.New()
	tr := &http.Transport{MaxIdleConnsPerHost: 256, Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &rig{t: t, fsm: f, log: newMemLog(f), transport: tr,
		client: call.NewClient(call.ClientOptions{Transport: tr})}
}

// roomy is the phase-one timeout of transactions that are meant to commit. The machine
// running the tests may be loaded (other test binaries, fuzzers): deadlines that are meant
// to be met are generous, and only deadlines meant to pass are tight.
const roomy = 10 * time.Second

// fastCfg is the engine configuration of these tests: retries in milliseconds, and a call
// timeout that only a hanging participant reaches.
func fastCfg() coordinator.Config {
	return coordinator.Config{
		RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		CallTimeout: roomy, PhaseTwoMaxAttempts: 30,
	}
}

// leader is one engine running Lead over the rig.
type leader struct {
	eng      *coordinator.Engine
	caller   *watchCaller
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// lead starts a new engine as the leader over the rig's FSM and log and waits until it
// accepts Submit. The test's cleanup stops it (before the FPs, created earlier, close).
func (r *rig) lead(cfg coordinator.Config, hooks *coordinator.Hooks) *leader {
	r.t.Helper()
	wc := &watchCaller{inner: r.client}
	eng := coordinator.New(cfg, r.log, r.fsm, wc)
	if hooks != nil {
		eng.SetHooks(hooks)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &leader{eng: eng, caller: wc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		eng.Lead(ctx, 1)
	}()
	eventually(r.t, "engine leading", eng.Leading)
	r.t.Cleanup(func() { l.stop(r.t) })
	return l
}

// stop ends the leader's term and waits for Lead to return. It then checks that no call was
// in progress when Lead returned, and from now on flags any call as late.
func (l *leader) stop(t testing.TB) {
	t.Helper()
	l.stopOnce.Do(func() {
		l.cancel()
		select {
		case <-l.done:
		case <-time.After(waitBound):
			t.Fatalf("Lead did not return within %v of losing leadership", waitBound)
		}
		l.caller.mu.Lock()
		l.caller.stopped = true
		inflight := l.caller.inflight
		l.caller.mu.Unlock()
		if inflight != 0 {
			t.Errorf("Lead returned with %d participant calls in progress", inflight)
		}
	})
}

// assertNoLateCalls fails the test if a call started after the leader stopped.
func (l *leader) assertNoLateCalls(t testing.TB) {
	t.Helper()
	l.caller.mu.Lock()
	defer l.caller.mu.Unlock()
	if len(l.caller.late) > 0 {
		t.Errorf("calls made after Lead returned: %+v", l.caller.late)
	}
}

// parts returns the FPs as fsm participants.
func parts(fps ...*participanttest.FP) []fsm.Participant {
	out := make([]fsm.Participant, len(fps))
	for i, fp := range fps {
		e := fp.Endpoints()
		out[i] = fsm.Participant{Prepare: e.Prepare, Commit: e.Commit, Rollback: e.Rollback}
	}
	return out
}

// submit starts a transaction over fps with the given phase-one timeout.
func (l *leader) submit(t testing.TB, timeout time.Duration, fps ...*participanttest.FP) *fsm.Txn {
	t.Helper()
	txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: timeout})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return txn
}

// waitTerminal waits until id is committed, rolled_back or failed and returns it.
func (r *rig) waitTerminal(t testing.TB, id string) *fsm.Txn {
	t.Helper()
	return r.waitFor(t, id, "terminal", func(x *fsm.Txn) bool { return x != nil && x.Status.Terminal() })
}

// waitStatus waits until id is terminal and fails the test unless its status is want.
func (r *rig) waitStatus(t testing.TB, id string, want fsm.Status) *fsm.Txn {
	t.Helper()
	got := r.waitTerminal(t, id)
	if got.Status != want {
		t.Fatalf("got %s, want %s", describe(got), want)
	}
	return got
}

func (r *rig) waitFor(t testing.TB, id, what string, cond func(*fsm.Txn) bool) *fsm.Txn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	txn, err := r.fsm.WaitFor(ctx, id, cond)
	if err != nil {
		t.Fatalf("waiting for %s to be %s: %v (last: %s)", id, what, err, describe(txn))
	}
	return txn
}

func describe(x *fsm.Txn) string {
	if x == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s decision=%v states=%+v errors=%q", x.Status, x.Decision, x.States, x.Errors())
}

// waitFP waits until cond holds at fp.
// nackAfterArrivals makes nacker refuse its Prepare with reason only once its own Prepare and
// every other's have arrived: the others were then sent theirs (a Prepare the refusal
// cancels before it was sent reaches nobody and needs no Rollback) and count as reached.
func nackAfterArrivals(t testing.TB, nacker *participanttest.FP, reason string, others ...*participanttest.FP) {
	nacker.Set(participant.PhasePrepare, participanttest.Behavior{Vote: participant.NACK, Reason: reason, Hold: true})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		for _, fp := range append([]*participanttest.FP{nacker}, others...) {
			if err := fp.Wait(ctx, func() bool { return fp.Count(participant.PhasePrepare) >= 1 }); err != nil {
				t.Errorf("waiting for %s's Prepare: %v", fp.URL(), err)
				return
			}
		}
		nacker.Release(participant.PhasePrepare)
	}()
}

// afterArrival makes l's calls to url wait until fp has received a Prepare: a refusal
// there (which cancels the other Prepares) then comes after fp's Prepare was sent.
func (l *leader) afterArrival(t testing.TB, url string, fp *participanttest.FP) {
	l.caller.mu.Lock()
	defer l.caller.mu.Unlock()
	l.caller.before = func(u string) {
		if u == url {
			waitFP(t, fp, "a Prepare at "+fp.URL(), func() bool { return fp.Count(participant.PhasePrepare) >= 1 })
		}
	}
}

func waitFP(t testing.TB, fp *participanttest.FP, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := fp.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting at %s for %s: %v; log %+v", fp.URL(), what, err, fp.Log())
	}
}

// eventually polls cond (for conditions without a notification) until it holds or
// waitBound passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // a poll interval, not a synchronisation
	}
}

// engineGoroutines returns the stacks of goroutines running engine or client code.
func engineGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "coordinator.(*Engine)") || strings.Contains(g, "participant.(*Client).Call") {
			out = append(out, g)
		}
	}
	return out
}

// checkNoLeak fails unless every engine goroutine is gone (they may be a few instructions
// from exiting when Lead returns, hence the bounded wait).
func checkNoLeak(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		gs := engineGoroutines()
		if len(gs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d engine goroutines left after Lead returned:\n%s", len(gs), strings.Join(gs, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// errorsContain fails unless txn.Errors() has the line want.
func errorsContain(t testing.TB, txn *fsm.Txn, want string) {
	t.Helper()
	for _, e := range txn.Errors() {
		if e == want {
			return
		}
	}
	t.Errorf("txn errors %q do not contain %q", txn.Errors(), want)
}
