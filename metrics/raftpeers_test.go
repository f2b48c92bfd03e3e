package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPeerGathererFoldsPeerNames: raft's per-peer families (the node id in the name)
// become one family with a peer label; ids with characters the sink replaces map back to
// the real id; peers not in the configuration (removed ones) disappear at once; other
// families pass through untouched.
func TestPeerGathererFoldsPeerNames(t *testing.T) {
	inner := prometheus.NewRegistry()
	for _, name := range []string{"raft_replication_heartbeat_n2", "raft_replication_heartbeat_txcoord_1", "raft_replication_heartbeat_gone"} {
		s := prometheus.NewSummary(prometheus.SummaryOpts{Name: name, Help: name, Objectives: map[float64]float64{0.5: 0.05}})
		s.Observe(1)
		inner.MustRegister(s)
	}
	for _, name := range []string{"raft_replication_appendEntries_logs_n2", "raft_replication_appendEntries_logs_gone"} {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: name})
		c.Add(3)
		inner.MustRegister(c)
	}
	commit := prometheus.NewGauge(prometheus.GaugeOpts{Name: "raft_commitNumLogs", Help: "x"})
	inner.MustRegister(commit)

	peers := []string{"n1", "n2", "txcoord-1"}
	g := peerGatherer{inner: inner, peers: func() []string { return peers }}
	want := `
# HELP raft_replication_appendEntries_logs hashicorp/raft's replication.appendEntries.logs, by peer (milliseconds for timings).
# TYPE raft_replication_appendEntries_logs counter
raft_replication_appendEntries_logs{peer="n2"} 3
# HELP raft_replication_heartbeat hashicorp/raft's replication.heartbeat, by peer (milliseconds for timings).
# TYPE raft_replication_heartbeat summary
raft_replication_heartbeat{peer="n2",quantile="0.5"} 1
raft_replication_heartbeat_sum{peer="n2"} 1
raft_replication_heartbeat_count{peer="n2"} 1
raft_replication_heartbeat{peer="txcoord-1",quantile="0.5"} 1
raft_replication_heartbeat_sum{peer="txcoord-1"} 1
raft_replication_heartbeat_count{peer="txcoord-1"} 1
# HELP raft_commitNumLogs x
# TYPE raft_commitNumLogs gauge
raft_commitNumLogs 0
`
	if err := testutil.GatherAndCompare(g, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// n2 is removed from the configuration: its series go with the next scrape.
	peers = []string{"n1", "txcoord-1"}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "raft_replication_appendEntries_logs") {
			t.Errorf("family %s still exported after its only peer left", mf.GetName())
		}
		for _, m := range mf.Metric {
			if peerOf(m) == "n2" {
				t.Errorf("%s still has a series for removed peer n2", mf.GetName())
			}
		}
	}
}
