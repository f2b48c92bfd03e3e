package server_test

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server/servertest"
)

// gate holds one kind's calls of one phase until released, and says when the first one
// arrived.
type gate struct {
	kind    string
	phase   participant.Phase
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(kind string, phase participant.Phase) *gate {
	return &gate{kind: kind, phase: phase, arrived: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) hold(kind string, ctx context.Context, p participant.Phase, _ string) {
	if kind != g.kind || p != g.phase {
		return
	}
	g.once.Do(func() { close(g.arrived) })
	select {
	case <-g.release:
	case <-ctx.Done():
	}
}

func waitOrFail(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("timed out waiting for %s", what)
	}
}

type postResult struct {
	code int
	out  outcome
}

// postAsync sends a transaction from another goroutine and returns its answer channel.
func postAsync(t *testing.T, base string, services []string, timeoutMs int) <-chan postResult {
	ch := make(chan postResult, 1)
	go func() {
		code, out := postNoFatal(base, services, timeoutMs)
		ch <- postResult{code, out}
	}()
	return ch
}

// checkLedgers asserts that every participant's ledger says want for id, and that no
// participant received both a Commit and a Rollback for it (O2).
func checkLedgers(t *testing.T, svcs []*demo.Service, id string, want participant.State) {
	t.Helper()
	for _, svc := range svcs {
		if got := ledgerOf(t, svc, id); got != want {
			t.Errorf("%s ledger says %q for %s, want %q", svc.Kind(), got, id, want)
		}
		phases := map[participant.Phase]bool{}
		for _, r := range svc.Requests() {
			if r.TransactionID == id {
				phases[r.Phase] = true
			}
		}
		if phases[participant.PhaseCommit] && phases[participant.PhaseRollback] {
			t.Errorf("%s received both commit and rollback for %s (O2)", svc.Kind(), id)
		}
	}
}

// failoverRun is a cluster with a transaction in flight, sent through a follower, whose
// call of one kind and phase is held at the participant until the test releases it.
type failoverRun struct {
	gate   *gate
	svcs   []*demo.Service
	c      *servertest.Cluster
	leader int
	res    <-chan postResult
}

// startFailoverRun starts the cluster and the transaction, and returns once the held call
// has reached its participant.
func startFailoverRun(t *testing.T, kind string, phase participant.Phase, timeoutMs int) *failoverRun {
	t.Helper()
	g := newGate(kind, phase)
	svcs, urls := participantsWith(t, g.hold)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(10 * time.Second)
	res := postAsync(t, c.Node(c.Follower()).URL(), urls, timeoutMs)
	waitOrFail(t, g.arrived, 10*time.Second, "the held "+kind+" "+string(phase))
	return &failoverRun{gate: g, svcs: svcs, c: c, leader: leader, res: res}
}

// TestFailoverDuringPhaseOne kills the leader while a Prepare is in flight. The client,
// talking to a follower, must still get the one real outcome; the new leader re-prepares
// and commits within the logged deadline.
func TestFailoverDuringPhaseOne(t *testing.T) {
	run := startFailoverRun(t, demo.KindPayment, participant.PhasePrepare, 10000)
	g, svcs, c, leader, res := run.gate, run.svcs, run.c, run.leader, run.res
	c.Kill(leader)
	close(g.release)
	newLeader := c.WaitLeader(10 * time.Second)
	if newLeader == leader {
		t.Fatalf("killed node %d still leads", leader)
	}
	r := <-res
	if r.code != http.StatusOK || r.out.Status != "committed" {
		t.Fatalf("client got HTTP %d %+v, want 200 committed", r.code, r.out)
	}
	c.WaitConverged(10 * time.Second)
	counts := c.Node(newLeader).Node.FSM.Counts()
	if counts[fsm.StatusCommitted] != 1 || len(counts) != 1 {
		t.Fatalf("FSM holds %v, want exactly one committed transaction", counts)
	}
	checkLedgers(t, svcs, r.out.TransactionID, participant.StateCommitted)
}

// TestFailoverDuringPhaseTwo kills the leader after the commit decision is logged, while a
// Commit is held at the hotel. The new leader must re-send Commit (never Rollback) and
// finish the transaction.
func TestFailoverDuringPhaseTwo(t *testing.T) {
	run := startFailoverRun(t, demo.KindHotel, participant.PhaseCommit, 5000)
	g, svcs, c, leader, res := run.gate, run.svcs, run.c, run.leader, run.res
	c.Kill(leader)
	newLeader := c.WaitLeader(10 * time.Second)
	close(g.release)
	r := <-res
	if r.code != http.StatusOK || r.out.Status != "committed" {
		t.Fatalf("client got HTTP %d %+v, want 200 committed", r.code, r.out)
	}
	c.WaitConverged(10 * time.Second)
	txn, _ := c.Node(newLeader).Node.FSM.Get(r.out.TransactionID)
	if txn == nil || txn.Status != fsm.StatusCommitted || txn.Decision != fsm.DecisionCommit {
		t.Fatalf("new leader holds %+v, want committed", txn)
	}
	checkLedgers(t, svcs, r.out.TransactionID, participant.StateCommitted)

	// Every call names the leader that sent it and its term: the hotel's first Commit came
	// from the killed leader, and the one that finished the transaction from another node
	// in a higher term (a new leader re-sent the decision). On a loaded machine leadership
	// may move again after that, so neither the last sender nor its term is pinned to the
	// leader seen at the end; and no Rollback ever reached the hotel (O2).
	oldID := c.Peer(leader).ID
	var senders []string
	var terms []uint64
	reqs := svcs[1].Requests() // logged as each finishes: put them in arrival order
	sort.SliceStable(reqs, func(i, j int) bool { return reqs[i].Received.Before(reqs[j].Received) })
	for _, req := range reqs {
		if req.TransactionID != r.out.TransactionID {
			continue
		}
		if req.Phase == participant.PhaseRollback {
			t.Fatalf("the hotel was sent Rollback for a transaction decided commit (by %s in term %d)", req.Node, req.Term)
		}
		if req.Phase == participant.PhaseCommit {
			senders, terms = append(senders, req.Node), append(terms, req.Term)
		}
	}
	last := len(senders) - 1
	if len(senders) < 2 || senders[0] != oldID || senders[last] == oldID || terms[last] <= terms[0] {
		t.Fatalf("hotel commits came from %v in terms %v; want %s first, then a later leader in a higher term", senders, terms, oldID)
	}
	for i, term := range terms[1:] {
		if senders[i+1] != oldID && term <= terms[0] {
			t.Fatalf("hotel commits came from %v in terms %v: %s re-sent in a term not after the killed leader's", senders, terms, senders[i+1])
		}
	}
}

// TestFailoverAfterDeadlineRollsBack kills the leader during phase one and keeps the
// cluster leaderless past the logged deadline: the new leader must decide abort (presumed
// abort) and roll every participant back, including the one whose Prepare never answered.
func TestFailoverAfterDeadlineRollsBack(t *testing.T) {
	run := startFailoverRun(t, demo.KindPayment, participant.PhasePrepare, 300)
	g, svcs, c, leader, res := run.gate, run.svcs, run.c, run.leader, run.res
	// Stop every node: nobody decides before the 300 ms deadline passes.
	c.Kill(leader)
	for i := 0; i < c.Len(); i++ {
		c.Kill(i)
	}
	r := <-res // the entry node died with the connection open
	if r.code == http.StatusOK && r.out.Status == "committed" {
		t.Fatalf("client got committed from a transaction whose deadline passed undecided")
	}
	var id string
	close(g.release)
	for i := 0; i < c.Len(); i++ {
		c.StartNode(i)
	}
	newLeader := c.WaitLeader(10 * time.Second)
	txns, _ := c.Node(newLeader).Node.FSM.List(0, "", 10)
	if len(txns) != 1 {
		t.Fatalf("FSM holds %d transactions, want 1", len(txns))
	}
	id = txns[0].ID
	final, err := c.Node(newLeader).Node.FSM.WaitFor(context.Background(), id, func(t *fsm.Txn) bool { return t != nil && t.Status.Terminal() })
	if err != nil || final.Status != fsm.StatusRolledBack {
		t.Fatalf("transaction ended %+v (%v), want rolled_back", final, err)
	}
	c.WaitConverged(10 * time.Second)
	checkLedgers(t, svcs, id, participant.StateRolledBack)
}
