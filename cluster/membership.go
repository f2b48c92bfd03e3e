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

// MembershipTimeout bounds each Raft step of a membership change (enqueueing the
// configuration change, recording or forgetting the member's record). Every path (HTTP
// API, discovery protocol, autopilot's cleanup) uses it; a request through the discovery
// protocol waits up to membershipCallTimeout for the leader's answer.
const MembershipTimeout = 10 * time.Second

// joinProbeTimeout bounds the leader's probe of a joiner (is it running, which build).
const joinProbeTimeout = 5 * time.Second

// membershipCallTimeout is how long a join or remove sent over the discovery protocol
// waits for the leader's answer: the probe plus two Raft steps, with room to spare.
const membershipCallTimeout = joinProbeTimeout + 2*MembershipTimeout + 5*time.Second

// ErrUnreachable wraps the refusal to add a server that the leader cannot reach: adding it
// would count a dead member in the quorum. Start the node first, then join it.
var ErrUnreachable = errors.New("joining server unreachable")

// JoinRequest names a server to add: its id, its Raft address as the other servers dial it,
// and its HTTP API address (host:port or URL base; "" if unknown, the leader then learns it
// from the server's own answers to probes).
type JoinRequest struct {
	ID, RaftAddr, HTTPAddr string
}

// Join is the one way a server enters the cluster, whether asked through the HTTP API
// (txcoord cluster join), by a node that found the cluster through the discovery protocol
// (--join, or --peers with an empty store), or by an operator's tool. Only the leader may do
// it (ErrNotLeader). The rules, in order:
//
//   - the id and addresses must be well formed (ErrInvalidMember);
//   - a member may not be re-addressed, and an address may not get a second id
//     (ErrMemberConflict): remove the old member first;
//   - a server already in the configuration at that address changes nothing but its
//     record (idempotent);
//   - the server must answer the leader's probe on its Raft port as that id (ErrUnreachable)
//     with a build that can apply this cluster's log (ErrBuildTooOld, issue 11's gate);
//   - it is added as a non-voter; autopilot promotes it to voter once it is reachable,
//     caught up and stable for the stabilization time (autopilot.go);
//   - its HTTP address is recorded in the log (SetMember, through Apply).
func (n *Node) Join(ctx context.Context, req JoinRequest) error {
	id, raftAddr, httpAddr := req.ID, req.RaftAddr, req.HTTPAddr
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
			present = true
		case string(s.ID) == id:
			return fmt.Errorf("%w: %s is already a member at %s; remove it before joining it at %s", ErrMemberConflict, id, s.Address, raftAddr)
		case string(s.Address) == raftAddr:
			return fmt.Errorf("%w: %s is already the address of member %s; remove %s first", ErrMemberConflict, raftAddr, s.ID, s.ID)
		}
	}
	if !present {
		if err := n.checkReachable(ctx, id, raftAddr); err != nil {
			return err
		}
		if err := n.checkJoiner(ctx, raftAddr); err != nil {
			return err
		}
		if err := n.Raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, MembershipTimeout).Error(); err != nil {
			return fmt.Errorf("adding %s at %s: %w", id, raftAddr, err)
		}
		n.lg.Info("added a server as a non-voter: autopilot promotes it once it is healthy and stable", "id", id, "raft", raftAddr,
			"stabilization", n.cfg.Autopilot.ServerStabilizationTime)
	}
	if httpAddr != "" && n.FSM.Members()[id] != httpAddr {
		if err := n.recordMember(ctx, id, httpAddr); err != nil {
			return fmt.Errorf("recording the HTTP address of %s: %w", id, err)
		}
	}
	return nil
}

// checkReachable probes the joiner on its Raft port: it must answer, as the id it joins
// under. Without a way to probe (a test transport without Config.Probe) it passes.
func (n *Node) checkReachable(ctx context.Context, id, raftAddr string) error {
	if n.probe == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, joinProbeTimeout)
	defer cancel()
	pi, err := n.probe(pctx, raftAddr, joinProbeTimeout)
	if err != nil {
		return fmt.Errorf("%w: %s does not answer at %s (%v): start it first (txcoord serve with an empty data directory), then join it", ErrUnreachable, id, raftAddr, err)
	}
	if pi.ID != "" && pi.ID != id {
		return fmt.Errorf("%w: %s answers as node %q, not %q", ErrMemberConflict, raftAddr, pi.ID, id)
	}
	return nil
}

// recordMember logs the member's HTTP address ("" forgets the record).
func (n *Node) recordMember(ctx context.Context, id, httpAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, MembershipTimeout)
	defer cancel()
	_, err := n.Apply(ctx, &fsm.SetMember{NodeID: id, HTTPAddr: httpAddr})
	return err
}

// Remove is the one way a server leaves the cluster (HTTP API, discovery protocol,
// autopilot's dead-server cleanup): it forgets the member's record and removes it from
// the Raft configuration. It is idempotent: removing a server that is not a member
// succeeds. Removing the leader itself is allowed; Raft then elects another. Only the
// leader may do it (ErrNotLeader).
func (n *Node) Remove(ctx context.Context, id string) error {
	if n.Raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if id == "" {
		return fmt.Errorf("%w: no id", ErrInvalidMember)
	}
	member := false
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		member = member || string(s.ID) == id
	}
	if _, ok := n.FSM.Members()[id]; ok {
		if err := n.recordMember(ctx, id, ""); err != nil {
			return fmt.Errorf("forgetting the HTTP address of %s: %w", id, err)
		}
	}
	if !member {
		return nil
	}
	if err := n.Raft.RemoveServer(raft.ServerID(id), 0, MembershipTimeout).Error(); err != nil {
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
