package metrics

import (
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// PeerLabel is the label that carries a Raft peer's node id on raft's per-peer metrics.
const PeerLabel = "peer"

// perPeerFamilies are the hashicorp/raft metrics whose go-metrics key ends with a peer's
// node id (raft.replication.appendEntries.rpc.<id> and so on), prefix included up to the
// id. The Prometheus sink turns each key into a family of its own, e.g.
// raft_replication_appendEntries_rpc_n4.
var perPeerFamilies = []string{
	"raft_replication_appendEntries_rpc_",
	"raft_replication_appendEntries_logs_",
	"raft_replication_heartbeat_",
	"raft_replication_installSnapshot_",
}

// sanitizeKey is what the go-metrics Prometheus sink does to a key's characters.
var sanitizeKey = strings.NewReplacer(" ", "_", ".", "_", "=", "_", "-", "_", "/", "_")

// peerGatherer rewrites raft's per-peer families into one family per metric with the peer
// as a label: raft_replication_heartbeat_n2 and _n3 become raft_replication_heartbeat
// {peer="n2"} and {peer="n3"}. Only the peers in this node's current Raft configuration
// are kept, so a removed peer's series disappear from the next scrape (instead of
// lingering until the sink expires them), and another cluster's peers in the same process
// (tests, txcoord dev) never show.
type peerGatherer struct {
	inner prometheus.Gatherer
	peers func() []string // node ids in the current configuration; nil: none known
}

func (g peerGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := g.inner.Gather()
	if len(mfs) == 0 {
		return mfs, err
	}
	var ids []string
	if g.peers != nil {
		ids = g.peers()
	}
	bySanitized := make(map[string]string, len(ids))
	for _, id := range ids {
		bySanitized[sanitizeKey.Replace(id)] = id
	}
	out := mfs[:0:0]
	merged := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		base, suffix, ok := splitPeerFamily(mf.GetName())
		if !ok {
			out = append(out, mf)
			continue
		}
		id, known := bySanitized[suffix]
		if !known {
			continue // a removed peer, or one of another cluster in this process
		}
		dst := merged[base]
		if dst == nil {
			dst = &dto.MetricFamily{Name: strp(base), Type: mf.Type,
				Help: strp("hashicorp/raft's " + strings.ReplaceAll(strings.TrimPrefix(base, "raft_"), "_", ".") + ", by peer (milliseconds for timings).")}
			merged[base] = dst
			out = append(out, dst)
		}
		if dst.GetType() != mf.GetType() {
			continue // cannot happen with raft's keys; never emit an inconsistent family
		}
		for _, m := range mf.Metric {
			m.Label = append(m.Label, &dto.LabelPair{Name: strp(PeerLabel), Value: strp(id)})
			sort.Slice(m.Label, func(i, j int) bool { return m.Label[i].GetName() < m.Label[j].GetName() })
			dst.Metric = append(dst.Metric, m)
		}
	}
	for _, mf := range merged {
		sort.Slice(mf.Metric, func(i, j int) bool { return peerOf(mf.Metric[i]) < peerOf(mf.Metric[j]) })
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, err
}

// splitPeerFamily splits a per-peer family name into the family it belongs to and the
// (sanitized) peer id.
func splitPeerFamily(name string) (base, peer string, ok bool) {
	for _, p := range perPeerFamilies {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return strings.TrimSuffix(p, "_"), name[len(p):], true
		}
	}
	return "", "", false
}

func peerOf(m *dto.Metric) string {
	for _, l := range m.Label {
		if l.GetName() == PeerLabel {
			return l.GetValue()
		}
	}
	return ""
}

func strp(s string) *string { return &s }
