package main

import (
	"reflect"
	"testing"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/internal/loopback"
)

// TestPeersFlagRoundTrip: the --peers value the chaos harness builds for its processes
// (loopback.PeersFlag) is read by serve as the same peers.
func TestPeersFlagRoundTrip(t *testing.T) {
	var ports loopback.Ports
	defer ports.Close()
	lps, err := ports.Peers(3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	flag, err := loopback.PeersFlag(lps)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parsePeers(flag)
	if err != nil {
		t.Fatalf("parsePeers(%q): %v", flag, err)
	}
	var want []cluster.Peer
	for _, p := range lps {
		want = append(want, cluster.Peer{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr})
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsePeers(%q) = %+v, want %+v", flag, got, want)
	}
}
