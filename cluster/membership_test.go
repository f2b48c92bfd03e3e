package cluster

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDiscoveryMembershipFollowsTheOneSetOfRules: in discovery mode every member's record
// carries its HTTP address (followers that never joined through Node.Join included), and
// the discovery protocol's join and remove apply Node.Join's and Node.Remove's rules: a
// member is not re-addressed, an unreachable server is not added, and a removal forgets the
// member's record.
func TestDiscoveryMembershipFollowsTheOneSetOfRules(t *testing.T) {
	f, nodes, _, _ := formThree(t)
	leader := f.waitCluster(nodes, []string{"n1", "n2", "n3"}, 15*time.Second)
	waitFor(t, 10*time.Second, func() bool {
		for _, m := range leader.n.Status().Members {
			if m.HTTPAddr != fakeHTTP(m.ID) {
				return false
			}
		}
		return true
	}, "every member's HTTP address recorded")
	var follower *tnode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, m := range follower.n.Status().Members {
			if m.HTTPAddr != fakeHTTP(m.ID) {
				return false
			}
		}
		return true
	}, "a follower lists every member with its HTTP address")

	var dl net.Dialer
	dial := func(ctx context.Context, a string) (net.Conn, error) { return dl.DialContext(ctx, "tcp", a) }
	ctx := context.Background()
	dead := reservePorts(t, 1)[0]
	for _, tc := range []struct {
		from ViewEntry
		want string
	}{
		{ViewEntry{ID: "n2", RaftAddr: dead}, "member conflict"},         // re-addressing a member
		{ViewEntry{ID: "n9", RaftAddr: nodes[2].adv}, "member conflict"}, // a second id for an address
		{ViewEntry{ID: "n9", RaftAddr: dead}, "does not answer"},         // nobody runs there
	} {
		rep, err := call(ctx, dial, follower.adv, discoveryRequest{Op: "join", From: tc.from}, membershipCallTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Leader != "" { // a follower points at the leader
			rep, err = call(ctx, dial, rep.Leader, discoveryRequest{Op: "join", From: tc.from}, membershipCallTimeout)
			if err != nil {
				t.Fatal(err)
			}
		}
		if rep.Joined || !strings.Contains(rep.Error, tc.want) {
			t.Fatalf("join %+v: %+v, want a refusal naming %q", tc.from, rep, tc.want)
		}
	}
	if got := voters(leader.n); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("refused joins changed the voters: %v", got)
	}

	victim := nodes[2]
	if victim == leader {
		victim = nodes[1]
	}
	if err := RemovePeer(ctx, follower.adv, victim.id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		_, recorded := leader.n.FSM.Members()[victim.id]
		return !recorded && !slices.Contains(voters(leader.n), victim.id)
	}, "the removed member and its record gone")
}

// TestStaticPeersBootstrapOnlyWhenEveryPeerAnswered: with --peers, a node with an empty
// store does not bootstrap while any listed peer has not answered (it keeps asking), and
// the cluster forms, as one, once all are up and empty.
func TestStaticPeersBootstrapOnlyWhenEveryPeerAnswered(t *testing.T) {
	f := newTestCluster(t, DiscoveryConfig{})
	addrs := reservePorts(t, 3)
	var peers []Peer
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		peers = append(peers, Peer{ID: id, RaftAddr: a, HTTPAddr: fakeHTTP(id)})
	}
	n1 := f.openStatic("n1", peers, t.TempDir())
	n2 := f.openStatic("n2", peers, t.TempDir())
	// n3 is not running: whatever the number of rounds, n1 and n2 stay without state.
	time.Sleep(time.Second) // about 20 rounds of asking
	for _, n := range []*Node{n1, n2} {
		if hasState(n) || n.Bootstrapped() {
			t.Fatalf("%s bootstrapped while a listed peer was down", n.ID())
		}
	}
	n3 := f.openStatic("n3", peers, t.TempDir())
	waitFor(t, 20*time.Second, func() bool {
		for _, n := range []*Node{n1, n2, n3} {
			if !slices.Equal(voters(n), []string{"n1", "n2", "n3"}) || n.Status().LeaderID == "" {
				return false
			}
		}
		return n1.Status().LeaderID == n2.Status().LeaderID && n2.Status().LeaderID == n3.Status().LeaderID
	}, "one cluster of n1, n2, n3")
}

// TestRemovePeerBackToBackThroughAnElection: scaling 5 -> 3 as docs/operations.md writes it,
// with the leader among the two removed: the first `peers remove` takes out the leader
// itself (an election follows), and the second, sent right after, waits for the next
// leader instead of failing with "no leader known".
func TestRemovePeerBackToBackThroughAnElection(t *testing.T) {
	addrs := reservePorts(t, 5)
	dc := DiscoveryConfig{Join: addrs, BootstrapExpect: 5}
	f := newTestCluster(t, dc)
	ids := []string{"n1", "n2", "n3", "n4", "n5"}
	nodes := f.startAll(ids, addrs, tempDirs(t, 5), dc)
	leader := f.waitCluster(nodes, ids, 20*time.Second)
	var via, other *tnode
	for _, n := range nodes {
		switch {
		case n == leader:
		case via == nil:
			via = n
		case other == nil:
			other = n
		}
	}
	ctx := context.Background()
	if err := RemovePeer(ctx, via.adv, leader.id, 10*time.Second); err != nil {
		t.Fatalf("removing the leader %s: %v", leader.id, err)
	}
	if err := RemovePeer(ctx, via.adv, other.id, 10*time.Second); err != nil {
		t.Fatalf("removing %s right after the leader: %v", other.id, err)
	}
	waitFor(t, 15*time.Second, func() bool {
		got := voters(via.n)
		return len(got) == 3 && !slices.Contains(got, leader.id) && !slices.Contains(got, other.id)
	}, "3 voters left, neither removed one among them")
}
