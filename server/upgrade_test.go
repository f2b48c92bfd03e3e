package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
	"github.com/txcoord/txcoord/version"
)

// TestUnknownCommandStopsTheNode (issue 11): a log entry of a type this build does not know
// (what a newer build would write) is never applied as a no-op. Every node that meets it
// stops, with an error naming the index, the type and its version; nothing after it is
// applied, and the API goes down with the node. The transaction committed before it is
// intact in each stopped node's state.
func TestUnknownCommandStopsTheNode(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(30 * time.Second)
	code, out := post(t, c.Node(leader).URL(), urls, 5000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("POST before the entry: %d %+v", code, out)
	}
	var nodes []*server.Server
	for i := 0; i < c.Len(); i++ {
		nodes = append(nodes, c.Node(i))
	}
	f := c.Node(leader).Node.Raft.Apply([]byte{0x70, 1, 2, 3}, 10*time.Second)
	_ = f.Error() // the leader may halt before it answers
	index := f.Index()
	// The entry commits on a quorum, and every node that has it stops. A node that was
	// behind may never receive it (the others stop before they replicate it): such a node
	// must simply never have applied it.
	deadline := time.After(30 * time.Second)
	halted := 0
	for _, n := range nodes {
		select {
		case <-n.Halted():
			halted++
		case <-deadline:
		}
	}
	if halted < 2 {
		t.Fatalf("%d of 3 nodes stopped on an unknown command type, want at least the quorum that committed it", halted)
	}
	for _, n := range nodes {
		if n.Node.HaltError() == nil {
			if index != 0 && n.Node.FSM.AppliedIndex() >= index {
				t.Errorf("%s applied past the unknown entry %d without stopping", n.Node.ID(), index)
			}
			continue
		}
		err := n.Node.HaltError()
		if !errors.Is(err, fsm.ErrHalted) || !errors.Is(err, fsm.ErrUnknownCommand) {
			t.Fatalf("%s: HaltError = %v", n.Node.ID(), err)
		}
		msg := err.Error()
		for _, want := range []string{"command type 112", "txcoord " + version.Version} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: halt message %q lacks %q", n.Node.ID(), msg, want)
			}
		}
		if index != 0 && !strings.Contains(msg, fmt.Sprintf("log entry %d ", index)) {
			t.Errorf("%s: halt message %q does not name index %d", n.Node.ID(), msg, index)
		}
		if got := n.Node.FSM.AppliedIndex(); index != 0 && got >= index {
			t.Errorf("%s: applied index %d reached the unknown entry %d", n.Node.ID(), got, index)
		}
		if tx, ok := n.Node.FSM.Get(out.TransactionID); !ok || tx.Decision != fsm.DecisionCommit {
			t.Errorf("%s: the committed transaction is %v after the halt", n.Node.ID(), tx)
		}
		if err := c.Eventually(10*time.Second, func() error {
			resp, err := http.Get(n.URL() + "/readyz")
			if err == nil {
				resp.Body.Close()
				return fmt.Errorf("API still answers %d", resp.StatusCode)
			}
			return nil
		}); err != nil {
			t.Errorf("%s: %v after the halt", n.Node.ID(), err)
		}
	}
}

// oldBuildProbe is node i's probe while old is set and n3 pretends to run a build before
// feature levels: n3's answers carry neither version nor level, and n3 itself (which, as
// an old build, would never raise the level) reaches nobody. probesOfN3 counts answers
// from n3.
func oldBuildProbe(i int, old *atomic.Bool, probesOfN3 *atomic.Int64) func(ctx context.Context, addr string, timeout time.Duration) (cluster.PeerInfo, error) {
	return func(ctx context.Context, addr string, timeout time.Duration) (cluster.PeerInfo, error) {
		if i == 2 && old.Load() {
			return cluster.PeerInfo{}, errors.New("n3 pretends to be an earlier build")
		}
		pi, err := cluster.Probe(ctx, addr, timeout)
		if err == nil && pi.ID == "n3" && old.Load() {
			pi.Version, pi.FeatureLevel, pi.TimeUnixMicro = "", 0, 0
			probesOfN3.Add(1)
		}
		return pi, err
	}
}

