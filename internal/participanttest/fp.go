// Package participanttest provides FP, a fake participant for tests of the coordinator: an
// httptest server that speaks txcoord's participant protocol (participant.Request in,
// participant.Reply out) with knobs per phase to inject the faults of the case files in
// ../shared/cases (C01, C02, C03, C08):
//
//   - the vote or acknowledgement (ACK, or NACK with a reason);
//   - a delay, or a hold until the test calls Release (channel based: tests need no sleeps);
//   - a status code, headers and raw body instead of a protocol reply (500, 401,
//     429 + Retry-After, 200 + HTML, 200 + an empty body, ...);
//   - dropping the connection, either before the call is processed (the request is lost) or
//     after it (the effect happened, the reply is lost);
//   - a script for the next calls of a phase, e.g. fail the first N then behave normally.
//
// It behaves as the participant contract asks of a real service: an ACKed Prepare holds the
// transaction's resources (a lock) until Commit or Rollback releases them; Rollback of a
// transaction it never prepared is acknowledged ("unknown txn, nothing to do", case C01);
// with tombstones on (the default) it remembers finished transactions and refuses a late
// Prepare for one of them (case C02).
//
// Every call is logged (transaction id, phase, arrival time, Idempotency-Key header, outcome)
// and the oracles O2 (no transaction both committed and rolled back here) and O3 (no lock
// held) can be checked at the end of a test. Wait blocks until a condition over the FP holds,
// re-checking it whenever a call arrives or finishes.
//
// The server speaks HTTP/1.1 only. call.Client never lets net/http re-send a request
// on another connection, so each call the coordinator makes shows up once in the log (a bare
// http.Transport would re-send a POST with an Idempotency-Key whose reused keep-alive
// connection broke before any reply).
package participanttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participant"
)

// Drop says whether and when the FP drops the connection instead of replying.
type Drop int

const (
	// DropNone replies normally.
	DropNone Drop = iota
	// DropBefore closes the connection without processing the call: the request is lost and
	// has no effect (a Prepare the participant "never saw").
	DropBefore
	// DropAfter processes the call (a Prepare takes its lock, a Commit releases it) and then
	// closes the connection without a reply: the effect happened, the answer is lost.
	DropAfter
)

// Behavior is how the FP answers one call. The zero value acknowledges (ACK).
type Behavior struct {
	// Vote is participant.ACK (also when empty) or participant.NACK. A NACK has no effect:
	// a refused Prepare takes no lock, a refused Commit or Rollback releases nothing.
	Vote participant.Status
	// Reason is the NACK's reason.
	Reason string
	// Code, when not zero, replaces the protocol reply: the FP answers with this HTTP status,
	// Header and Body as they are, and the call has no effect. Code 200 with a Body that is
	// not a protocol reply models garbage; 200 with an empty Body an empty reply.
	Code   int
	Header http.Header
	Body   string
	// Delay is waited before the call is processed. The wait does not end when the client
	// gives up: the call is still processed afterwards, as a slow service would (case C02).
	Delay time.Duration
	// Hold blocks the call before it is processed until Release is called for its phase or
	// the FP is closed; like Delay, a client that gave up does not end it.
	Hold bool
	// Drop drops the connection instead of replying (see Drop).
	Drop Drop
}

// ACK acknowledges (votes yes in phase one).
func ACK() Behavior { return Behavior{Vote: participant.ACK} }

// NACK refuses with reason (votes no in phase one).
func NACK(reason string) Behavior { return Behavior{Vote: participant.NACK, Reason: reason} }

// Status answers with HTTP code and body instead of a protocol reply.
func Status(code int, body string) Behavior { return Behavior{Code: code, Body: body} }

// RetryAfter answers with HTTP code and the header "Retry-After: <seconds>".
func RetryAfter(code, seconds int) Behavior {
	return Behavior{Code: code, Header: http.Header{"Retry-After": {fmt.Sprint(seconds)}}}
}

// Hang holds the call until Release (or Close).
func Hang() Behavior { return Behavior{Hold: true} }

// Call is one logged request.
type Call struct {
	TxnID          string
	Phase          participant.Phase
	At             time.Time // arrival
	IdempotencyKey string    // the Idempotency-Key header as received
	Traceparent    string    // the W3C traceparent header as received, "" for none
	// Outcome says how the call ended once it did: "ACK", "ACK: unknown txn, nothing to do"
	// (a Rollback for a transaction never prepared here), "ACK: nothing held, nothing to do",
	// "NACK: <reason>", "HTTP <code>", "dropped", "processed, then dropped"; "" while the
	// call is in progress.
	Outcome string
}

