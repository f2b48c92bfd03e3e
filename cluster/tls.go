package cluster

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TLSStreamLayer wraps a raft.StreamLayer in TLS (issue 8): with tlsutil.MutualServer and
// MutualClient configs, both ends of every Raft connection present a certificate signed
// by the cluster CA, so a node without one can neither join the conversation nor read
// it. The inner layer keeps routing discovery connections (they are answered before TLS,
// on the same port; see transport.go).
type TLSStreamLayer struct {
	raft.StreamLayer
	Server *tls.Config // for accepted connections
	Client *tls.Config // for dialed ones (ServerName is set per address)
}

// Accept returns the next Raft connection as a TLS server connection. The handshake runs
// on the connection's first read (in raft's per-connection goroutine, so a slow or hostile
// peer never blocks Accept) and fails unless the peer's certificate verifies.
func (t *TLSStreamLayer) Accept() (net.Conn, error) {
	c, err := t.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds the handshake
	return &handshakeConn{Conn: tls.Server(c, t.Server)}, nil
}

// Dial opens a Raft connection and completes the TLS handshake within timeout.
func (t *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := t.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	cfg := t.Client.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(string(address)); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// handshakeConn clears the handshake deadline once the handshake is done.
type handshakeConn struct {
	*tls.Conn
	done bool
}

func (h *handshakeConn) Read(b []byte) (int, error) {
	if !h.done {
		if err := h.Conn.Handshake(); err != nil {
			h.Conn.Close()
			return 0, err
		}
		h.done = true
		_ = h.Conn.SetDeadline(time.Time{})
	}
	return h.Conn.Read(b)
}

// NewTLSTransport is NewTransport with mutual TLS on Raft connections: the same stream
// layer (host-name advertising, discovery on the Raft port) wrapped in a TLSStreamLayer.
func NewTLSTransport(bind, advertise string, server, client *tls.Config, lg hclog.Logger) (*Transport, error) {
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	s, err := NewStreamLayer(bind, advertise, lg)
	if err != nil {
		return nil, err
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &TLSStreamLayer{StreamLayer: s, Server: server, Client: client},
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  lg,
	})
	return &Transport{NetworkTransport: nt, Stream: s}, nil
}
