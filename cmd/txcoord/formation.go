package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/server"
)

// formationFlags are serve's cluster-formation flags (see cluster/discovery.go) and the
// participant-call headers.
type formationFlags struct {
	bootstrapExpect int
	join            string
	partHeaders     []string
}

func (f *formationFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0,
		"form a new cluster once this many nodes without state have found each other through --join (0: never bootstrap, only join)")
	fs.StringVar(&f.join, "join", "",
		"where to find other nodes: their Raft addresses, host:port,...; a DNS name with several A records (a headless Service) counts every record")
	fs.StringArrayVar(&f.partHeaders, "participant-header", nil,
		`header added to every call to participants, "Name: value" (repeat for more)`)
}

// formation is what runServe needs to start and stop cluster formation.
type formation struct {
	tr   *cluster.Transport
	disc *cluster.Discovery
	run  bool // formation (not only answering the protocol)
}

// setup validates the flags and prepares cfg: the Raft transport (DNS-named advertise
// addresses, discovery on the Raft port), the participant headers, and discovery when
// --bootstrap-expect or --join is given.
func (f *formationFlags) setup(fl *serveFlags, cfg *server.Config, lg hclog.Logger) (*formation, error) {
	join, err := cluster.ParseJoin(f.join)
	if err != nil {
		return nil, err
	}
	switch {
	case f.bootstrapExpect < 0:
		return nil, fmt.Errorf("--bootstrap-expect must not be negative")
	case (f.bootstrapExpect > 0 || len(join) > 0) && len(cfg.Cluster.Peers) > 0:
		return nil, fmt.Errorf("--peers (a static first configuration) and --bootstrap-expect/--join (discovery) exclude each other")
	case f.bootstrapExpect > 1 && len(join) == 0:
		return nil, fmt.Errorf("--bootstrap-expect %d needs --join to find the other nodes", f.bootstrapExpect)
	}
	if len(f.partHeaders) > 0 {
		h := http.Header{}
		for _, kv := range f.partHeaders {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, fmt.Errorf("--participant-header %q: want \"Name: value\"", kv)
			}
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		cfg.Participant.Header = h // server.Start builds the client (with the URL policy)
	}
	// A peers.json in the data dir is the operator's manual recovery after a lost quorum.
	if fl.dataDir != "" {
		if _, err := cluster.RecoverIfRequested(fl.dataDir, fl.nodeID, lg); err != nil {
			return nil, err
		}
	}
	tr, err := fl.security.newTransport(fl.raftAddr, fl.raftAdvertise, lg.Named("transport")) // mutual TLS with --tls-ca
	if err != nil {
		return nil, err
	}
	cfg.Cluster.Transport = tr
	// The discovery protocol is always answered (txcoord peers, joining nodes); formation
	// runs only with --bootstrap-expect or --join.
	out := &formation{tr: tr, run: f.bootstrapExpect > 0 || len(join) > 0}
	out.disc = cluster.NewDiscovery(tr, fl.nodeID, cfg.Cluster.HTTPAdvertise, cluster.DiscoveryConfig{
		Join: join, BootstrapExpect: f.bootstrapExpect, Logger: lg,
	})
	return out, nil
}

// start runs discovery for the node that server.Start opened.
func (f *formation) start(srv *server.Server) {
	if f.run {
		f.disc.Start(srv.Node)
	} else {
		f.disc.Attach(srv.Node)
	}
}

// abort releases the transport when the node could not start.
func (f *formation) abort() { _ = f.tr.Close() }

// stop ends discovery before the node shuts down.
func (f *formation) stop() { f.disc.Close() }
