package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// faultLogs is a log store whose writes fail with ENOSPC while fail is set, as on a full
// disk; ProbeWrite answers the same.
type faultLogs struct {
	raft.LogStore
	fail atomic.Bool
}

func (f *faultLogs) StoreLogs(ls []*raft.Log) error {
	if f.fail.Load() {
		return &fsError{syscall.ENOSPC}
	}
	return f.LogStore.StoreLogs(ls)
}

func (f *faultLogs) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

func (f *faultLogs) ProbeWrite() error {
	if f.fail.Load() {
		return &fsError{syscall.ENOSPC}
	}
	return nil
}

type fsError struct{ errno syscall.Errno }

func (e *fsError) Error() string { return "write raft.db: " + e.errno.Error() }
func (e *fsError) Unwrap() error { return e.errno }

// stateWatch records every Raft state a node enters.
type stateWatch struct {
	mu     sync.Mutex
	states []raft.RaftState
}

func watchStates(r *raft.Raft) *stateWatch {
	w := &stateWatch{}
	ch := make(chan raft.Observation, 64)
	r.RegisterObserver(raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	}))
	go func() {
		for o := range ch {
			w.mu.Lock()
			w.states = append(w.states, o.Data.(raft.RaftState))
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *stateWatch) saw(s raft.RaftState) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.states {
		if x == s {
			return true
		}
	}
	return false
}

// TestLeaderWhoseLogWritesFailStepsDownAndStaysOut: the leader's disk fills up. Its next
// write fails with ErrStorage (nothing was logged), it steps down, the two healthy nodes go
// on, and through later elections (leadership moved between them twice) it never becomes a
// candidate again; it still votes. Once writes work again it takes part in elections again
// and can lead.
func TestLeaderWhoseLogWritesFailStepsDownAndStaysOut(t *testing.T) {
	faults := make([]*faultLogs, 3)
	c := startCluster(t, clusterOptions{config: func(i int, cfg *Config) {
		cfg.StorageProbeInterval = 20 * time.Millisecond
		cfg.WrapLogStore = func(ls raft.LogStore) raft.LogStore {
			faults[i] = &faultLogs{LogStore: ls}
			return faults[i]
		}
	}})
	l := c.waitReadyLeader(20*time.Second, nil, "a ready leader")
	li := -1
	for i, mn := range c.nodes {
		if mn == l {
			li = i
		}
	}
	w := watchStates(l.n.Raft)
	faults[li].fail.Store(true)

	_, err := l.n.Apply(context.Background(), &fsm.SetMember{NodeID: l.id, HTTPAddr: "10.9.9.9:8080"})
	if !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Apply on the full leader: %v, want ErrStorage wrapping ENOSPC", err)
	}
	waitFor(t, 10*time.Second, func() bool { return l.n.StorageError() != nil && l.n.Raft.State() != raft.Leader }, "the full leader to step down")
	waitFor(t, 10*time.Second, func() bool {
		return l.n.Raft.ReloadableConfig().HeartbeatTimeout == storageOutOfElections
	}, "the full node to leave elections")
	healthy := c.waitOtherLeader(l, 20*time.Second)
	if _, err := healthy.n.Apply(context.Background(), &fsm.SetMember{NodeID: healthy.id, HTTPAddr: "10.0.0.99:8080"}); err != nil {
		t.Fatalf("the healthy nodes cannot commit: %v", err)
	}

	// Elections among the healthy nodes: leadership handed from one to the other and back
	// (each an election in a new term, won with the full node's vote).
	term := healthy.n.Raft.CurrentTerm()
	for round := 0; round < 2; round++ {
		from := c.waitOtherLeader(l, 20*time.Second)
		var to *tnode
		for _, mn := range c.nodes {
			if mn != l && mn != from {
				to = mn
			}
		}
		waitFor(t, 20*time.Second, func() bool {
			if to.n.LeaderReady() {
				return true
			}
			if from.n.Raft.State() == raft.Leader {
				_ = from.n.TransferLeadership(to.id)
			}
			return false
		}, "leadership to move to "+to.id)
	}
	if got := c.waitOtherLeader(l, 20*time.Second).n.Raft.CurrentTerm(); got < term+2 {
		t.Errorf("term %d after two transfers from term %d", got, term)
	}
	if w.saw(raft.Candidate) || w.saw(raft.Leader) {
		t.Fatalf("the node whose writes fail ran for election: states %v", w.states)
	}
	if err := l.n.cfg.CanLead(); err == nil {
		t.Errorf("CanLead accepts a node whose writes fail")
	}

	faults[li].fail.Store(false)
	waitFor(t, 10*time.Second, func() bool {
		return l.n.StorageError() == nil && l.n.Raft.ReloadableConfig().HeartbeatTimeout == 300*time.Millisecond
	}, "the healed node to take part in elections again")
	if err := l.n.cfg.CanLead(); err != nil {
		t.Errorf("CanLead refuses the healed node: %v", err)
	}
	// And it can lead again: the last healthy node hands leadership to it.
	last := c.waitOtherLeader(l, 20*time.Second)
	waitFor(t, 20*time.Second, func() bool {
		if l.n.LeaderReady() {
			return true
		}
		if last.n.Raft.State() == raft.Leader {
			_ = last.n.TransferLeadership(l.id)
		}
		return false
	}, "the healed node to lead")
}
