package server_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// gaugeValue returns the value of the unlabelled sample name in a scrape.
func gaugeValue(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetricsForOnCall checks issue 16's metrics on a real cluster: HTTP requests by route
// pattern (never the raw path), method and code; the build info labels; the oldest
// unfinished transaction's age while one waits on a participant; the data directory's
// size; raft's per-peer metrics as one family with a peer_id label, with no node id left
// in a name, and a removed peer's series gone from the next scrapes.
func TestMetricsForOnCall(t *testing.T) {
	g := newGate("hotel", participant.PhasePrepare)
	_, urls := participantsWith(t, g.hold)
	// Node ids of this test's own: go-metrics is process-global, so the raft series of
	// the clusters earlier tests ran (n1, n2, n3) linger in the sink for a minute.
	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		cfg.Cluster.NodeID = "obs-" + cfg.Cluster.NodeID
		peers := append([]cluster.Peer(nil), cfg.Cluster.Peers...)
		for j := range peers {
			peers[j].ID = "obs-" + peers[j].ID
		}
		cfg.Cluster.Peers = peers
	}})
	leader := c.WaitLeader(10 * time.Second)
	base := c.Node(leader).URL()

	// A transaction held in phase one: the oldest unfinished age grows while it waits.
	res := postAsync(t, base, urls, 10000)
	waitOrFail(t, g.arrived, 10*time.Second, "the held prepare")
	if err := c.Eventually(10*time.Second, func() error {
		if age := gaugeValue(t, scrape(t, base), "txcoord_oldest_unfinished_transaction_age_seconds"); age <= 0 {
			return fmt.Errorf("oldest unfinished age %v", age)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if r := <-res; r.code != http.StatusOK || r.out.Status != "committed" {
		t.Fatalf("held transaction: HTTP %d %+v", r.code, r.out)
	}
	for _, path := range []string{"/v1/transactions/no-such-1", "/v1/transactions/no-such-2", "/no/such/path"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	body := scrapeUntil(t, c, base, `txcoord_oldest_unfinished_transaction_age_seconds 0`)
	for _, want := range []string{
		`txcoord_http_requests_total{code="200",method="POST",route="/v1/transactions"} 1`,
		`txcoord_http_requests_total{code="404",method="GET",route="/v1/transactions/:id"} 2`,
		`txcoord_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`txcoord_http_request_duration_seconds_bucket{method="POST",route="/v1/transactions",le="+Inf"} 1`,
		`txcoord_http_requests_in_flight 1`, // the scrape itself
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "no-such") || strings.Contains(body, `route="/no/such/path"`) {
		t.Error("a raw request path became a label value")
	}
	build := regexp.MustCompile(`txcoord_build_info\{commit="[^"]*",feature_level="\d+",goversion="go[^"]+",version="[^"]+"\} 1`)
	if !build.MatchString(body) {
		t.Errorf("txcoord_build_info lacks version, commit or Go version: %s", regexp.MustCompile(`txcoord_build_info\{.*`).FindString(body))
	}
	if v := gaugeValue(t, body, "txcoord_data_dir_bytes"); v <= 0 {
		t.Errorf("txcoord_data_dir_bytes = %v", v)
	}
	if v := gaugeValue(t, body, "txcoord_data_dir_filesystem_avail_bytes"); v <= 0 || v > gaugeValue(t, body, "txcoord_data_dir_filesystem_size_bytes") {
		t.Errorf("txcoord_data_dir_filesystem_avail_bytes = %v", v)
	}

	// Raft's per-peer metrics: one family, the peer as a label, for both followers.
	body = scrape(t, base)
	leaderID := c.Node(leader).Node.ID()
	var followers []string
	for i := 0; i < c.Len(); i++ {
		if i != leader {
			followers = append(followers, c.Node(i).Node.ID())
		}
	}
	peerSeries := func(body, peer string) bool {
		return strings.Contains(body, `raft_replication_appendEntries_rpc{peer_id="`+peer+`"`) ||
			strings.Contains(body, `raft_replication_heartbeat{peer_id="`+peer+`"`)
	}
	if err := c.Eventually(10*time.Second, func() error {
		if body = scrape(t, base); !peerSeries(body, followers[0]) || !peerSeries(body, followers[1]) {
			return fmt.Errorf("no replication series for %v yet", followers)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		if !strings.Contains(body, `raft_replication_appendEntries_rpc{peer_id="`+f+`"`) {
			t.Errorf("no appendEntries series with peer_id=%q", f)
		}
	}
	if peerSeries(body, leaderID) {
		t.Errorf("the leader reports replication to itself")
	}
	idInName := regexp.MustCompile(`(?m)^raft_replication_\w+_(` + strings.Join(followers, "|") + `)\b`)
	if m := idInName.FindString(body); m != "" {
		t.Errorf("a node id is still in a metric name: %s", m)
	}

	// Remove a follower: its series disappear from the leader's next scrapes.
	gone := followers[0]
	if err := c.Node(leader).Node.Remove(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	if err := c.Eventually(10*time.Second, func() error {
		if peerSeries(scrape(t, base), gone) {
			return fmt.Errorf("series for removed peer %s still exported", gone)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if body := scrape(t, base); !peerSeries(body, followers[1]) {
		t.Errorf("the remaining follower's series went too")
	}
}
