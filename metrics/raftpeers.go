package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// PeerLabel is the label that names the Raft peer (its node id) on raft's per-peer
// metrics. hashicorp/raft reports these families with this label itself (and documents
// them so); the node id is never part of a metric name on /metrics.
const PeerLabel = "peer_id"

// perPeerFamilies are the hashicorp/raft metrics about one peer. raft v1.7 reports each
// twice: once labelled (raft.replication.heartbeat{peer_id="n2"}) and once, "for backward
// compatibility", with the id in the key (raft.replication.heartbeat.n2), which the
// Prometheus sink turns into a family per peer: raft_replication_heartbeat_n2.
var perPeerFamilies = []string{
	"raft_replication_appendEntries_rpc",
	"raft_replication_appendEntries_logs",
	"raft_replication_heartbeat",
	"raft_replication_installSnapshot",
}

// peerGatherer keeps node ids out of metric names and removed peers out of the scrape:
// it drops the per-peer-named families (raft_replication_heartbeat_n2: the same data as
// the labelled family), and in the labelled families keeps only the series of peers in
// this node's current Raft configuration, so a removed peer's series disappear from the
// next scrape (rather than when the sink expires them a minute later) and another
// cluster's peers in the same process (go-metrics is process-global: tests, txcoord dev)
// never show.
type peerGatherer struct {
	inner prometheus.Gatherer
	// peers returns the node ids in the current configuration; ok false when unknown
	// (then every labelled series is kept).
	peers func() (ids []string, ok bool)
}

func (g peerGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := g.inner.Gather()
	if len(mfs) == 0 {
		return mfs, err
	}
	var known map[string]bool
	if g.peers != nil {
		if ids, ok := g.peers(); ok {
			known = make(map[string]bool, len(ids))
			for _, id := range ids {
				known[id] = true
			}
		}
	}
	out := mfs[:0]
	for _, mf := range mfs {
		name := mf.GetName()
		if isPerPeerName(name) {
			continue
		}
		if known != nil && isPerPeerFamily(name) {
			kept := mf.Metric[:0]
			for _, m := range mf.Metric {
				if known[labelValue(m, PeerLabel)] {
					kept = append(kept, m)
				}
			}
			if mf.Metric = kept; len(kept) == 0 {
				continue
			}
		}
		out = append(out, mf)
	}
	return out, err
}

func isPerPeerFamily(name string) bool {
	for _, p := range perPeerFamilies {
		if name == p {
			return true
		}
	}
	return false
}

// isPerPeerName reports a family whose name ends with a peer's id (the legacy keys).
func isPerPeerName(name string) bool {
	for _, p := range perPeerFamilies {
		if len(name) > len(p)+1 && strings.HasPrefix(name, p+"_") {
			return true
		}
	}
	return false
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
