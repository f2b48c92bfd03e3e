package cluster

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/api"

	"github.com/txcoord/txcoord/version"
)

// Status is this node's view of the cluster, in the shape GET /v1/cluster answers: the
// api package owns the wire types and cluster fills them, so the two cannot drift apart.
type Status = api.ClusterStatus

// Member is one server of the Raft configuration as GET /v1/cluster shows it.
type Member = api.Member

// Status returns this node's view of the cluster. The member list comes from the latest
// Raft configuration.
func (n *Node) Status() Status {
	leaderID, leaderHTTP := n.Leader()
	st := Status{
		NodeID:       n.cfg.NodeID,
		Role:         roleName(n.Raft.State()),
		LeaderID:     leaderID,
		LeaderHTTP:   leaderHTTP,
		Term:         n.Raft.CurrentTerm(),
		CommitIndex:  n.Raft.CommitIndex(),
		AppliedIndex: n.Raft.AppliedIndex(),
		LastIndex:    n.Raft.LastIndex(),
		Ready:        n.Ready(),

		Version:          version.String(),
		FeatureLevel:     n.FSM.FeatureLevel(),
		MaxFeatureLevel:  version.FeatureLevel,
		MaxClockOffsetMs: ms(n.cfg.MaxClockOffset),
	}
	off, _ := n.ClockOffset()
	st.ClockOffsetMs = ms(off)
	peers := map[string]PeerStatus{}
	for _, p := range n.Peers() {
		peers[p.ID] = p
	}
	if st.Role == "follower" {
		if lc := n.Raft.LastContact(); !lc.IsZero() {
			st.LastContact = lc.UTC().Format(time.RFC3339Nano)
		}
	}
	ap := n.autopilotState()
	if ap != nil {
		c := n.cfg.Autopilot
		st.Autopilot = &AutopilotStatus{Healthy: ap.Healthy, FailureTolerance: ap.FailureTolerance,
			StabilizationMs: ms(c.ServerStabilizationTime), CleanupDeadServers: c.CleanupDeadServers, DeadServerAfterMs: ms(c.DeadServerAfter)}
	}
	httpAddrs := n.FSM.Members()
	if f := n.Raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			id := string(s.ID)
			addr := httpAddrs[id]
			if addr == "" {
				addr = n.peers[id].HTTPAddr
			}
			m := Member{ID: id, RaftAddr: string(s.Address), HTTPAddr: addr, Suffrage: suffrageName(s.Suffrage), Leader: id == leaderID}
			if id == n.cfg.NodeID {
				m.Version, m.FeatureLevel = version.String(), version.FeatureLevel
			} else if p, ok := peers[id]; ok {
				m.Version, m.FeatureLevel = p.Version, p.FeatureLevel
				if p.ClockKnown {
					v := ms(p.Offset)
					m.ClockOffsetMs = &v
				}
			}
			if ap != nil {
				m.Health = memberHealth(ap, id)
			}
			st.Members = append(st.Members, m)
		}
	}
	return st
}

// Ready reports whether this node can serve: a leader is known and this node has applied
// every entry it knows to be committed; a leader must also have established leadership.
func (n *Node) Ready() bool {
	id, _ := n.Leader()
	if id == "" {
		return false
	}
	if n.Raft.State() == raft.Leader {
		return n.LeaderReady()
	}
	return n.Raft.AppliedIndex() >= n.Raft.CommitIndex()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	default:
		return "staging"
	}
}

// Snapshots returns how many snapshots the node keeps and the size of the newest, in bytes.
func (n *Node) Snapshots() (count int, newestBytes int64) {
	if n.snaps == nil {
		return 0, 0
	}
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, 0
	}
	return len(metas), metas[0].Size
}
