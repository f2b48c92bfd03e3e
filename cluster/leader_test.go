package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

var errInjected = errors.New("injected fault")

// notReadyWhileEstablishing fails the test when n claims readiness during an establishment
// step (readiness must stay false until every step has passed).
func notReadyWhileEstablishing(t *testing.T, n *Node, step string) {
	if n.LeaderReady() {
		t.Errorf("%s is LeaderReady during %s", n.ID(), step)
	}
}

// TestEstablishAddressFailureMovesLeadership: the first node to win an election can never
// record its HTTP address. It must not stay a Raft leader that serves nothing: within a
// bound another node leads and is ready, every node is ready, and the failing node never
// ran the leader's work.
func TestEstablishAddressFailureMovesLeadership(t *testing.T) {
	var (
		mu    sync.Mutex
		bad   string // the first node that tried to record its address
		fails atomic.Int64
		leads counter
	)
	c := startCluster(t, clusterOptions{
		node: func(i int, n *Node) {
			orig := n.steps.recordAddr
			n.steps.recordAddr = func(ctx context.Context) error {
				notReadyWhileEstablishing(t, n, "recording the address")
				mu.Lock()
				if bad == "" {
					bad = n.ID()
				}
				isBad := bad == n.ID()
				mu.Unlock()
				if isBad {
					fails.Add(1)
					return errInjected
				}
				return orig(ctx)
			}
		},
		lead: func(i int, n *Node) func(context.Context) {
			return func(ctx context.Context) {
				leads.add(n.ID(), 1)
				<-ctx.Done()
			}
		},
	})
	leader := c.waitReadyLeader(20*time.Second, nil, "a ready leader")
	mu.Lock()
	b := bad
	mu.Unlock()
	if leader.id == b {
		t.Fatalf("%s is ready although it never recorded its address", b)
	}
	if fails.Load() == 0 {
		t.Fatal("no address recording failed: the fault was never injected")
	}
	if got := leads.get(b); got != 0 {
		t.Errorf("%s ran the leader's work %d times without an established leadership", b, got)
	}
	// The leader recorded its address before it became ready; n1 applies that entry once
	// it is replicated (over TCP, a moment later).
	waitFor(t, 10*time.Second, func() bool {
		return c.nodes[0].n.FSM.Members()[leader.id] == leader.n.HTTPAdvertise()
	}, "n1's FSM to hold the leader "+leader.id+" at "+leader.n.HTTPAdvertise())
}

// TestEstablishRetriesOnOneNode: a single node fails its first K establishment tries (more
// than the tries before a transfer). It cannot hand leadership to anyone, so it stays
// leader, retries with growing delays and becomes ready once the faults stop; it is never
// ready before, and the leader's work starts only after a successful try.
func TestEstablishRetriesOnOneNode(t *testing.T) {
	const K = 5
	for _, step := range []string{"barrier", "address"} {
		t.Run(step, func(t *testing.T) {
			var (
				tries                    atomic.Int64
				mu                       sync.Mutex
				firstTry, firstGood      time.Time
				transfers, transfersGood int
				leadStartedAt            int64
			)
			try := func(n *Node, orig func() error) error {
				notReadyWhileEstablishing(t, n, step)
				k := tries.Add(1)
				mu.Lock()
				if k == 1 {
					firstTry = time.Now()
				}
				if k == K+1 {
					firstGood = time.Now()
				}
				mu.Unlock()
				if k <= K {
					return errInjected
				}
				return orig()
			}
			c := startCluster(t, clusterOptions{
				size: 1,
				node: func(i int, n *Node) {
					barrier, record, transfer := n.steps.barrier, n.steps.recordAddr, n.steps.transfer
					if step == "barrier" {
						n.steps.barrier = func(d time.Duration) error { return try(n, func() error { return barrier(d) }) }
					} else {
						n.steps.recordAddr = func(ctx context.Context) error { return try(n, func() error { return record(ctx) }) }
					}
					n.steps.transfer = func() error {
						err := transfer()
						mu.Lock()
						transfers++
						if err == nil {
							transfersGood++
						}
						mu.Unlock()
						return err
					}
				},
				lead: func(i int, n *Node) func(context.Context) {
					return func(ctx context.Context) {
						atomic.CompareAndSwapInt64(&leadStartedAt, 0, tries.Load())
						<-ctx.Done()
					}
				},
			})
			c.waitReadyLeader(20*time.Second, nil, "the node ready after the faults stop")
			mu.Lock()
			defer mu.Unlock()
			if got := tries.Load(); got < K+1 {
				t.Fatalf("ready after %d tries, want more than the %d that fail", got, K)
			}
			if got := atomic.LoadInt64(&leadStartedAt); got <= K {
				t.Errorf("leader work started at try %d, before the faults stopped", got)
			}
			if transfers == 0 || transfersGood != 0 {
				t.Errorf("transfers tried %d, succeeded %d: want at least one try, none succeeding (no other voter)", transfers, transfersGood)
			}
			// Every failure waited at least the lower end of its jittered delay.
			var least time.Duration
			for k := 1; k <= K; k++ {
				least += min(testPolicy.minBackoff<<(k-1), testPolicy.maxBackoff) / 2
			}
			if took := firstGood.Sub(firstTry); took < least {
				t.Errorf("%d failed tries took %s, less than the backoff allows (%s)", K, took, least)
			}
		})
	}
}

