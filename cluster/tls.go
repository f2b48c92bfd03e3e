package cluster

import (
	"crypto/tls"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// NewTLSTransport is NewTransport with mutual TLS on the Raft port (issue 8): with
// tlsutil.MutualServer and MutualClient configs, both ends of every connection, Raft and
// discovery alike, present a certificate signed by the cluster CA, so a node without one
// can neither take part in Raft nor probe, join or remove members through discovery.
func NewTLSTransport(bind, advertise string, server, client *tls.Config, lg hclog.Logger) (*Transport, error) {
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	s, err := NewStreamLayer(bind, advertise, lg)
	if err != nil {
		return nil, err
	}
	s.SetTLS(server, client)
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  lg,
	})
	return &Transport{NetworkTransport: nt, Stream: s}, nil
}
