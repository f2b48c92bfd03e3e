package cluster

import (
	"testing"
	"time"
)

// TestStalledFollowerDetection pins when the leader treats a follower as stalled behind a
// snapshot (stall.go): only a follower of its term, standing still for the grace period at
// a last entry of an earlier term at or beyond the leader's newest snapshot.
func TestStalledFollowerDetection(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const grace = 3 * time.Second
	info := func(term, last, lastTerm uint64) PeerInfo {
		return PeerInfo{Ready: true, Term: term, LastIndex: last, LastLogTerm: lastTerm}
	}
	cases := []struct {
		name    string
		answers []PeerInfo // one a second from t0
		term    uint64
		snap    uint64
		want    bool
	}{
		{"stalled at an old suffix past the snapshot", []PeerInfo{info(3, 327, 2), info(3, 327, 2), info(3, 327, 2), info(3, 327, 2)}, 3, 67, true},
		{"still within the grace period", []PeerInfo{info(3, 327, 2), info(3, 327, 2), info(3, 327, 2)}, 3, 67, false},
		{"caught up: last entry of the leader's term", []PeerInfo{info(3, 90, 3), info(3, 90, 3), info(3, 90, 3), info(3, 90, 3)}, 3, 67, false},
		{"behind the snapshot: installing it is enough", []PeerInfo{info(3, 50, 2), info(3, 50, 2), info(3, 50, 2), info(3, 50, 2)}, 3, 67, false},
		{"moving: its log changed a second ago", []PeerInfo{info(3, 327, 2), info(3, 327, 2), info(3, 327, 2), info(3, 328, 2)}, 3, 67, false},
		{"in another term", []PeerInfo{info(2, 327, 2), info(2, 327, 2), info(2, 327, 2), info(2, 327, 2)}, 3, 67, false},
		{"the leader has no snapshot", []PeerInfo{info(3, 327, 2), info(3, 327, 2), info(3, 327, 2), info(3, 327, 2)}, 3, 0, false},
		{"not ready answers do not count", []PeerInfo{{Term: 3}, {Term: 3}, {Term: 3}, info(3, 327, 2)}, 3, 67, false},
	}
	for _, tc := range cases {
		var l peerLog
		now := t0
		for i, a := range tc.answers {
			now = t0.Add(time.Duration(i) * time.Second)
			l.observe(a, now)
		}
		if got := l.stalledBeyond(tc.term, tc.snap, now, grace); got != tc.want {
			t.Errorf("%s: stalled = %v, want %v (%+v)", tc.name, got, tc.want, l)
		}
	}
}
