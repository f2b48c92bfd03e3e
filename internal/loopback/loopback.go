// Package loopback chooses the 127.0.0.1 addresses of a local cluster: the in-process
// clusters of tests, `txcoord dev` and bench (internal/localcluster), the processes of the
// chaos harness and the Raft-level test cluster of package cluster. It is the one rule for
// those addresses (and their quick Raft timings): node i of n is "n<i+1>", its ports are a
// fixed base plus i or free ones, and every listener stays open until all are chosen, so
// that the kernel cannot hand one free port out twice. It imports the standard library
// only, so any package can use it.
package loopback

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Raft timings of a local cluster (in-process or processes): quick elections on loopback,
// where production keeps its conservative defaults. They do not change the steady-state
// commit path.
const (
	HeartbeatTimeout   = 300 * time.Millisecond
	ElectionTimeout    = 300 * time.Millisecond
	LeaderLeaseTimeout = 150 * time.Millisecond
)

// ListenError is a port that could not be opened (most often: already in use).
type ListenError struct {
	Addr string // the address asked for, "127.0.0.1:<port>" (port 0 for a free one)
	Err  error
}

func (e *ListenError) Error() string { return "listening on " + e.Addr + ": " + e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// Listen opens a TCP listener on 127.0.0.1:base+i, or on a free port when base is 0.
// A failure is a *ListenError.
func Listen(base, i int) (net.Listener, error) {
	p := 0
	if base != 0 {
		p = base + i
	}
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Addr: addr, Err: err}
	}
	return ln, nil
}

// Ports holds the listeners of addresses being chosen. The zero value is ready to use; it
// is not safe for concurrent use.
type Ports struct {
	held []net.Listener
}

// Listen opens and holds a listener as the package-level Listen does, and returns its
// address ("127.0.0.1:port").
func (p *Ports) Listen(base, i int) (string, error) {
	ln, err := Listen(base, i)
	if err != nil {
		return "", err
	}
	p.held = append(p.held, ln)
	return ln.Addr().String(), nil
}

// Take hands the held listener on addr over to the caller, who must close it (a server
// that serves on it does); it returns nil if none is held there.
func (p *Ports) Take(addr string) net.Listener {
	for i, ln := range p.held {
		if ln.Addr().String() == addr {
			p.held = append(p.held[:i], p.held[i+1:]...)
			return ln
		}
	}
	return nil
}

// Close closes every listener still held, freeing the ports for whoever binds them next
// (the Raft transport or a child process). It is safe to call more than once.
func (p *Ports) Close() {
	for _, ln := range p.held {
		ln.Close()
	}
	p.held = nil
}

// Peer is one node of a local cluster.
type Peer struct {
	ID       string // "n1", "n2", ...
	HTTPAddr string // "127.0.0.1:port"
	RaftAddr string // "127.0.0.1:port"
}

// Peers chooses the addresses of n nodes, ids n1 to n<n>: node i's API on httpBase+i and
// its Raft port on raftBase+i, a base of 0 meaning free ports. The listeners are held in p
// (on error too: the caller's Close releases them).
func (p *Ports) Peers(n, httpBase, raftBase int) ([]Peer, error) {
	if n <= 0 {
		return nil, fmt.Errorf("a cluster of %d nodes: want at least 1", n)
	}
	out := make([]Peer, 0, n)
	for i := range n {
		h, err := p.Listen(httpBase, i)
		if err != nil {
			return nil, err
		}
		r, err := p.Listen(raftBase, i)
		if err != nil {
			return nil, err
		}
		out = append(out, Peer{ID: fmt.Sprintf("n%d", i+1), HTTPAddr: h, RaftAddr: r})
	}
	return out, nil
}

// Free returns n distinct addresses whose ports were free a moment ago (held together
// while chosen, then released).
func Free(n int) ([]string, error) {
	var p Ports
	defer p.Close()
	out := make([]string, 0, n)
	for range n {
		a, err := p.Listen(0, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// PeersFlag returns peers the way `txcoord serve --peers` reads them:
// "id=raftaddr@httpaddr,...". An empty ID or address is an error.
func PeersFlag(peers []Peer) (string, error) {
	items := make([]string, len(peers))
	for i, p := range peers {
		if p.ID == "" || p.RaftAddr == "" || p.HTTPAddr == "" {
			return "", errors.New("loopback: a peer needs an id, a Raft and an HTTP address")
		}
		items[i] = p.ID + "=" + p.RaftAddr + "@" + p.HTTPAddr
	}
	return strings.Join(items, ","), nil
}
