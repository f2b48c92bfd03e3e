package loopback

import (
	"errors"
	"go/build"
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestPeersAreDistinctAndHeld: free ports are never handed out twice, and every one stays
// taken until Close (another listener on it fails), then is free again.
func TestPeersAreDistinctAndHeld(t *testing.T) {
	var p Ports
	defer p.Close()
	peers, err := p.Peers(5, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, pr := range peers {
		if pr.ID != "n"+strconv.Itoa(i+1) {
			t.Errorf("peer %d id %q", i, pr.ID)
		}
		for _, a := range []string{pr.HTTPAddr, pr.RaftAddr} {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
			if ln, err := net.Listen("tcp", a); err == nil {
				ln.Close()
				t.Errorf("%s is not held", a)
			}
		}
	}
	if ln := p.Take(peers[0].HTTPAddr); ln == nil || ln.Addr().String() != peers[0].HTTPAddr {
		t.Fatalf("Take(%s) = %v", peers[0].HTTPAddr, ln)
	} else {
		ln.Close()
	}
	if p.Take(peers[0].HTTPAddr) != nil {
		t.Error("a listener taken twice")
	}
	p.Close()
	ln, err := net.Listen("tcp", peers[1].RaftAddr)
	if err != nil {
		t.Fatalf("%s still held after Close: %v", peers[1].RaftAddr, err)
	}
	ln.Close()
}

// TestABusyPort: a fixed port in use is a *ListenError naming it.
func TestABusyPort(t *testing.T) {
	addrs, err := Free(1)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addrs[0], err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	var p Ports
	defer p.Close()
	_, err = p.Peers(1, 0, port) // node 1's Raft port is the busy one
	var le *ListenError
	if !errors.As(err, &le) || le.Addr != addrs[0] {
		t.Fatalf("Peers on a busy port: %v, want a ListenError for %s", err, addrs[0])
	}
	if _, err := p.Peers(0, 0, 0); err == nil {
		t.Error("Peers(0) succeeded")
	}
}

func TestPeersFlag(t *testing.T) {
	got, err := PeersFlag([]Peer{{"n1", "127.0.0.1:81", "127.0.0.1:71"}, {"n2", "127.0.0.1:82", "127.0.0.1:72"}})
	if want := "n1=127.0.0.1:71@127.0.0.1:81,n2=127.0.0.1:72@127.0.0.1:82"; err != nil || got != want {
		t.Errorf("PeersFlag = %q, %v; want %q", got, err, want)
	}
	if _, err := PeersFlag([]Peer{{ID: "n1"}}); err == nil {
		t.Error("a peer without addresses was accepted")
	}
}

// TestImportsStandardLibraryOnly: package cluster's own tests and the chaos harness (which
// runs no node in-process) use this package; it must not pull in anything of txcoord.
func TestImportsStandardLibraryOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkg.Imports {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			t.Errorf("loopback imports %s; it must import the standard library only", p)
		}
	}
}