// TestCanLeadRefusal: CanLead starts refusing on the ready leader L. L becomes not ready,
// stops its work (which sees readiness already gone) and transfers leadership; the new
// leader becomes ready. Leadership handed back to L is refused during establishment: L
// never runs its work again and leadership moves on once more.
func TestCanLeadRefusal(t *testing.T) {
	var (
		mu       sync.Mutex
		refuse   string
		refusals counter
		leads    counter
		running  counter
	)
	c := startCluster(t, clusterOptions{
		config: func(i int, cfg *Config) {
			id := cfg.NodeID
			cfg.CanLeadInterval = 20 * time.Millisecond
			cfg.CanLead = func() error {
				mu.Lock()
				defer mu.Unlock()
				if refuse == id {
					refusals.add(id, 1)
					return fmt.Errorf("injected: clock offset too large")
				}
				return nil
			}
		},
		lead: func(i int, n *Node) func(context.Context) {
			return func(ctx context.Context) {
				leads.add(n.ID(), 1)
				if running.add(n.ID(), 1) > 1 {
					t.Errorf("%s runs the leader's work twice at once", n.ID())
				}
				defer running.add(n.ID(), -1)
				<-ctx.Done()
				if n.LeaderReady() {
					t.Errorf("%s is LeaderReady with its leader work canceled", n.ID())
				}
			}
		},
	})
	L := c.waitReadyLeader(20*time.Second, nil, "a ready leader")
	mu.Lock()
	refuse = L.id
	mu.Unlock()
	M := c.waitReadyLeader(20*time.Second, func(m *tnode) bool { return m != L }, "a ready leader other than the refusing "+L.id)
	if refusals.get(L.id) == 0 {
		t.Fatalf("%s stepped down without CanLead refusing", L.id)
	}
	waitFor(t, 10*time.Second, func() bool { return running.get(L.id) == 0 }, L.id+"'s leader work to stop")
	leadsAfter := leads.get(L.id)

	// Hand leadership back to L: it refuses while establishing.
	before := refusals.get(L.id)
	c.transferUntil(20*time.Second, L.id, func() bool { return refusals.get(L.id) > before }, L.id+" to win leadership back and refuse it")
	c.waitReadyLeader(20*time.Second, func(m *tnode) bool { return m != L }, "a ready leader other than "+L.id+" again")
	if got := leads.get(L.id); got != leadsAfter {
		t.Errorf("%s ran its leader work %d more times while CanLead refused", L.id, got-leadsAfter)
	}
	if L.n.LeaderReady() {
		t.Errorf("%s is LeaderReady while CanLead refuses", L.id)
	}
	_ = M
}

