package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPeerGathererKeepsIDsOutOfNames: raft's legacy per-peer families (the node id in the
// name) are dropped, the labelled families keep only peers in the configuration (a
// removed peer's series go with the next scrape), and other families pass untouched.
func TestPeerGathererKeepsIDsOutOfNames(t *testing.T) {
	inner := prometheus.NewRegistry()
	for _, name := range []string{"raft_replication_heartbeat_n2", "raft_replication_heartbeat_txcoord_1", "raft_replication_appendEntries_logs_n2"} {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: name})
		c.Add(1)
		inner.MustRegister(c)
	}
	hb := prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "raft_replication_heartbeat", Help: "hb", Objectives: map[float64]float64{0.5: 0.05}}, []string{PeerLabel})
	logs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "raft_replication_appendEntries_logs", Help: "logs"}, []string{PeerLabel})
	for _, p := range []string{"n2", "txcoord-1", "gone"} {
		hb.WithLabelValues(p).Observe(2)
	}
	logs.WithLabelValues("n2").Add(3)
	logs.WithLabelValues("gone").Add(3)
	commit := prometheus.NewGauge(prometheus.GaugeOpts{Name: "raft_commitNumLogs", Help: "x"})
	inner.MustRegister(hb, logs, commit)

	peers := []string{"n1", "n2", "txcoord-1"}
	g := peerGatherer{inner: inner, peers: func() ([]string, bool) { return peers, true }}
	want := `
# HELP raft_commitNumLogs x
# TYPE raft_commitNumLogs gauge
raft_commitNumLogs 0
# HELP raft_replication_appendEntries_logs logs
# TYPE raft_replication_appendEntries_logs counter
raft_replication_appendEntries_logs{peer_id="n2"} 3
# HELP raft_replication_heartbeat hb
# TYPE raft_replication_heartbeat summary
raft_replication_heartbeat{peer_id="n2",quantile="0.5"} 2
raft_replication_heartbeat_sum{peer_id="n2"} 2
raft_replication_heartbeat_count{peer_id="n2"} 1
raft_replication_heartbeat{peer_id="txcoord-1",quantile="0.5"} 2
raft_replication_heartbeat_sum{peer_id="txcoord-1"} 2
raft_replication_heartbeat_count{peer_id="txcoord-1"} 1
`
	if err := testutil.GatherAndCompare(g, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// n2 is removed from the configuration: its series go with the next scrape, and a
	// family left with no series goes with them.
	peers = []string{"n1", "txcoord-1"}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "raft_replication_appendEntries_logs" {
			t.Errorf("family %s still exported after its only peer left", mf.GetName())
		}
		for _, m := range mf.Metric {
			if labelValue(m, PeerLabel) == "n2" {
				t.Errorf("%s still has a series for removed peer n2", mf.GetName())
			}
		}
	}
	// Without a configuration (no node), the labelled series are all kept.
	g.peers = func() ([]string, bool) { return nil, false }
	if n, err := testutil.GatherAndCount(g, "raft_replication_heartbeat"); err != nil || n != 3 {
		t.Fatalf("without a configuration: %d heartbeat series, %v", n, err)
	}
}