type clusterView struct {
	Version      string `json:"version"`
	FeatureLevel uint32 `json:"featureLevel"`
	Members      []struct {
		ID           string   `json:"id"`
		Version      string   `json:"version"`
		FeatureLevel uint32   `json:"featureLevel"`
		ClockOffset  *float64 `json:"clockOffsetMs"`
	} `json:"members"`
	ClockOffsetMs float64 `json:"clockOffsetMs"`
}

func getView(t *testing.T, base string) clusterView {
	t.Helper()
	resp, err := http.Get(base + "/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v clusterView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFeatureLevelWaitsForEveryServer (issue 11): the cluster enables a feature level only
// once every server of the configuration advertises it; while one runs an earlier build the
// level stays 0 on every node and a request for a level-1 feature is refused naming that
// server. When it is "upgraded", the level rises on every node, through the log.
func TestFeatureLevelWaitsForEveryServer(t *testing.T) {
	var old atomic.Bool
	var probesOfN3 atomic.Int64
	old.Store(true)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.ProbeInterval = 50 * time.Millisecond
		cfg.Cluster.Probe = oldBuildProbe(i, &old, &probesOfN3)
	}})
	leader := c.WaitLeader(30 * time.Second)
	// Every node has heard from n3 (as an old build) many times over.
	if err := c.Eventually(30*time.Second, func() error {
		for i := 0; i < 2; i++ { // n3 reaches nobody while it pretends
			for _, p := range c.Node(i).Node.Peers() {
				if !p.Reached {
					return fmt.Errorf("%s has not reached %s", c.Node(i).Node.ID(), p.ID)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ld := c.Node(leader).Node
	// Many more probe rounds (n1 and n2 each probe n3 once a round): the level stays 0.
	seen := probesOfN3.Load()
	if err := c.Eventually(30*time.Second, func() error {
		if probesOfN3.Load() < seen+40 {
			return errors.New("fewer than 20 more probe rounds")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < c.Len(); i++ {
		if lv := c.Node(i).Node.FSM.FeatureLevel(); lv != 0 {
			t.Fatalf("%s enabled feature level %d while n3 runs an earlier build", c.Node(i).Node.ID(), lv)
		}
	}
	// n1 and n2 hear n3 as an old build (n3 itself reaches nobody while it pretends).
	err := c.Node(0).Node.FeatureError(1, "payloads")
	if !errors.Is(err, cluster.ErrFeatureUnavailable) || !strings.Contains(err.Error(), "n3") {
		t.Fatalf("FeatureError while n3 is old: %v", err)
	}
	// n3 has reached no peer: it cannot tell whether the level is held back or being raised,
	// so its answer is the transient one (a 503 with Retry-After, not a final-looking 409).
	if err := c.Node(2).Node.FeatureError(1, "payloads"); !errors.Is(err, cluster.ErrFeaturePending) {
		t.Fatalf("FeatureError on a node that knows no peer's build: %v, want ErrFeaturePending", err)
	}
	{
		v := getView(t, c.Node(0).URL())
		for _, m := range v.Members {
			if m.ID == "n3" && (m.Version != "" || m.FeatureLevel != 0) {
				t.Fatalf("/v1/cluster shows the old n3 as %q level %d", m.Version, m.FeatureLevel)
			}
		}
	}

	old.Store(false) // n3 "upgraded"
	if err := c.Eventually(30*time.Second, func() error {
		for i := 0; i < c.Len(); i++ {
			if lv := c.Node(i).Node.FSM.FeatureLevel(); lv != version.FeatureLevel {
				return fmt.Errorf("%s at level %d", c.Node(i).Node.ID(), lv)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("feature level not raised after every server supports it: %v", err)
	}
	if err := ld.FeatureError(1, "payloads"); err != nil {
		t.Fatalf("FeatureError once enabled: %v", err)
	}
	v := getView(t, c.Node(c.WaitLeader(30*time.Second)).URL())
	if v.FeatureLevel != version.FeatureLevel || v.Version != version.String() {
		t.Fatalf("/v1/cluster: level %d version %q", v.FeatureLevel, v.Version)
	}
	for _, m := range v.Members {
		if m.Version != version.String() || m.FeatureLevel != version.FeatureLevel {
			t.Errorf("/v1/cluster member %s: version %q level %d", m.ID, m.Version, m.FeatureLevel)
		}
	}
}

// TestClockOffsetIsMeasured (issue 11): a node whose clock runs 2 h ahead is found out by
// its own measurements (it disagrees with a majority) and by its peers', and reports it in
// /v1/cluster; the nodes with correct clocks pass the check.
func TestClockOffsetIsMeasured(t *testing.T) {
	const skew = 2 * time.Hour
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.ProbeInterval = 50 * time.Millisecond
		if i == 2 {
			cfg.Cluster.Clock = func() time.Time { return time.Now().Add(skew) }
		}
	}})
	c.WaitLeader(30 * time.Second)
	if err := c.Eventually(30*time.Second, func() error {
		if err := c.Node(2).Node.CheckClock(); !errors.Is(err, cluster.ErrClockOffset) {
			return fmt.Errorf("n3 (2 h ahead): CheckClock = %v", err)
		}
		for _, i := range []int{0, 1} {
			if err := c.Node(i).Node.CheckClock(); err != nil {
				return fmt.Errorf("%s: %v", c.Node(i).Node.ID(), err)
			}
			if _, n := c.Node(i).Node.ClockOffset(); n < 2 {
				return fmt.Errorf("%s has %d clock readings", c.Node(i).Node.ID(), n)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	near := func(got float64, want time.Duration) bool {
		return got > float64((want-time.Second).Milliseconds()) && got < float64((want+time.Second).Milliseconds())
	}
	if v := getView(t, c.Node(2).URL()); !near(v.ClockOffsetMs, skew) {
		t.Errorf("n3 reports its offset as %v ms, want about %v", v.ClockOffsetMs, skew)
	}
	v := getView(t, c.Node(0).URL())
	if !near(v.ClockOffsetMs, 0) {
		t.Errorf("n1 reports its offset as %v ms, want about 0", v.ClockOffsetMs)
	}
	for _, m := range v.Members {
		if m.ID == "n3" && (m.ClockOffset == nil || !near(*m.ClockOffset, skew)) {
			t.Errorf("n1 sees n3's clock offset as %v ms, want about %v", m.ClockOffset, skew)
		}
	}
}

// TestSkewedNodeNeverLeads (issue 11): a node whose clock runs 2 h ahead of the others'
// refuses leadership: handed leadership, it transfers it on before it is ever ready, so it
// never stamps a deadline or a retention cut-off with its clock; the cluster keeps a ready
// leader among the other two.
func TestSkewedNodeNeverLeads(t *testing.T) {
	var skewedReady atomic.Bool
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.ProbeInterval = 50 * time.Millisecond
		cfg.Cluster.CanLeadInterval = 50 * time.Millisecond
		if i == 2 {
			cfg.Cluster.Clock = func() time.Time { return time.Now().Add(2 * time.Hour) }
		}
	}})
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // n3 must never report ready as leader, from start to end
		defer close(watched)
		for {
			if n := c.Node(2); n != nil && n.Node.LeaderReady() {
				skewedReady.Store(true)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-watched }()
	leader := c.WaitLeader(30 * time.Second)
	for round := 0; round < 3; round++ {
		if err := c.Node(leader).Node.TransferLeadership("n3"); err != nil {
			t.Logf("transfer to n3: %v", err)
		}
		if err := c.Eventually(30*time.Second, func() error {
			l := c.Leader()
			if l < 0 || l == 2 {
				return fmt.Errorf("no ready leader other than n3 (%d)", l)
			}
			leader = l
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if skewedReady.Load() {
		t.Fatal("the node whose clock is 2 h ahead was a ready leader")
	}
	if err := c.Node(2).Node.CheckClock(); !errors.Is(err, cluster.ErrClockOffset) {
		t.Fatalf("n3 CheckClock = %v", err)
	}
}
