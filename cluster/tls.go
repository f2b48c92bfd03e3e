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
		// 1: no pipelined replication. With raft's default (2) the pipeline's channels are
		// unbuffered, and a follower that answers an AppendEntries with Success=false (an
		// empty joiner: "failed to get previous log") can leave the leader's replication
		// goroutine parked for good: that follower gets no more entries and Raft.Shutdown
		// never returns (seen here in the --peers recovery test under -race; the same
		// deadlock is analysed in grafana/pyroscope#5518). Transactions gain nothing from
		// pipelining (docs/performance.md, "Raft pipelining").
		MaxRPCsInFlight: 1,
	})
	return &Transport{NetworkTransport: nt, Stream: s}, nil
}
