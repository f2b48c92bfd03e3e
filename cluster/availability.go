package cluster

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// ErrNodeUnavailable marks Unavailable's answers: this node cannot take writes, and waiting
// for a leader will not change that.
var ErrNodeUnavailable = errors.New("this node cannot serve writes")

// Unavailable returns why this node cannot take writes and waiting will not help soon, or
// nil. Those are: the node stopped (HaltError) or Raft is shut down (closing, or a leader
// that removed itself); this node is not in the latest Raft configuration (removed); the
// configuration is empty (the node waits to be added to a cluster or to form one). The API
// answers 503 unavailable at once for them instead of waiting for a leader that this node
// will never see.
//
// It is cheap while a leader is known (no Raft round trip); otherwise it reads the
// configuration from Raft's goroutine.
func (n *Node) Unavailable() error {
	if e := n.HaltError(); e != nil {
		return fmt.Errorf("%w: it stopped: %v", ErrNodeUnavailable, e)
	}
	if n.Raft.State() == raft.Shutdown {
		return fmt.Errorf("%w: it is shutting down (Raft is stopped); send requests to another node", ErrNodeUnavailable)
	}
	if _, lid := n.Raft.LeaderWithID(); lid != "" {
		return nil
	}
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return fmt.Errorf("%w: it is shutting down (Raft is stopped); send requests to another node", ErrNodeUnavailable)
		}
		return nil
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return fmt.Errorf("%w: node %s is not a member of a cluster yet (it waits to be added or for the cluster to form); send requests to a member", ErrNodeUnavailable, n.cfg.NodeID)
	}
	var others []string
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID {
			return nil
		}
		others = append(others, string(s.ID))
	}
	return fmt.Errorf("%w: node %s is not in the cluster configuration (was it removed?); send requests to a member: %v", ErrNodeUnavailable, n.cfg.NodeID, others)
}