// TestLeadReturningEarly: leader work that returns while the node still leads is a failed
// establishment. On one node it is established again (barrier and all, never ready in
// between, never two at once); on three nodes, work that always returns early on the first
// leader makes leadership move to a node whose work keeps running.
func TestLeadReturningEarly(t *testing.T) {
	t.Run("one node retries", func(t *testing.T) {
		const K = 2
		var (
			calls, running, barriers atomic.Int64
			barriersAtCall           sync.Map // call -> barriers before it
		)
		c := startCluster(t, clusterOptions{
			size: 1,
			node: func(i int, n *Node) {
				orig := n.steps.barrier
				n.steps.barrier = func(d time.Duration) error {
					notReadyWhileEstablishing(t, n, "the barrier")
					barriers.Add(1)
					return orig(d)
				}
			},
			lead: func(i int, n *Node) func(context.Context) {
				return func(ctx context.Context) {
					k := calls.Add(1)
					barriersAtCall.Store(k, barriers.Load())
					if running.Add(1) > 1 {
						t.Errorf("leader work runs twice at once")
					}
					defer running.Add(-1)
					if k <= K {
						return
					}
					<-ctx.Done()
				}
			},
		})
		waitFor(t, 20*time.Second, func() bool { return calls.Load() > K && c.readyLeader() != nil }, "ready again after the early returns")
		for k := int64(1); k <= K+1; k++ {
			b, _ := barriersAtCall.Load(k)
			if b.(int64) < k {
				t.Errorf("leader work call %d came after only %d barriers: it was not re-established", k, b)
			}
		}
	})
	t.Run("three nodes move leadership", func(t *testing.T) {
		var (
			mu    sync.Mutex
			bad   string
			early atomic.Int64
		)
		c := startCluster(t, clusterOptions{
			lead: func(i int, n *Node) func(context.Context) {
				return func(ctx context.Context) {
					mu.Lock()
					if bad == "" {
						bad = n.ID()
					}
					isBad := bad == n.ID()
					mu.Unlock()
					if isBad {
						early.Add(1)
						return
					}
					<-ctx.Done()
				}
			},
		})
		leader := c.waitReadyLeader(20*time.Second, func(m *tnode) bool {
			mu.Lock()
			defer mu.Unlock()
			return bad != "" && m.id != bad
		}, "a ready leader whose work keeps running")
		if early.Load() == 0 {
			t.Fatal("no leader work returned early: the fault was never injected")
		}
		_ = leader
	})
}

