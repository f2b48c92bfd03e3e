package server_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// suffrageOf returns id's suffrage in s's Raft configuration ("" when it is not a member).
func suffrageOf(t *testing.T, s *server.Server, id string) string {
	t.Helper()
	f := s.Node.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			if srv.Suffrage == raft.Voter {
				return "voter"
			}
			return "nonvoter"
		}
	}
	return ""
}

func getStatus(t *testing.T, base string) cluster.Status {
	t.Helper()
	resp, err := http.Get(base + "/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st cluster.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestJoinOfUnreachableServerIsRefused: a join naming a Raft address where no node answers
// is refused with 409 and a detail that says so, through a follower and the leader alike,
// and leaves the configuration as it was (no fourth voter, no non-voter either).
func TestJoinOfUnreachableServerIsRefused(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(20 * time.Second)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	body := fmt.Sprintf(`{"id":"n9","raftAddr":%q,"httpAddr":"127.0.0.1:1"}`, deadAddr)
	for _, via := range []string{c.Node(c.Follower()).URL(), c.Node(leader).URL()} {
		resp, err := http.Post(via+"/v1/cluster/join", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error, Detail string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(e.Detail, "does not answer") {
			t.Fatalf("join of an unreachable node via %s: HTTP %d %+v, want 409 naming the unreachable node", via, resp.StatusCode, e)
		}
	}
	f := c.Node(leader).Node.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Configuration().Servers); n != 3 {
		t.Fatalf("a refused join changed the configuration: %d servers", n)
	}
	if _, ok := c.Node(leader).Node.FSM.Members()["n9"]; ok {
		t.Fatal("a refused join recorded the node")
	}
}

// TestJoinedServerIsNonVoterUntilStable: a joined server starts as a non-voter and autopilot
// promotes it only once it has been healthy for the stabilization time (never sooner after
// the join); the leader's /v1/cluster then shows every member healthy with its HTTP address,
// and a follower's shows none of the leader-only health.
func TestJoinedServerIsNonVoterUntilStable(t *testing.T) {
	const stab = 1500 * time.Millisecond
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.Autopilot.ServerStabilizationTime = stab
		cfg.Cluster.ProbeInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader(20 * time.Second)
	// Autopilot waits the stabilization time only once it has run that long itself (the
	// library's rule, so that a new leader does not hold back servers it just met).
	time.Sleep(stab + 200*time.Millisecond)
	n4, raftAddr := servertest.StartJoiner(t, "n4")
	joined := time.Now()
	code, st := membershipPost(t, c.Node(leader).URL(), "join", fmt.Sprintf(`{"id":"n4","raftAddr":%q,"httpAddr":%q}`, raftAddr, n4.HTTPAddr()))
	if code != http.StatusOK {
		t.Fatalf("join: HTTP %d", code)
	}
	for _, m := range st.Members {
		if m.ID == "n4" && m.Suffrage != "nonvoter" {
			t.Fatalf("n4 joined as %s, want nonvoter", m.Suffrage)
		}
	}
	if err := c.Eventually(30*time.Second, func() error {
		if s := suffrageOf(t, c.Node(leader), "n4"); s != "voter" {
			return fmt.Errorf("n4 is %q", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(joined); took < stab {
		t.Fatalf("n4 was promoted %s after joining, before the stabilization time %s", took, stab)
	}
	if err := c.Eventually(20*time.Second, func() error {
		lst := getStatus(t, c.Node(leader).URL())
		if lst.Autopilot == nil || !lst.Autopilot.Healthy || lst.Autopilot.FailureTolerance != 1 {
			return fmt.Errorf("autopilot: %+v", lst.Autopilot)
		}
		for _, m := range lst.Members {
			if m.Health == nil || !m.Health.Healthy || m.Health.Status != "alive" {
				return fmt.Errorf("member %s health %+v", m.ID, m.Health)
			}
			if m.HTTPAddr == "" {
				return fmt.Errorf("member %s has no HTTP address", m.ID)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fst := getStatus(t, c.Node(c.Follower()).URL()); fst.Autopilot != nil {
		t.Fatalf("a follower reports autopilot health: %+v", fst.Autopilot)
	}
}

// TestDeadServerCleanup: with CleanupDeadServers, a voter the leader has not reached for
// DeadServerAfter is removed (and its record forgotten) through the one removal path, and
// the cluster keeps serving. (How many the cleanup may remove, never past a quorum, is
// raft-autopilot's rule and tested there.)
func TestDeadServerCleanup(t *testing.T) {
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.Autopilot.CleanupDeadServers = true
		cfg.Cluster.Autopilot.DeadServerAfter = time.Second
		cfg.Cluster.ProbeInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader(20 * time.Second)
	victim := (leader + 1) % 3
	vid := c.Peer(victim).ID
	if err := c.Eventually(10*time.Second, func() error {
		if _, ok := c.Node(leader).Node.FSM.Members()[vid]; !ok {
			return fmt.Errorf("%s has no record yet", vid)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.Kill(victim)
	if err := c.Eventually(30*time.Second, func() error {
		l := c.Leader()
		if l < 0 {
			return fmt.Errorf("no leader")
		}
		if s := suffrageOf(t, c.Node(l), vid); s != "" {
			return fmt.Errorf("%s is still a %s", vid, s)
		}
		if _, ok := c.Node(l).Node.FSM.Members()[vid]; ok {
			return fmt.Errorf("%s's record is still there", vid)
		}
		return nil
	}); err != nil {
		t.Fatalf("dead server not cleaned up: %v", err)
	}
	l := c.Leader()
	if code, out := post(t, c.Node(l).URL(), urls, 5000); code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("transaction after the cleanup: HTTP %d %+v", code, out)
	}
}
