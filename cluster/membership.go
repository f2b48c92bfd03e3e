package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// ErrNotLeader is returned by membership changes asked of a node that does not lead.
var ErrNotLeader = errors.New("this node is not the leader")

// ErrUnknownMember is returned when a leadership transfer names a server that is not a
// voter of the cluster.
var ErrUnknownMember = errors.New("no such voter")

// ErrInvalidMember wraps every reason AddVoter refuses a request as malformed: an id or an
// address that could never name a working node.
var ErrInvalidMember = errors.New("invalid member")

// ErrMemberConflict is returned when a join would re-address an existing member or give an
// address a second id: either would count one process twice, or a dead address once, in
// the quorum. Remove the old member first.
var ErrMemberConflict = errors.New("member conflict")

// validNodeID accepts 1 to 64 letters, digits, '.', '_' and '-': ids appear in logs, paths
// and pod names.
func validNodeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

const membershipTimeout = 10 * time.Second

// AddVoter adds a server to the Raft configuration as a voter (or updates its address)
// and records its HTTP address. It is idempotent: adding a member that is already there
// with the same address changes nothing. Only the leader may do it (ErrNotLeader).
func (n *Node) AddVoter(id, raftAddr, httpAddr string) error {
	if n.Raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if !validNodeID(id) {
		return fmt.Errorf("%w: id %q: use 1 to 64 letters, digits, '.', '_' or '-'", ErrInvalidMember, id)
	}
	if err := CheckAdvertise(raftAddr); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMember, err)
	}
	if httpAddr != "" {
		if _, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(httpAddr, "http://"), "https://")); err != nil || port == "0" {
			return fmt.Errorf("%w: http address %q: want host:port", ErrInvalidMember, httpAddr)
		}
	}
	present := false
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		switch {
		case string(s.ID) == id && string(s.Address) == raftAddr:
			present = s.Suffrage == raft.Voter
		case string(s.ID) == id:
			return fmt.Errorf("%w: %s is already a member at %s; remove it before joining it at %s", ErrMemberConflict, id, s.Address, raftAddr)
		case string(s.Address) == raftAddr:
			return fmt.Errorf("%w: %s is already the address of member %s", ErrMemberConflict, raftAddr, s.ID)
		}
	}
	if !present {
		if err := n.checkJoiner(context.Background(), raftAddr); err != nil {
			return err
		}
		if err := n.Raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, membershipTimeout).Error(); err != nil {
			return fmt.Errorf("adding %s at %s: %w", id, raftAddr, err)
		}
		n.lg.Info("added voter", "id", id, "raft", raftAddr)
	}
	if httpAddr != "" && n.FSM.Members()[id] != httpAddr {
		if err := n.Raft.Apply(fsm.Encode(&fsm.SetMember{NodeID: id, HTTPAddr: httpAddr}), membershipTimeout).Error(); err != nil {
			return fmt.Errorf("recording the HTTP address of %s: %w", id, err)
		}
	}
	return nil
}

// RemoveServer removes a server from the Raft configuration and forgets its HTTP address.
// It is idempotent: removing a server that is not a member succeeds. Removing the leader
// itself is allowed; Raft then elects another. Only the leader may do it (ErrNotLeader).
func (n *Node) RemoveServer(id string) error {
	if n.Raft.State() != raft.Leader {
		return ErrNotLeader
	}
	member := false
	if f := n.Raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			member = member || string(s.ID) == id
		}
	}
	if _, ok := n.FSM.Members()[id]; ok {
		if err := n.Raft.Apply(fsm.Encode(&fsm.SetMember{NodeID: id}), membershipTimeout).Error(); err != nil {
			return fmt.Errorf("forgetting the HTTP address of %s: %w", id, err)
		}
	}
	if !member {
		return nil
	}
	if err := n.Raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("removing %s: %w", id, err)
	}
	n.lg.Info("removed server", "id", id)
	return nil
}

// TransferLeadership hands leadership to the voter with id to, or to the most up-to-date
// voter when to is "". It returns when the transfer is done or failed. Errors:
// ErrNotLeader, ErrUnknownMember, or raft's.
func (n *Node) TransferLeadership(to string) error {
	if n.Raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if to == "" {
		return n.Raft.LeadershipTransfer().Error()
	}
	if f := n.Raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == to && s.Suffrage == raft.Voter {
				if to == n.cfg.NodeID {
					return nil // already leads
				}
				return n.Raft.LeadershipTransferToServer(s.ID, s.Address).Error()
			}
		}
	}
	return fmt.Errorf("%w %q", ErrUnknownMember, to)
}