// TestLeaderLoop tests Run itself. The leader's work starts only after the barrier (the FSM
// holds every entry committed before) and with this node's HTTP address in the FSM. When
// leadership is lost the work's context is canceled, readiness is already gone when the
// work sees it, and Run waits for the work to return before it handles the next change:
// while the old work is held, the node wins leadership back but neither establishes (no
// barrier) nor becomes ready nor starts a second run of the work.
func TestLeaderLoop(t *testing.T) {
	type event struct {
		what string
		term uint64
	}
	var (
		mu      sync.Mutex
		events  = map[string][]event{}
		markers []string // committed before the last leadership change
		running counter
		hold    = map[string]chan struct{}{}
	)
	record := func(n *Node, what string) {
		mu.Lock()
		events[n.ID()] = append(events[n.ID()], event{what, n.Raft.CurrentTerm()})
		mu.Unlock()
	}
	c := startCluster(t, clusterOptions{
		node: func(i int, n *Node) {
			orig := n.steps.barrier
			n.steps.barrier = func(d time.Duration) error {
				err := orig(d)
				if err == nil {
					record(n, "barrier")
				}
				return err
			}
		},
		lead: func(i int, n *Node) func(context.Context) {
			return func(ctx context.Context) {
				if running.add(n.ID(), 1) > 1 {
					t.Errorf("%s runs the leader's work twice at once", n.ID())
				}
				record(n, "lead")
				mu.Lock()
				evs := events[n.ID()]
				if len(evs) < 2 || evs[len(evs)-2].what != "barrier" {
					t.Errorf("%s's leader work started without a barrier since its last run: %v", n.ID(), evs)
				}
				for _, m := range markers {
					if _, ok := n.FSM.Members()[m]; !ok {
						t.Errorf("%s's leader work started before its FSM held the committed entry %s", n.ID(), m)
					}
				}
				mu.Unlock()
				if got := n.FSM.Members()[n.ID()]; got != n.HTTPAdvertise() {
					t.Errorf("%s's leader work started with its address recorded as %q, want %q", n.ID(), got, n.HTTPAdvertise())
				}
				<-ctx.Done()
				if n.LeaderReady() {
					t.Errorf("%s is LeaderReady with its leader work canceled", n.ID())
				}
				record(n, "canceled")
				mu.Lock()
				h := hold[n.ID()]
				mu.Unlock()
				if h != nil {
					<-h
				}
				running.add(n.ID(), -1)
				record(n, "returned")
			}
		},
	})
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the cluster stops
	commit := func(via *tnode, key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := via.n.Apply(ctx, &fsm.SetMember{NodeID: key, HTTPAddr: "10.9.9.9:1"}); err != nil {
			t.Fatalf("committing %s through %s: %v", key, via.id, err)
		}
		mu.Lock()
		markers = append(markers, key)
		mu.Unlock()
	}
	count := func(id, what string) int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, e := range events[id] {
			if e.what == what {
				k++
			}
		}
		return k
	}

	L := c.waitReadyLeader(20*time.Second, nil, "a ready leader")
	commit(L, "marker-1")
	mu.Lock()
	hold[L.id] = release
	mu.Unlock()

	// Leadership moves away: L's work sees its context canceled and is held there. (On a
	// loaded machine L may also have lost and regained leadership by itself before the hold
	// was set: count the runs once exactly one, the last, is held.)
	c.transferUntil(20*time.Second, "", func() bool { return L.n.Raft.State() != raft.Leader }, "leadership to leave "+L.id)
	waitFor(t, 10*time.Second, func() bool {
		leads := count(L.id, "lead")
		return count(L.id, "canceled") == leads && count(L.id, "returned") == leads-1
	}, L.id+"'s leader work to see its context canceled and be held")
	leadsBefore := count(L.id, "lead")
	M := c.waitReadyLeader(20*time.Second, func(m *tnode) bool { return m != L }, "a ready leader other than "+L.id)
	commit(M, "marker-2")

	// Leadership comes back to L while its old work is still held.
	c.transferUntil(20*time.Second, L.id, func() bool { return L.n.Raft.State() == raft.Leader }, "leadership back to "+L.id)
	barriers := count(L.id, "barrier")
	waitFor(t, 10*time.Second, func() bool {
		return L.n.Raft.State() != raft.Leader || L.n.Raft.AppliedIndex() >= L.n.Raft.LastIndex()
	}, L.id+" to apply its own term's first entry")
	if L.n.LeaderReady() {
		t.Errorf("%s is LeaderReady while its previous leader work has not returned", L.id)
	}
	if got := count(L.id, "lead"); got != leadsBefore {
		t.Errorf("%s started its leader work again while the previous run was still held", L.id)
	}
	if got := count(L.id, "barrier"); got != barriers {
		t.Errorf("%s established leadership again (a barrier) before its previous leader work returned", L.id)
	}

	releaseOnce.Do(func() { close(release) })
	mu.Lock()
	delete(hold, L.id)
	mu.Unlock()
	c.waitReadyLeader(20*time.Second, nil, "a ready leader after the old work returned")
	waitFor(t, 10*time.Second, func() bool { return count(L.id, "returned") >= leadsBefore }, L.id+"'s held work to return")

	// On L, no establishment step falls between a run's cancellation and its return.
	mu.Lock()
	evs := slices.Clone(events[L.id])
	mu.Unlock()
	inRun := false
	for _, e := range evs {
		switch e.what {
		case "lead":
			inRun = true
		case "returned":
			inRun = false
		case "barrier":
			if inRun {
				t.Errorf("%s: a barrier while its leader work was still running: %v", L.id, evs)
			}
		}
	}
}