// FP is a fake participant. Create it with New; it is safe for concurrent use.
type FP struct {
	srv *httptest.Server

	mu         sync.Mutex
	behavior   map[participant.Phase]Behavior
	script     map[participant.Phase][]Behavior
	gates      map[participant.Phase]chan struct{}
	tombstones bool
	locks      map[string]struct{} // txns holding resources here
	finished   map[string]string   // txn -> "committed" or "rolled back"
	prepared   map[string]struct{} // txns whose Prepare was processed (ACK or tombstone NACK)
	calls      []*Call
	changed    chan struct{} // closed and replaced on every change (see Wait)
	closed     chan struct{}
	closeOnce  sync.Once
}

// New starts an FP that acknowledges every call, with tombstones on, and closes it when the
// test ends.
func New(tb testing.TB) *FP {
	f := &FP{
		behavior:   map[participant.Phase]Behavior{},
		script:     map[participant.Phase][]Behavior{},
		gates:      map[participant.Phase]chan struct{}{},
		tombstones: true,
		locks:      map[string]struct{}{},
		finished:   map[string]string{},
		prepared:   map[string]struct{}{},
		changed:    make(chan struct{}),
		closed:     make(chan struct{}),
	}
	for _, p := range phases {
		f.gates[p] = make(chan struct{})
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Start()
	tb.Cleanup(f.Close)
	return f
}

var phases = []participant.Phase{participant.PhasePrepare, participant.PhaseCommit, participant.PhaseRollback}

// Close releases every held call and shuts the server down. It is called at the end of the
// test; calling it earlier is fine.
func (f *FP) Close() {
	f.closeOnce.Do(func() {
		close(f.closed)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
}

// URL returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (f *FP) URL() string { return f.srv.URL }

// Endpoints returns the FP's three URLs: URL()+"/prepare", "/commit" and "/rollback".
func (f *FP) Endpoints() participant.Endpoints {
	return participant.Endpoints{Prepare: f.srv.URL + "/prepare", Commit: f.srv.URL + "/commit", Rollback: f.srv.URL + "/rollback"}
}

// Set makes b the behaviour of every later call of phase p (after any scripted ones).
func (f *FP) Set(p participant.Phase, b Behavior) {
	f.mu.Lock()
	f.behavior[p] = b
	f.mu.Unlock()
}

// Script queues bs for the next calls of phase p, one each, in order; afterwards the
// behaviour given to Set applies again.
func (f *FP) Script(p participant.Phase, bs ...Behavior) {
	f.mu.Lock()
	f.script[p] = append(f.script[p], bs...)
	f.mu.Unlock()
}

// FailFirst makes the next n calls of phase p fail, cycling through failures (e.g. a 500,
// then a NACK), after which the behaviour given to Set applies again.
func (f *FP) FailFirst(p participant.Phase, n int, failures ...Behavior) {
	if len(failures) == 0 {
		failures = []Behavior{Status(http.StatusInternalServerError, "injected failure")}
	}
	bs := make([]Behavior, n)
	for i := range bs {
		bs[i] = failures[i%len(failures)]
	}
	f.Script(p, bs...)
}

// SetTombstones turns tombstones on or off. With them off, a Prepare that arrives after the
// transaction's Rollback takes a lock again that nobody will release: the C02 run that shows
// why the participant contract requires tombstones.
func (f *FP) SetTombstones(on bool) {
	f.mu.Lock()
	f.tombstones = on
	f.mu.Unlock()
}

// Release lets every call of phase p that is held now go on; later calls that Hold wait
// for the next Release.
func (f *FP) Release(p participant.Phase) {
	f.mu.Lock()
	close(f.gates[p])
	f.gates[p] = make(chan struct{})
	f.mu.Unlock()
}

// Count returns how many calls of phase p arrived (whatever became of them).
func (f *FP) Count(p participant.Phase) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Phase == p {
			n++
		}
	}
	return n
}

// Calls returns the calls for transaction id, in arrival order.
func (f *FP) Calls(id string) []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.calls {
		if c.TxnID == id {
			out = append(out, *c)
		}
	}
	return out
}

// Log returns every call so far, in arrival order.
func (f *FP) Log() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Call, len(f.calls))
	for i, c := range f.calls {
		out[i] = *c
	}
	return out
}

