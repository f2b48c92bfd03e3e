package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// ErrCannotLead wraps the reason Config.CanLead gave for refusing leadership.
var ErrCannotLead = errors.New("this node may not lead")

// errLeadReturned is the failure of leader work that returned while the node still led.
var errLeadReturned = errors.New("leader work returned while this node still leads")

// leaderSteps are the steps of establishing leadership that can fail. Open fills them in;
// tests in this package replace them (before Run) to inject faults.
type leaderSteps struct {
	barrier    func(timeout time.Duration) error
	recordAddr func(ctx context.Context) error
	transfer   func() error
}

func (n *Node) defaultSteps() leaderSteps {
	return leaderSteps{
		barrier: func(timeout time.Duration) error { return n.Raft.Barrier(timeout).Error() },
		recordAddr: func(ctx context.Context) error {
			if n.cfg.HTTPAdvertise == "" || n.FSM.Members()[n.cfg.NodeID] == n.cfg.HTTPAdvertise {
				return nil
			}
			_, err := n.Apply(ctx, &fsm.SetMember{NodeID: n.cfg.NodeID, HTTPAddr: n.cfg.HTTPAdvertise})
			return err
		},
		transfer: func() error { return n.Raft.LeadershipTransfer().Error() },
	}
}

// leaderPolicy is how a failed establishment is retried: the k-th consecutive failure
// (k from 1) waits a delay drawn from [d/2, d) with d = min(minBackoff<<(k-1), maxBackoff);
// every tries-th failure first transfers leadership.
type leaderPolicy struct {
	minBackoff, maxBackoff time.Duration
	tries                  int
	barrierTimeout         time.Duration
}

var defaultPolicy = leaderPolicy{minBackoff: 200 * time.Millisecond, maxBackoff: 5 * time.Second, tries: 3, barrierTimeout: 10 * time.Second}

// backoff returns the delay after the k-th consecutive failure (k >= 1).
func (p leaderPolicy) backoff(k int) time.Duration {
	d := p.maxBackoff
	if k-1 < 30 {
		d = min(p.minBackoff<<(k-1), p.maxBackoff)
	}
	if d <= 1 {
		return d
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

// Run watches leadership until ctx ends or Close is called. While this node leads it calls
// lead with a context that ends when leadership is lost, after a Barrier, after its HTTP
// address is in the log and after Config.CanLead allowed it; Run waits for lead to return
// before handling the next change. lead is expected to run until its context ends: a
// return while this node still leads is a failure, retried as the package doc describes.
func (n *Node) Run(ctx context.Context, lead func(ctx context.Context)) {
	if !n.runs.CompareAndSwap(false, true) {
		panic("cluster: Node.Run called twice")
	}
	defer close(n.done)
	var cancel context.CancelFunc = func() {}
	stopLeading := func() {
		n.setReady(false, 0)
		cancel()
		n.leadWG.Wait()
	}
	defer stopLeading()
	isLeader := false
	handle := func(leader bool) {
		if leader == isLeader {
			return
		}
		isLeader = leader
		if !leader {
			n.lg.Info("lost leadership: stopping leader work", "term", n.Raft.CurrentTerm())
			stopLeading()
			return
		}
		var lctx context.Context
		lctx, cancel = context.WithCancel(ctx)
		n.leadWG.Add(1)
		go func() {
			defer n.leadWG.Done()
			n.leadTerm(lctx, lead)
		}()
	}
	// Leadership may have been gained before Run started listening.
	handle(n.Raft.State() == raft.Leader)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		case leader := <-n.notify:
			handle(leader)
		}
	}
}

// leading reports whether ctx is live and this node is the Raft leader.
func (n *Node) leading(ctx context.Context) bool {
	return ctx.Err() == nil && n.Raft.State() == raft.Leader
}

