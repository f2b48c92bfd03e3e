package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Progress is what a read needs to know of this node's Raft side, cheaply (no
// configuration read, no peer table).
type Progress struct {
	// Leader reports that this node has established leadership (LeaderReady).
	Leader bool
	// CommitIndex is Raft's local commit index: on a follower it is only what the leader
	// last told it, and 0 after a restart until the first AppendEntries that carries entries.
	CommitIndex uint64
	// LastContact is when a follower last heard from the leader (zero: never since start,
	// or this node leads).
	LastContact time.Time
}

// Progress returns this node's Progress.
func (n *Node) Progress() Progress {
	p := Progress{Leader: n.LeaderReady(), CommitIndex: n.Raft.CommitIndex()}
	if !p.Leader {
		p.LastContact = n.Raft.LastContact()
	}
	return p
}

// ReadIndex returns a commit index that covers every entry the cluster had committed when
// it was called, confirmed by a quorum (Raft's read index): it reads the leader's commit
// index, then confirms leadership with raft.VerifyLeader (a round of heartbeats to a
// quorum), so a deposed leader that does not know it yet cannot answer. It fails with an
// error wrapping raft.ErrNotLeader on a node that has not established leadership, and with
// ctx.Err() when ctx ends first. The leader's FSM has applied the index once this returns
// (establishment ran a barrier, and the leader applies what it commits before answering).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if !n.LeaderReady() {
		return 0, fmt.Errorf("read index: %w", raft.ErrNotLeader)
	}
	idx := n.Raft.CommitIndex()
	f := n.Raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return 0, fmt.Errorf("read index: %w", err)
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return idx, nil
}

// AppliedIndex returns Raft's applied index: the last entry this node has applied,
// counting the entries the FSM never sees (a new leader's no-op, barriers, configuration
// changes), so it reaches the commit index where the FSM's own AppliedIndex may stop short.
func (n *Node) AppliedIndex() uint64 { return n.Raft.AppliedIndex() }
