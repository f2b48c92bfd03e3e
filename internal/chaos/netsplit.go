package chaos

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// netFabric is the Raft network between the nodes: one raftProxy per node in front of its
// Raft port (the node advertises the proxy's address, so every Raft connection to it goes
// through the proxy). Isolating a node cuts it from every other node in both directions:
// its proxy drops every connection and refuses new ones (traffic to it), and the other
// proxies drop and refuse every connection it opened (traffic from it: a leader's
// AppendEntries ride on connections the leader dials). A proxy tells who dialed from the
// sender's address in the RPCHeader that hashicorp/raft sends first on every connection
// (the first known proxy address in the first bytes); a connection that names no node
// (the discovery protocol) is treated as coming from nobody in particular.
type netFabric struct {
	mu       sync.Mutex
	proxies  []*raftProxy
	byAddr   map[string]string // proxy address -> node ID
	isolated map[string]bool   // node ID -> cut from every other node
	conns    map[*splice]bool
}

// splice is one proxied connection: from dialer src (a node ID, or "") to node dst.
type splice struct {
	src, dst   string
	in, out    net.Conn
	closedOnce sync.Once
}

func (s *splice) close() {
	s.closedOnce.Do(func() {
		s.in.Close()
		if s.out != nil {
			s.out.Close()
		}
	})
}

func newNetFabric() *netFabric {
	return &netFabric{byAddr: map[string]string{}, isolated: map[string]bool{}, conns: map[*splice]bool{}}
}

// raftProxy forwards TCP connections from its address to one node's Raft port.
type raftProxy struct {
	f      *netFabric
	id     string // the node behind it
	target string // the node's --raft-addr
	ln     net.Listener
}

// add starts the proxy of node id, whose Raft port is target, on listen ("127.0.0.1:0": a
// free port) and returns its address (the node's --raft-advertise).
func (f *netFabric) add(id, target, listen string) (string, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", err
	}
	p := &raftProxy{f: f, id: id, target: target, ln: ln}
	f.mu.Lock()
	f.proxies = append(f.proxies, p)
	f.byAddr[ln.Addr().String()] = id
	f.mu.Unlock()
	go p.serve()
	return ln.Addr().String(), nil
}

// Isolate cuts node id from every other node until Heal: open connections to and from it
// are closed, new ones are closed as soon as they are accepted (before any byte reaches
// the other side).
func (f *netFabric) Isolate(id string) {
	f.mu.Lock()
	f.isolated[id] = true
	var drop []*splice
	for s := range f.conns {
		if s.src == id || s.dst == id {
			drop = append(drop, s)
			delete(f.conns, s)
		}
	}
	f.mu.Unlock()
	for _, s := range drop {
		s.close()
	}
}

// Heal ends the isolation of node id (nodes reconnect on their next RPC).
func (f *netFabric) Heal(id string) {
	f.mu.Lock()
	delete(f.isolated, id)
	f.mu.Unlock()
}

// HealAll ends every isolation.
func (f *netFabric) HealAll() {
	f.mu.Lock()
	clear(f.isolated)
	f.mu.Unlock()
}

// Close stops every proxy and closes every connection.
func (f *netFabric) Close() {
	f.mu.Lock()
	ps := f.proxies
	f.proxies = nil
	var drop []*splice
	for s := range f.conns {
		drop = append(drop, s)
	}
	clear(f.conns)
	f.mu.Unlock()
	for _, p := range ps {
		p.ln.Close()
	}
	for _, s := range drop {
		s.close()
	}
}

// Connections returns how many proxied connections are open.
func (f *netFabric) Connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

func (p *raftProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

// sender reads the first bytes of a connection (up to 4 KiB or 2 s) until they name a
// node's proxy address other than this one. A first byte that is no hashicorp/raft RPC
// type (0-15; the discovery protocol's 0xD7 is not) ends the search at once: such a client
// waits for an answer to what it sent.
func (p *raftProxy) sender(c net.Conn) (string, []byte) {
	p.f.mu.Lock()
	addrs := make(map[string]string, len(p.f.byAddr))
	for a, id := range p.f.byAddr {
		if id != p.id {
			addrs[a] = id
		}
	}
	p.f.mu.Unlock()
	var buf []byte
	tmp := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for len(buf) < 4096 {
		n, err := c.Read(tmp[:4096-len(buf)])
		buf = append(buf, tmp[:n]...)
		if len(buf) > 0 && buf[0] > 15 {
			return "", buf
		}
		for a, id := range addrs {
			if bytes.Contains(buf, []byte(a)) {
				return id, buf
			}
		}
		if err != nil {
			break
		}
	}
	return "", buf
}

func (p *raftProxy) handle(c net.Conn) {
	s := &splice{dst: p.id, in: c}
	if p.f.blocked(s) {
		c.Close()
		return
	}
	src, first := p.sender(c)
	s.src = src
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	s.out = out
	// Registered under the lock that Isolate takes, so a connection is either dropped by
	// Isolate or refused here, never missed.
	p.f.mu.Lock()
	if p.f.isolated[s.src] || p.f.isolated[s.dst] {
		p.f.mu.Unlock()
		s.close()
		return
	}
	p.f.conns[s] = true
	p.f.mu.Unlock()
	defer func() {
		p.f.mu.Lock()
		delete(p.f.conns, s)
		p.f.mu.Unlock()
		s.close()
	}()
	if _, err := out.Write(first); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, out); done <- struct{}{} }()
	<-done // either side gone: close both
}

func (f *netFabric) blocked(s *splice) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.isolated[s.dst] || (s.src != "" && f.isolated[s.src])
}
