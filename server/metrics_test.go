package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/server/servertest"
)

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	return string(b)
}

// TestMetricsAfterATransaction checks that /metrics reports a committed transaction, the
// participant calls behind it, the node's Raft role, and raft's own timings.
func TestMetricsAfterATransaction(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(10 * time.Second)
	code, out := post(t, c.Node(leader).URL(), urls, 2000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("HTTP %d %+v", code, out)
	}
	// The answer comes once every participant acknowledged; the completion entry follows.
	id := out.TransactionID
	if _, err := c.Node(leader).Node.FSM.WaitFor(context.Background(), id, func(t *fsm.Txn) bool { return t.Status == fsm.StatusCommitted }); err != nil {
		t.Fatal(err)
	}
	// The driver records the outcome just after the completion is applied: wait for it.
	body := scrapeUntil(t, c, c.Node(leader).URL(), `txcoord_transactions_finished_total{status="committed"} 1`)
	for _, want := range []string{
		`txcoord_transactions_finished_total{status="committed"} 1`,
		`txcoord_transaction_duration_seconds_count{phase="total"} 1`,
		`txcoord_participant_calls_total{host="` + strings.TrimPrefix(strings.TrimSuffix(urls[0], "/prepare"), "http://") + `",phase="prepare",result="ack"} 1`,
		`txcoord_raft_state{role="leader"} 1`,
		`txcoord_transactions{status="committed"} 1`,
		`txcoord_ready 1`,
		`raft_commitTime`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("leader's /metrics lacks %s", want)
		}
	}
	if body := scrape(t, c.Node(c.Follower()).URL()); !strings.Contains(body, `txcoord_raft_state{role="follower"} 1`) {
		t.Errorf("follower's /metrics does not say it follows")
	}
}

// scrapeUntil scrapes base's /metrics until the text contains want (or 10 s pass) and
// returns the last scrape.
func scrapeUntil(t *testing.T, c *servertest.Cluster, base, want string) string {
	t.Helper()
	var body string
	_ = c.Eventually(10*time.Second, func() error {
		body = scrape(t, base)
		if !strings.Contains(body, want) {
			return fmt.Errorf("no %s yet", want)
		}
		return nil
	})
	return body
}
