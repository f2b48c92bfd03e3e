package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/demo"
)

// c04 is the kill-point matrix's environment: a 3-node cluster of real processes, the three
// demo participants behind fault proxies, and helpers to reach each kill point.
type c04 struct {
	t       *testing.T
	c       *Cluster
	cfg     Config
	proxies []*faultProxy // by participant index: 0 flight, 1 hotel, 2 payment
	http    *http.Client
	bound   time.Duration
	n       int
	// answers holds, by idempotency key, what the POST got back (status and body, or the
	// error): a transaction that never appears says why.
	answers sync.Map
}

// cellResult is one row of the matrix.
type cellResult struct {
	Cell     string
	Hit      bool   // the kill landed in the intended state (verified after the fact)
	Evidence string // how that was verified, or why it missed
	Final    string
	Took     time.Duration // kill -> terminal status seen on a surviving node
	Tries    int
}

// TestC04_ResumeEveryNonTerminalState is case C04 (../shared/cases/C04.md) as a kill-point
// matrix on real processes: for each cell the leader is SIGKILLed with one transaction in
// that state, and the new leader must drive it to a terminal state within
// 2 x election timeout + the phase-two retry interval + slack (TXCOORD_C04_SLACK, 1.5s);
// then O1-O5 and the atomicity checker run over every transaction. It runs only with
// TXCOORD_C04 or TXCOORD_CHAOS set:
//
//	TXCOORD_C04=1 go test -run TestC04_ -v ./internal/chaos
func TestC04_ResumeEveryNonTerminalState(t *testing.T) {
	if os.Getenv("TXCOORD_C04") == "" && os.Getenv("TXCOORD_CHAOS") == "" {
		t.Skip("set TXCOORD_C04=1 (or TXCOORD_CHAOS=1) to run the C04 kill-point matrix on real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	loadStart := loadAvg()
	cfg := Config{Nodes: 3, Seed: 4, Out: os.Stdout}
	cfg.defaults()
	dir, err := os.MkdirTemp("", "txcoord-c04-")
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("TXCOORD_CHAOS_BIN")
	if bin == "" {
		if bin, err = BuildBinary(ctx, dir); err != nil {
			t.Fatal(err)
		}
	}
	ev := newEventLog(os.Stdout)
	c, err := StartCluster(ctx, cfg, bin, dir, ev)
	if err != nil {
		t.Fatalf("start cluster (logs in %s): %v", dir, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Printf("\n===== C04 FAILED; logs in %s =====\n", dir)
			c.DumpLogs(os.Stdout, 60)
		}
		c.Close()
		if !t.Failed() && os.Getenv("TXCOORD_CHAOS_KEEP") == "" {
			os.RemoveAll(dir)
		}
	})
	e := &c04{t: t, c: c, cfg: cfg, http: &http.Client{Timeout: 60 * time.Second}}
	slack := envDuration(t, "TXCOORD_C04_SLACK", 1500*time.Millisecond)
	const retryInitial = 50 * time.Millisecond // coordinator.Config.RetryInitial's default
	e.bound = 2*cfg.ElectionTimeout + retryInitial + slack
	for _, p := range c.Parts {
		px, err := newFaultProxy(p.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(px.Close)
		e.proxies = append(e.proxies, px)
		// From here on the coordinator and the harness reach the participant through the
		// proxy, which passes everything through unless told otherwise.
		p.URL, p.Prepare = px.URL(), px.URL()+"/prepare"
	}

	var rows []cellResult
	run := func(name string, tries int, cell func(*c04) cellResult) {
		var r cellResult
		for i := 1; i <= tries; i++ {
			r = cell(e)
			r.Cell, r.Tries = name, i
			e.reset(ctx)
			if r.Hit || t.Failed() {
				break
			}
			t.Logf("%s: try %d missed the kill point: %s", name, i, r.Evidence)
		}
		rows = append(rows, r)
		if r.Final != "committed" && r.Final != "rolled_back" {
			t.Errorf("%s: transaction not terminal after the kill: %q", name, r.Final)
		} else if r.Took > e.bound {
			t.Errorf("%s: terminal %s after the kill, bound %s", name, r.Took.Round(time.Millisecond), e.bound)
		}
	}
	run("preparing, 0 Prepares answered", 1, cellPrepare(3, 10*time.Second, true))
	run("preparing, 0 answered, deadline passes in failover", 1, cellPrepare(3, 400*time.Millisecond, false))
	run("preparing, 1 of 3 ACKs in", 1, cellPrepare(2, 10*time.Second, true))
	run("preparing, 2 of 3 ACKs in (last delayed)", 1, cellPrepare(1, 10*time.Second, true))
	run("preparing, all ACKs in, no decision", 3, cellAllAcked)
	for _, d := range []string{"commit", "rollback"} {
		run(fmt.Sprintf("%s logged, 0 %ss acknowledged", d, d), 1, cellPhaseTwo(d, 0))
		run(fmt.Sprintf("%s logged, 1 %s acknowledged", d, d), 1, cellPhaseTwo(d, 1))
		run(fmt.Sprintf("%s logged, all %ss delivered, none acknowledged", d, d), 1, cellPhaseTwo(d, 3))
	}

	views, err := c.Quiesce(ctx, cfg.QuietTimeout)
	if err != nil {
		t.Errorf("quiet: %v", err)
	}
	o := c.CheckOracles(ctx, views, nil, cfg.PerTxnRateBound, cfg.PerSecondBound)
	for _, v := range o.Violations {
		t.Errorf("oracle: %s", v)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n===== C04 kill-point matrix: 3 nodes, heartbeat %s, election %s, lease %s; bound %s (2 x election + %s retry + %s slack); load average %s at start, %s at end =====\n",
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLease, e.bound, retryInitial, slack, loadStart, loadAvg())
	fmt.Fprintf(&b, "%-60s %-5s %-12s %-9s %s\n", "cell (leader SIGKILLed when ...)", "hit", "final", "took", "evidence")
	for _, r := range rows {
		hit := "yes"
		if !r.Hit {
			hit = "NO"
		}
		if r.Tries > 1 {
			hit += fmt.Sprintf("/%d", r.Tries)
		}
		fmt.Fprintf(&b, "%-60s %-5s %-12s %-9s %s\n", r.Cell, hit, r.Final, r.Took.Round(time.Millisecond), r.Evidence)
	}
	fmt.Fprintf(&b, "oracles over %d transactions: %s; checker: %s\n", len(views[c.Nodes[0].ID]), fmtCounts(o.ByStatus),
		strings.TrimSpace(strings.SplitN(o.Checker.String(), "\n", 2)[0]))
	fmt.Fprintf(&b, "violations: %d\n", len(o.Violations))
	fmt.Print(b.String())
}

// submit POSTs a 3-participant transaction to the leader in the background and returns its
// idempotency key and the leader it went to.
func (e *c04) submit(ctx context.Context, timeout time.Duration) (string, *Node) {
	e.t.Helper()
	leader, _, err := e.c.WaitLeader(ctx, 20*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.n++
	key := fmt.Sprintf("c04-%d-%d", time.Now().UnixNano(), e.n)
	body, _ := json.Marshal(map[string]any{"services": e.c.PrepareURLs(), "timeout": timeout.Milliseconds()})
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, leader.URL+"/v1/transactions", bytes.NewReader(body))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.http.Do(req)
		if err != nil {
			e.answers.Store(key, err.Error())
			return
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		e.answers.Store(key, fmt.Sprintf("HTTP %d %s", resp.StatusCode, b))
	}()
	return key, leader
}

// find waits until the transaction with the key is on node n.
func (e *c04) find(ctx context.Context, n *Node, key string) txnView {
	e.t.Helper()
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		txns, _ := fetchTxns(ctx, e.c.http, n.URL)
		for _, t := range txns {
			if t.Key == key {
				return t
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	answer, ok := e.answers.Load(key)
	if !ok {
		answer = "no answer yet"
	}
	e.t.Fatalf("transaction with key %s never appeared on %s (the POST: %v)", key, n.ID, answer)
	return txnView{}
}

// waitTxn polls node n until cond holds for transaction id.
func (e *c04) waitTxn(ctx context.Context, n *Node, id string, timeout time.Duration, cond func(txnView) bool) (txnView, bool) {
	end := time.Now().Add(timeout)
	var t txnView
	for time.Now().Before(end) {
		var ok bool
		if t, ok = getTxn(ctx, e.c.http, n.URL, id, time.Second); ok && cond(t) {
			return t, true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return t, false
}

// waitRequest polls participant i's request log until it holds a finished call of phase
// for id.
func (e *c04) waitRequest(ctx context.Context, i int, id, phase string, timeout time.Duration) (demo.LoggedRequest, bool) {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		reqs, _ := e.c.Requests(ctx, e.c.Parts[i], id)
		for _, r := range reqs {
			if string(r.Phase) == phase {
				return r, true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return demo.LoggedRequest{}, false
}

// doneBefore counts the participants that finished a call of phase for id before at.
func (e *c04) doneBefore(ctx context.Context, id, phase string, at time.Time) (n int, total int) {
	for _, p := range e.c.Parts {
		reqs, _ := e.c.Requests(ctx, p, id)
		for _, r := range reqs {
			if string(r.Phase) == phase && r.Done.Before(at) {
				n++
				break
			}
		}
	}
	return n, len(e.c.Parts)
}

// terminal waits for id to be terminal on a surviving node; it returns the final view and
// the time from at.
func (e *c04) terminal(ctx context.Context, id string, at time.Time) (txnView, time.Duration) {
	end := time.Now().Add(30 * time.Second)
	var last txnView
	for time.Now().Before(end) {
		for _, n := range e.c.Nodes {
			if !n.proc.running() || n.proc.isPaused() {
				continue
			}
			if t, ok := getTxn(ctx, e.c.http, n.URL, id, 200*time.Millisecond); ok {
				last = t
				if terminal(t.Status) {
					return t, time.Since(at)
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return last, time.Since(at)
}

// reset releases the proxies, clears the knobs, restarts and continues every node and
// waits until all are ready.
func (e *c04) reset(ctx context.Context) {
	for _, p := range e.proxies {
		p.Release()
	}
	if err := e.c.HealAll(); err != nil {
		e.t.Errorf("heal: %v", err)
	}
	if err := e.c.ClearFaults(ctx); err != nil {
		e.t.Errorf("clear knobs: %v", err)
	}
	if err := e.c.WaitAllReady(ctx, 30*time.Second); err != nil {
		e.t.Errorf("after a cell: %v", err)
	}
	if _, _, err := e.c.WaitLeader(ctx, 30*time.Second); err != nil {
		e.t.Errorf("after a cell: %v", err)
	}
}

func (e *c04) kill(leader *Node) time.Time {
	at := time.Now()
	if err := e.c.Kill(leader); err != nil {
		e.t.Errorf("kill %s: %v", leader.ID, err)
	}
	return at
}

// cellPrepare kills the leader while the transaction (timeout `timeout`) is preparing and
// `delayed` of the three participants (the last ones) still sit on Prepare (delayMs 4000);
// the others have ACKed. With clear, the delays are removed right after the kill, so the
// new leader's repeated Prepares are answered at once (the old ones land later and get the
// same vote) and it commits; without, the logged deadline passes during the failover and the
// new leader must roll back (presumed abort), the late Prepares then meeting a tombstone.
func cellPrepare(delayed int, timeout time.Duration, clear bool) func(*c04) cellResult {
	return func(e *c04) cellResult {
		ctx := context.Background()
		for i := 3 - delayed; i < 3; i++ {
			if err := e.c.SetFaults(ctx, e.c.Parts[i], demo.Faults{DelayMS: 4000}); err != nil {
				e.t.Fatal(err)
			}
		}
		key, leader := e.submit(ctx, timeout)
		txn := e.find(ctx, leader, key)
		for i := 0; i < 3-delayed; i++ {
			if _, ok := e.waitRequest(ctx, i, txn.ID, "prepare", 5*time.Second); !ok {
				e.t.Fatalf("participant %d never answered Prepare", i)
			}
		}
		if delayed == 3 {
			time.Sleep(150 * time.Millisecond) // let the Prepares reach the participants
		}
		at := e.kill(leader)
		if clear {
			_ = e.c.ClearFaults(ctx)
		}
		final, took := e.terminal(ctx, txn.ID, at)
		acked, _ := e.doneBefore(ctx, txn.ID, "prepare", at)
		r := cellResult{Final: final.Status, Took: took}
		r.Hit = acked == 3-delayed && final.decidedAt().After(at)
		r.Evidence = fmt.Sprintf("%d of 3 Prepares answered before the kill; decided %s by the successor", acked, final.Decision)
		if !clear {
			deadline, _ := time.Parse(timeLayout, final.Deadline)
			r.Hit = r.Hit && deadline.After(at) && final.decidedAt().After(deadline)
			r.Evidence += fmt.Sprintf(", after the deadline (%s after the kill)", deadline.Sub(at).Round(time.Millisecond))
		}
		return r
	}
}

// cellAllAcked reaches "every participant ACKed, no decision logged" from outside: the
// last participant's Prepare is delayed 1.5s; just before it answers, both followers are
// SIGSTOPped, so the leader can receive the last ACK but cannot commit a Decide entry; the
// leader is SIGKILLed as soon as the last ACK is in the participant's log, and the followers
// continue. The cell is hit when all three ACKs were sent before the kill and the decision
// was stamped after it, i.e. made by the successor.
func cellAllAcked(e *c04) cellResult {
	ctx := context.Background()
	const delay = 1500 * time.Millisecond
	if err := e.c.SetFaults(ctx, e.c.Parts[2], demo.Faults{DelayMS: delay.Milliseconds()}); err != nil {
		e.t.Fatal(err)
	}
	key, leader := e.submit(ctx, 10*time.Second)
	txn := e.find(ctx, leader, key)
	first, ok := e.waitRequest(ctx, 0, txn.ID, "prepare", 5*time.Second)
	if !ok {
		e.t.Fatal("flight never answered Prepare")
	}
	time.Sleep(time.Until(first.Received.Add(delay - 80*time.Millisecond)))
	var frozen []*Node
	for _, n := range e.c.Nodes {
		if n != leader {
			if err := e.c.Pause(n); err == nil {
				frozen = append(frozen, n)
			}
		}
	}
	_, ok = e.waitRequest(ctx, 2, txn.ID, "prepare", 3*time.Second)
	at := e.kill(leader)
	for _, n := range frozen {
		_ = e.c.Resume(n)
	}
	_ = e.c.ClearFaults(ctx)
	if !ok {
		e.t.Errorf("payment never answered the delayed Prepare")
	}
	final, took := e.terminal(ctx, txn.ID, at)
	acked, _ := e.doneBefore(ctx, txn.ID, "prepare", at)
	r := cellResult{Final: final.Status, Took: took}
	r.Hit = acked == 3 && final.decidedAt().After(at)
	r.Evidence = fmt.Sprintf("%d of 3 Prepares answered before the kill; decision (%s) stamped %s after the kill",
		acked, final.Decision, final.decidedAt().Sub(at).Round(time.Millisecond))
	return r
}

// cellPhaseTwo kills the leader once the decision (commit, or rollback forced by a NACK
// from payment) is logged and `acked` participants have the outcome: with acked 0 the
// proxies refuse every call of the phase (HTTP 500, the participants never see it); with 1
// only flight's passes; with 3 every call reaches its participant but the proxies hold the
// answers, so the leader cannot log completion. The proxies are released after the kill.
func cellPhaseTwo(phase string, acked int) func(*c04) cellResult {
	return func(e *c04) cellResult {
		ctx := context.Background()
		want := "committing"
		if phase == "rollback" {
			want = "rolling_back"
			if err := e.c.SetFaults(ctx, e.c.Parts[2], demo.Faults{NackRate: 1}); err != nil {
				e.t.Fatal(err)
			}
		}
		for i, p := range e.proxies {
			switch {
			case acked == 3:
				p.Set(phase, ProxyHold)
			case i >= acked:
				p.Set(phase, ProxyRefuse)
			}
		}
		key, leader := e.submit(ctx, 5*time.Second)
		txn := e.find(ctx, leader, key)
		if _, ok := e.waitTxn(ctx, leader, txn.ID, 10*time.Second, func(t txnView) bool { return t.Status == want }); !ok {
			e.t.Fatalf("transaction %s never reached %s", txn.ID, want)
		}
		switch acked {
		case 3:
			for i := range e.c.Parts {
				if _, ok := e.waitRequest(ctx, i, txn.ID, phase, 10*time.Second); !ok {
					e.t.Fatalf("participant %d never got %s", i, phase)
				}
			}
		default:
			for i := range acked {
				if _, ok := e.waitRequest(ctx, i, txn.ID, phase, 10*time.Second); !ok {
					e.t.Fatalf("participant %d never got %s", i, phase)
				}
			}
			for _, p := range e.proxies[acked:] {
				for end := time.Now().Add(10 * time.Second); p.Refused(phase) == 0 && time.Now().Before(end); {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}
		before, _ := getTxn(ctx, e.c.http, leader.URL, txn.ID, time.Second)
		at := e.kill(leader)
		for _, p := range e.proxies {
			p.Release()
		}
		_ = e.c.ClearFaults(ctx)
		final, took := e.terminal(ctx, txn.ID, at)
		delivered, _ := e.doneBefore(ctx, txn.ID, phase, at)
		r := cellResult{Final: final.Status, Took: took}
		decidedBefore := !final.decidedAt().IsZero() && !final.decidedAt().After(at)
		r.Hit = decidedBefore && before.Status == want && delivered == acked
		how := "acknowledged"
		if acked == 3 {
			how = "delivered (answers held)"
		}
		r.Evidence = fmt.Sprintf("decision %s logged before the kill: %v; status at kill %s; %d of 3 %ss %s before the kill",
			final.Decision, decidedBefore, before.Status, delivered, phase, how)
		return r
	}
}
