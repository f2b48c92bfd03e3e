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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/server/servertest"
)

var (
	exportedOnce sync.Once
	exportedBody string
)

// exportedMetrics returns the /metrics text of a leader that has committed a transaction
// (one of whose Commits was refused once, so the retry series exist), taken a snapshot,
// answered a 404 and replicated to its followers: every family the dashboard and the alert
// rules use is then present. The first caller starts the cluster; later callers in the
// same test binary reuse its scrape.
func exportedMetrics(t *testing.T) string {
	t.Helper()
	exportedOnce.Do(func() {
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
		base := c.Node(leader).URL()
		code, out := post(t, base, urls, 2000)
		if code != http.StatusOK {
			t.Fatalf("HTTP %d", code)
		}
		if _, err := c.Node(leader).Node.FSM.WaitFor(context.Background(), out.TransactionID, func(t *fsm.Txn) bool { return t.Status.Terminal() }); err != nil {
			t.Fatal(err)
		}
		c.Node(leader).Node.Raft.Snapshot() // so the snapshot series have a value
		if resp, err := http.Get(base + "/v1/transactions/no-such-transaction"); err == nil {
			resp.Body.Close()
		}
		scrapeUntil(t, c, base, `txcoord_transactions_finished_total{status="committed"} 1`)
		exportedBody = scrapeUntil(t, c, base, `raft_replication_appendEntries_rpc{peer_id=`)
	})
	if exportedBody == "" {
		t.Fatal("no scrape of a running node (the first test that asked failed)")
	}
	return exportedBody
}

var metricName = regexp.MustCompile(`\b(txcoord|raft)_[a-zA-Z0-9_]+`)

// checkExported reports every txcoord_ or raft_ metric named in expr that body does not
// export (a histogram's _bucket series count as their family), and returns the names.
func checkExported(t *testing.T, body, where, expr string) []string {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	for _, name := range names {
		family := strings.TrimSuffix(name, "_bucket")
		if !strings.Contains(body, "\n"+family) && !strings.Contains(body, "# TYPE "+family+" ") {
			t.Errorf("%s queries %s, which /metrics does not export", where, name)
		}
	}
	return names
}

type dashboard struct {
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string         `json:"title"`
		Type    string         `json:"type"`
		Options map[string]any `json:"options"`
		Targets []struct {
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboardQueriesExist checks that every metric the Grafana dashboard in deploy/grafana
// queries (panels and template variables) is one a node really exports, so the dashboard
// cannot silently go blank after a rename; and that it keeps the shape issue 16 asked for:
// job and instance variables every query filters on, a Leader panel that names the
// leader, legends that name the instance, and one metric per panel (no counts and bytes
// on one axis).
func TestDashboardQueriesExist(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/txcoord-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	body := exportedMetrics(t)
	checked := 0
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type == "query"
		checked += len(checkExported(t, body, "variable "+v.Name, v.Definition))
	}
	if !vars["job"] || !vars["instance"] {
		t.Errorf("dashboard lacks job and instance query variables: %v", vars)
	}
	selector := regexp.MustCompile(`\b((?:txcoord|raft)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	leader := false
	for _, p := range dash.Panels {
		var families []string
		for i, tg := range p.Targets {
			checked += len(checkExported(t, body, "panel "+p.Title, tg.Expr))
			var fams []string
			for _, m := range selector.FindAllStringSubmatch(tg.Expr, -1) {
				if !strings.Contains(m[2], `job=~"$job"`) {
					t.Errorf("panel %q: %s does not filter on the job variable", p.Title, m[0])
				}
				fams = append(fams, strings.TrimSuffix(m[1], "_bucket"))
			}
			if i == 0 {
				families = fams
			} else if strings.Join(fams, ",") != strings.Join(families, ",") {
				t.Errorf("panel %q mixes metrics %v and %v on one axis", p.Title, families, fams)
			}
			if p.Type == "timeseries" && !strings.Contains(tg.LegendFormat, "{{instance}}") {
				t.Errorf("panel %q: legend %q does not name the instance", p.Title, tg.LegendFormat)
			}
		}
		if p.Title == "Leader" {
			leader = p.Type == "stat" && p.Options["textMode"] == "name" && len(p.Targets) == 1 &&
				strings.Contains(p.Targets[0].Expr, `role="leader"`) && strings.HasSuffix(p.Targets[0].Expr, "== 1") &&
				p.Targets[0].LegendFormat == "{{instance}}" && !strings.Contains(p.Targets[0].Expr, "$instance")
		}
	}
	if !leader {
		t.Error(`no "Leader" stat panel showing the leader's instance name (textMode name, only the leader's series, not filtered by $instance)`)
	}
	if checked < 30 {
		t.Fatalf("found only %d metric names in the dashboard", checked)
	}
}

// TestAlertRulesUseExportedMetrics checks that every txcoord_ and raft_ metric the alert
// rules in deploy/prometheus use is exported by a running node, so that a rename cannot
// leave an alert that never fires. (promtool test rules checks the rules' logic.)
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../deploy/prometheus/txcoord-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("rules file: %v", err)
	}
	body := exportedMetrics(t)
	alerts, checked := 0, 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			checked += len(checkExported(t, body, "alert "+r.Alert, r.Expr))
		}
	}
	if alerts < 10 || checked < alerts {
		t.Fatalf("found only %d alerts naming %d metrics", alerts, checked)
	}
}
