package main

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/server"
)

func TestFormationFlags(t *testing.T) {
	cases := []struct {
		name    string
		ff      formationFlags
		peers   []cluster.Peer
		adv     string
		wantErr string
	}{
		{name: "static peers only", peers: []cluster.Peer{{ID: "n1", RaftAddr: "127.0.0.1:7001"}}},
		{name: "discovery", ff: formationFlags{bootstrapExpect: 3, join: "a:7000,b:7000"}},
		{name: "single node", ff: formationFlags{bootstrapExpect: 1}},
		{name: "join only", ff: formationFlags{join: "txcoord-peers:7000"}},
		{name: "dns advertise", ff: formationFlags{bootstrapExpect: 3, join: "peers:7000"}, adv: "txcoord-0.txcoord-peers:7000"},
		{name: "both", ff: formationFlags{bootstrapExpect: 3, join: "a:7000"}, peers: []cluster.Peer{{ID: "n1", RaftAddr: "127.0.0.1:7001"}}, wantErr: "exclude each other"},
		{name: "expect without join", ff: formationFlags{bootstrapExpect: 3}, wantErr: "needs --join"},
		{name: "negative", ff: formationFlags{bootstrapExpect: -1}, wantErr: "negative"},
		{name: "bad join", ff: formationFlags{join: "nohost"}, wantErr: "host:port"},
		{name: "unspecified advertise", ff: formationFlags{join: "a:7000"}, adv: "0.0.0.0:7000", wantErr: "not an address other nodes can dial"},
		{name: "header", ff: formationFlags{partHeaders: []string{"Txcoord-Node: n1"}}},
		{name: "bad header", ff: formationFlags{partHeaders: []string{"novalue"}}, wantErr: "Name: value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fl := &serveFlags{nodeID: "n1", raftAddr: "127.0.0.1:0", raftAdvertise: c.adv}
			cfg := &server.Config{}
			cfg.Cluster.Peers = c.peers
			f, err := c.ff.setup(fl, cfg, hclog.NewNullLogger())
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.abort()
			if cfg.Cluster.Transport == nil {
				t.Fatal("no transport")
			}
			if f.run != (c.ff.bootstrapExpect > 0 || c.ff.join != "") {
				t.Fatalf("formation runs = %v", f.run)
			}
			if len(c.ff.partHeaders) > 0 && cfg.Participant.Header.Get("Txcoord-Node") != "n1" {
				t.Fatal("participant headers not applied")
			}
		})
	}
}
