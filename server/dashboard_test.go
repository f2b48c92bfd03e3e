package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestDashboardQueriesExist checks that every metric the Grafana dashboard in deploy/grafana
// queries is one a node really exports, so the dashboard cannot silently go blank after a
// rename.
func TestDashboardQueriesExist(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/txcoord-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	// A participant that refuses its first Commit, so that the retry series exist too.
	var refused atomic.Bool
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/commit") && refused.CompareAndSwap(false, true) {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	defer ps.Close()
	urls := []string{ps.URL + "/prepare"}
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(10 * time.Second)
	code, out := post(t, c.Node(leader).URL(), urls, 2000)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if _, err := c.Node(leader).Node.FSM.WaitFor(context.Background(), out.TransactionID, func(t *fsm.Txn) bool { return t.Status.Terminal() }); err != nil {
		t.Fatal(err)
	}
	c.Node(leader).Node.Raft.Snapshot() // so the snapshot series have a value
	body := scrapeUntil(t, c, c.Node(leader).URL(), `txcoord_transactions_finished_total{status="committed"} 1`)
	metricName := regexp.MustCompile(`\b(txcoord|raft)_[a-zA-Z0-9_]+`)
	checked := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				family := strings.TrimSuffix(name, "_bucket")
				if !strings.Contains(body, "\n"+family) && !strings.Contains(body, "# TYPE "+family+" ") {
					t.Errorf("panel %q queries %s, which /metrics does not export", p.Title, name)
				}
				checked++
			}
		}
	}
	if checked < 10 {
		t.Fatalf("found only %d metric names in the dashboard", checked)
	}
}