// Held returns the transactions holding a lock here, sorted.
func (f *FP) Held() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.locks))
	for id := range f.locks {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// CheckO2 returns an error naming every transaction for which this FP received both a
// Commit and a Rollback (oracle O2), or nil.
func (f *FP) CheckO2() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]map[participant.Phase]bool{}
	for _, c := range f.calls {
		if seen[c.TxnID] == nil {
			seen[c.TxnID] = map[participant.Phase]bool{}
		}
		seen[c.TxnID][c.Phase] = true
	}
	var bad []string
	for id, ps := range seen {
		if ps[participant.PhaseCommit] && ps[participant.PhaseRollback] {
			bad = append(bad, id)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("O2 violated at %s: both commit and rollback received for %s", f.srv.URL, strings.Join(bad, ", "))
}

// CheckO3 returns an error naming every transaction that still holds a lock here (oracle
// O3), or nil.
func (f *FP) CheckO3() error {
	if held := f.Held(); len(held) > 0 {
		return fmt.Errorf("O3 violated at %s: locks still held by %s", f.srv.URL, strings.Join(held, ", "))
	}
	return nil
}

// Wait blocks until cond returns true, re-evaluating it each time a call arrives or ends
// (and once at the start). cond may call the FP's methods. It returns ctx.Err() if ctx ends
// first.
func (f *FP) Wait(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changedLocked wakes every Wait; f.mu is held.
func (f *FP) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *FP) serve(w http.ResponseWriter, r *http.Request) {
	p := participant.Phase(path.Base(r.URL.Path))
	if p != participant.PhasePrepare && p != participant.PhaseCommit && p != participant.PhaseRollback {
		http.Error(w, "unknown phase", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	var req participant.Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.TransactionID == "" {
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	call := &Call{TxnID: req.TransactionID, Phase: p, At: time.Now(), IdempotencyKey: r.Header.Get(participant.IdempotencyKeyHeader), Traceparent: r.Header.Get("Traceparent")}
	f.mu.Lock()
	b := f.behavior[p]
	if q := f.script[p]; len(q) > 0 {
		b, f.script[p] = q[0], q[1:]
	}
	gate := f.gates[p]
	f.calls = append(f.calls, call)
	f.changedLocked()
	f.mu.Unlock()

	outcome := f.answer(w, b, gate, req.TransactionID, p)
	f.mu.Lock()
	call.Outcome = outcome
	f.changedLocked()
	f.mu.Unlock()
}

// answer waits as b says, processes the call and writes (or drops) the reply; it returns the
// call's outcome for the log.
func (f *FP) answer(w http.ResponseWriter, b Behavior, gate chan struct{}, id string, p participant.Phase) string {
	if b.Delay > 0 {
		t := time.NewTimer(b.Delay)
		select {
		case <-t.C:
		case <-f.closed:
			t.Stop()
		}
	}
	if b.Hold {
		select {
		case <-gate:
		case <-f.closed:
		}
	}
	if b.Drop == DropBefore {
		drop(w)
		return "dropped"
	}
	if b.Code != 0 {
		for k, vs := range b.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(b.Code)
		_, _ = w.Write([]byte(b.Body))
		return fmt.Sprintf("HTTP %d", b.Code)
	}
	reply, note := f.process(id, p, b)
	if b.Drop == DropAfter {
		drop(w)
		return "processed, then dropped"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
	out := string(reply.Status)
	if reply.Reason != "" {
		out += ": " + reply.Reason
	} else if note != "" {
		out += ": " + note
	}
	return out
}

// process applies one call to the FP's state as a participant following the contract would.
func (f *FP) process(id string, p participant.Phase, b Behavior) (participant.Reply, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p == participant.PhasePrepare {
		f.prepared[id] = struct{}{}
	}
	if b.Vote == participant.NACK {
		reason := b.Reason
		if reason == "" {
			reason = "refused"
		}
		return participant.Reply{Status: participant.NACK, Reason: reason}, ""
	}
	switch p {
	case participant.PhasePrepare:
		if done, ok := f.finished[id]; ok && f.tombstones {
			return participant.Reply{Status: participant.NACK, Reason: "already " + done}, ""
		}
		f.locks[id] = struct{}{}
	case participant.PhaseCommit:
		delete(f.locks, id)
		f.finished[id] = "committed"
	case participant.PhaseRollback:
		_, held := f.locks[id]
		delete(f.locks, id)
		if _, ok := f.finished[id]; !ok {
			f.finished[id] = "rolled back"
		}
		if _, known := f.prepared[id]; !known {
			return participant.Reply{Status: participant.ACK}, "unknown txn, nothing to do"
		}
		if !held {
			return participant.Reply{Status: participant.ACK}, "nothing held, nothing to do"
		}
	}
	return participant.Reply{Status: participant.ACK}, ""
}

// drop closes the client's connection without a reply.
func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}