// leadTerm establishes leadership and runs lead until ctx ends (leadership lost, or Run
// stopping), retrying, transferring and backing off on failure as the package doc says.
func (n *Node) leadTerm(ctx context.Context, lead func(context.Context)) {
	failures := 0
	for n.leading(ctx) {
		served, err := n.establishAndLead(ctx, lead)
		n.setReady(false, 0)
		if !n.leading(ctx) {
			return
		}
		if err == nil { // lost leadership in a way ctx has not shown yet
			err = errLeadReturned
		}
		if served > n.policy.maxBackoff {
			failures = 0
		}
		failures++
		refused := errors.Is(err, ErrCannotLead)
		n.lg.Warn("leadership not established", "error", err, "failures", failures, "term", n.Raft.CurrentTerm())
		if refused || failures%n.policy.tries == 0 {
			n.lg.Warn("stepping down: transferring leadership", "reason", err)
			if terr := n.steps.transfer(); terr != nil {
				n.lg.Warn("leadership transfer failed: staying leader, not ready, and retrying", "error", terr)
			} else if !n.leading(ctx) {
				return
			}
		}
		wait := n.policy.backoff(failures)
		if refused {
			wait = min(wait, n.cfg.CanLeadInterval) // keep checking at the configured pace
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// establishAndLead runs one establishment and, when it succeeds, the leader's work. It
// returns how long the work ran and why it stopped: nil when ctx ended, or the failure.
func (n *Node) establishAndLead(ctx context.Context, lead func(context.Context)) (time.Duration, error) {
	start := time.Now()
	term := n.Raft.CurrentTerm()
	if err := n.steps.barrier(n.policy.barrierTimeout); err != nil {
		return 0, fmt.Errorf("barrier: %w", err)
	}
	if err := n.steps.recordAddr(ctx); err != nil {
		return 0, fmt.Errorf("recording the HTTP address: %w", err)
	}
	if err := n.canLead(); err != nil {
		return 0, err
	}
	if !n.leading(ctx) {
		return 0, nil
	}
	if t := n.Raft.CurrentTerm(); t != term {
		return 0, fmt.Errorf("term changed from %d to %d while establishing", term, t)
	}
	n.lg.Info("leadership established", "term", term, "index", n.Raft.AppliedIndex(), "took", time.Since(start))
	n.setReady(true, term)
	stopPilot := n.startAutopilot(ctx)
	started := time.Now()
	err := n.serve(ctx, lead)
	stopPilot()
	return time.Since(started), err
}

// serve runs lead until ctx ends, lead returns, or CanLead refuses. Readiness is cleared
// before lead's context is canceled, and serve returns only after lead has returned.
func (n *Node) serve(ctx context.Context, lead func(context.Context)) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	var tick <-chan time.Time
	if n.cfg.CanLead != nil {
		tk := time.NewTicker(n.cfg.CanLeadInterval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-done:
			n.setReady(false, 0)
			if ctx.Err() != nil {
				return nil
			}
			return errLeadReturned
		case <-ctx.Done():
			n.setReady(false, 0)
			cancel()
			<-done
			return nil
		case <-tick:
			if err := n.canLead(); err != nil {
				n.setReady(false, 0)
				n.lg.Warn("stopping leader work", "reason", err)
				cancel()
				<-done
				return err
			}
		}
	}
}

func (n *Node) canLead() error {
	if n.cfg.CanLead == nil {
		return nil
	}
	if err := n.cfg.CanLead(); err != nil {
		return fmt.Errorf("%w: %w", ErrCannotLead, err)
	}
	return nil
}

func (n *Node) setReady(v bool, term uint64) {
	n.mu.Lock()
	n.ready, n.readyTerm = v, term
	n.mu.Unlock()
}

// LeaderReady reports whether this node leads and has finished establishing leadership in
// the current term.
func (n *Node) LeaderReady() bool {
	n.mu.Lock()
	ready, term := n.ready, n.readyTerm
	n.mu.Unlock()
	return ready && n.Raft.State() == raft.Leader && n.Raft.CurrentTerm() == term
}
