package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// discoveryMagic is the first byte of a discovery connection on the Raft port. Raft's own
// connections start with an RPC type, a small integer (0 to 4 in hashicorp/raft v1.7), so
// the two never collide, and a node that still runs raft's plain TCP transport talks to
// this one unchanged.
const discoveryMagic byte = 0xD7

// Transport is the Raft transport `txcoord serve` uses: hashicorp/raft's NetworkTransport
// over a StreamLayer that (1) advertises a host name as well as an IP, so that a peer can be
// named by DNS (a StatefulSet pod's stable name) and a changed IP does not break the Raft
// configuration, and (2) shares the Raft port with the discovery protocol (see Discovery).
// Closing it (raft.Shutdown does) closes the listener.
type Transport struct {
	*raft.NetworkTransport
	Stream *StreamLayer
}

// NewTransport listens on bind and advertises advertise ("host:port"; the host may be a DNS
// name, but not an unspecified address such as 0.0.0.0). An empty advertise means bind.
func NewTransport(bind, advertise string, lg hclog.Logger) (*Transport, error) {
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	s, err := NewStreamLayer(bind, advertise, lg)
	if err != nil {
		return nil, err
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  lg,
		// 1: no pipelined replication. With raft's default (2) the pipeline's channels are
		// unbuffered, and a follower that answers an AppendEntries with Success=false (an
		// empty joiner: "failed to get previous log") can leave the leader's replication
		// goroutine parked for good: that follower gets no more entries and Raft.Shutdown
		// never returns (seen here in the --peers recovery test under -race; the same
		// deadlock is analysed in grafana/pyroscope#5518). Measured (docs/performance.md,
		// "Raft pipelining"): on doubles bare Raft applies at c=64 but transactions, bound
		// by HTTP and CPU, gain nothing (592 txn/s off, 504 on, one run each).
		MaxRPCsInFlight: 1,
	})
	return &Transport{NetworkTransport: nt, Stream: s}, nil
}

// CheckAdvertise validates a Raft advertise address: host:port, a numeric port, and a host
// other nodes can dial (a name, or an IP that is not 0.0.0.0 or ::).
func CheckAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("raft advertise address %q: %v", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("raft advertise address %q: port must be 1-65535", addr)
	}
	if host == "" {
		return fmt.Errorf("raft advertise address %q: no host: other nodes could not dial it (set --raft-advertise)", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("raft advertise address %q: %s is not an address other nodes can dial (set --raft-advertise)", addr, host)
	}
	return nil
}

// advertAddr is a net.Addr that is only a string: NetworkTransport uses Addr().String()
// as this node's ServerAddress.
type advertAddr string

func (a advertAddr) Network() string { return "tcp" }
func (a advertAddr) String() string  { return string(a) }

// StreamLayer is a raft.StreamLayer over TCP that advertises a host name and routes
// discovery connections (first byte discoveryMagic) to a handler instead of Raft.
type StreamLayer struct {
	ln        net.Listener
	advertise advertAddr
	lg        hclog.Logger

	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	handler func(net.Conn) // discovery; nil: such connections are closed
	dialer  func(ctx context.Context, addr string) (net.Conn, error)
	// With TLS set, every connection on the port, Raft and discovery alike, is TLS from
	// its first byte: routing happens inside the tunnel, so discovery (which can add and
	// remove voters) is as protected as Raft.
	tlsServer, tlsClient *tls.Config
}

// SetTLS makes every accepted connection a TLS server connection with server and every
// dialed one a TLS client connection with client (mutual TLS when both require and present
// certificates). Call it before the transport is used.
func (s *StreamLayer) SetTLS(server, client *tls.Config) {
	s.mu.Lock()
	s.tlsServer, s.tlsClient = server, client
	s.mu.Unlock()
}

// SetDialer replaces how Raft and discovery connections are opened (tests map host names
// to loopback addresses with it). Call it before the transport is used.
func (s *StreamLayer) SetDialer(f func(ctx context.Context, addr string) (net.Conn, error)) {
	s.mu.Lock()
	s.dialer = f
	s.mu.Unlock()
}

// DialContext opens a connection to addr (a host name is resolved on every dial); with
// SetTLS it completes the TLS handshake before it returns.
func (s *StreamLayer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	f, client := s.dialer, s.tlsClient
	s.mu.Unlock()
	var c net.Conn
	var err error
	if f != nil {
		c, err = f(ctx, addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil || client == nil {
		return c, err
	}
	cfg := client.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// NewStreamLayer listens on bind; see NewTransport.
func NewStreamLayer(bind, advertise string, lg hclog.Logger) (*StreamLayer, error) {
	if advertise == "" {
		advertise = bind
	}
	// Port 0 (bind or advertise) means the port the listener gets.
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %v", advertise, err)
	}
	pick := port == "0"
	if pick {
		port = "1" // only for the check below
	}
	if err := CheckAdvertise(net.JoinHostPort(host, port)); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	if pick {
		_, real, _ := net.SplitHostPort(ln.Addr().String())
		advertise = net.JoinHostPort(host, real)
	}
	s := &StreamLayer{ln: ln, advertise: advertAddr(advertise), lg: lg, conns: make(chan net.Conn), closed: make(chan struct{})}
	go s.acceptLoop()
	return s, nil
}

// SetDiscoveryHandler installs the handler for discovery connections. The handler owns the
// connection (it must close it); the magic byte has been consumed.
func (s *StreamLayer) SetDiscoveryHandler(h func(net.Conn)) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

// hasDiscoveryHandler reports whether a discovery handler is installed.
func (s *StreamLayer) hasDiscoveryHandler() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handler != nil
}

// ListenAddr is the address actually bound (useful with port 0).
func (s *StreamLayer) ListenAddr() net.Addr { return s.ln.Addr() }

func (s *StreamLayer) acceptLoop() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary (e.g. too many open files): back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.lg.Warn("accept failed; retrying", "error", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-s.closed:
				return
			}
			continue
		}
		delay = 0
		go s.route(c)
	}
}

// route reads the first byte and hands the connection to discovery or to Raft. With TLS,
// that first read runs the handshake (bounded by the same deadline), so a peer without a
// valid certificate reaches neither.
func (s *StreamLayer) route(c net.Conn) {
	s.mu.Lock()
	server := s.tlsServer
	s.mu.Unlock()
	if server != nil {
		c = tls.Server(c, server)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 64)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if first[0] == discoveryMagic {
		_, _ = br.ReadByte()
		s.mu.Lock()
		h := s.handler
		s.mu.Unlock()
		if h == nil {
			c.Close()
			return
		}
		h(&peekedConn{Conn: c, r: br})
		return
	}
	select {
	case s.conns <- &peekedConn{Conn: c, r: br}:
	case <-s.closed:
		c.Close()
	}
}

// Accept implements net.Listener for Raft: the next Raft connection.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close stops listening; connections already handed out stay open.
func (s *StreamLayer) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.ln.Close()
	})
	return err
}

// Addr is the advertised address, which may carry a host name.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// Dial opens a Raft connection; a host name is resolved on every dial, so a peer whose IP
// changed is found again.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.DialContext(ctx, string(address))
}

// peekedConn is a connection whose first bytes were buffered while routing it.
type peekedConn struct {
	net.Conn
	r io.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
