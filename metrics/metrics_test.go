package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHostLabelsAreBounded: past MaxHostLabels distinct participant hosts, calls are
// counted under host="other", so clients cannot grow the scrape without bound.
func TestHostLabelsAreBounded(t *testing.T) {
	m := New(Sources{})
	for i := 0; i < MaxHostLabels+50; i++ {
		m.Call(fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), "prepare", "ack", time.Millisecond)
		m.Retry(fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), "commit")
	}
	if n := testutil.CollectAndCount(m.calls); n != MaxHostLabels+1 {
		t.Fatalf("%d call series, want %d hosts + other", n, MaxHostLabels)
	}
	if got := testutil.ToFloat64(m.calls.WithLabelValues("other", "prepare", "ack")); got != 50 {
		t.Fatalf("other counted %v calls, want 50", got)
	}
	if n := testutil.CollectAndCount(m.retries); n != MaxHostLabels+1 {
		t.Fatalf("%d retry series, want %d", n, MaxHostLabels+1)
	}
}
