package localcluster

import (
	"errors"
	"go/build"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/loopback"
	"github.com/txcoord/txcoord/version"
)

// TestKillAndRestartKeepsState: a killed leader is replaced, comes back on its own data
// directory and addresses, and ends with the same state as the others.
func TestKillAndRestartKeepsState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c, err := Start(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leader, err := c.WaitReady(version.FeatureLevel, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.URLs()); got != 3 {
		t.Fatalf("%d URLs, want 3", got)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatalf("killing the leader: %v", err)
	}
	if c.Node(leader) != nil || len(c.Running()) != 2 {
		t.Fatalf("node %d still listed as up after Kill", leader)
	}
	if _, err := c.StateHash(leader); err == nil {
		t.Error("StateHash of a down node succeeded")
	}
	next, err := c.WaitLeader(10 * time.Second)
	if err != nil || next == leader {
		t.Fatalf("after killing node %d: leader %d, %v", leader, next, err)
	}
	srv, err := c.StartNode(leader)
	if err != nil {
		t.Fatal(err)
	}
	if srv.URL() != "http://"+c.Peer(leader).HTTPAddr {
		t.Errorf("restarted on %s, want %s", srv.URL(), c.Peer(leader).HTTPAddr)
	}
	if _, err := c.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartNode(3); err == nil {
		t.Error("StartNode(3) of 3 nodes succeeded")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestStartErrors: no Dir is refused; a fixed port that is taken is a *loopback.ListenError
// naming it, so that `txcoord dev` can say which flag picks another.
func TestStartErrors(t *testing.T) {
	if _, err := Start(Options{}); err == nil {
		t.Error("Start without a Dir succeeded")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	_, err = Start(Options{Dir: t.TempDir(), RaftPort: port})
	var le *loopback.ListenError
	if !errors.As(err, &le) || le.Addr != busy.Addr().String() {
		t.Fatalf("Start with RaftPort %d taken: %v, want a ListenError for it", port, err)
	}
}

// TestNoTestingDependency: `txcoord dev` and bench link this package into the binary, so
// it must not import package testing (servertest is the testing.TB wrapper).
func TestNoTestingDependency(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkg.Imports {
		if p == "testing" || strings.HasSuffix(p, "test") {
			t.Errorf("localcluster imports %s", p)
		}
	}
}
