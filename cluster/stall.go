package cluster

import (
	"errors"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Repairing a follower that hashicorp/raft (v1.7.3) leaves stalled after a snapshot
// (issue 12; upstream hashicorp/raft#697, fix proposed in #704, not released).
//
// A leader that is deposed with entries of its own term that never committed keeps them
// at the end of its log. When the new leader has compacted its log past the point where
// the two logs part, it catches the old leader up with InstallSnapshot. Raft's follower
// installs the snapshot (index S) but keeps its own log after it, and its idea of its
// last log entry stays the old suffix's last (index L, the old term) whenever L >= S:
// every AppendEntries the leader then sends (previous entry S) is rejected ("failed to get
// previous log" when compaction removed entry S, or "previous log term mis-match" when
// the old entry S is still there), the leader finds it no longer has entry S-1 and sends
// the snapshot again, forever. The follower applies nothing more, while the leader's
// heartbeats keep it from starting an election, until the leader happens to take a
// snapshot beyond L: on an idle cluster, never.
//
// A snapshot beyond the follower's last index ends it: the follower then takes the
// snapshot as its last entry (its old suffix lies wholly before it) and accepts the
// entries that follow. So the leader watches what its probes learn of every follower's
// log (op "info": last index and the term of the last entry) and, when a follower has
// stood still at a last entry of an earlier term, at or beyond the leader's newest
// snapshot, for stallGrace, writes barriers until its own applied index is past that
// index and takes a snapshot. A follower that is only backtracking slowly over a long
// divergent suffix looks the same and costs at most one early snapshot; one whose last
// entry has the leader's term, or whose log stays before the snapshot, is never touched.

// peerLog is what the probes learnt of one peer's Raft log.
type peerLog struct {
	term, lastIndex, lastLogTerm uint64
	since                        time.Time // monotonic: when lastIndex and lastLogTerm last changed
}

// observe records an answer received at now (monotonic).
func (l *peerLog) observe(info PeerInfo, now time.Time) {
	if !info.Ready {
		return
	}
	if l.since.IsZero() || info.LastIndex != l.lastIndex || info.LastLogTerm != l.lastLogTerm {
		l.since = now
	}
	l.term, l.lastIndex, l.lastLogTerm = info.Term, info.LastIndex, info.LastLogTerm
}

// stalledBeyond reports whether the peer is in the stall described above as far as a leader
// of term term whose newest snapshot is at snap can tell at now: the peer is in the
// leader's term, its last entry is of an earlier one, at or beyond snap, and has not moved
// for at least grace.
func (l *peerLog) stalledBeyond(term, snap uint64, now time.Time, grace time.Duration) bool {
	return snap > 0 && l.term == term && l.lastLogTerm < term && l.lastIndex >= snap &&
		!l.since.IsZero() && now.Sub(l.since) >= grace
}

// maxRepairBarriers bounds the barriers one repair writes; a follower further ahead is
// repaired over several probe rounds.
const maxRepairBarriers = 1 << 16

// stallGrace is how long a follower must stand still before the leader repairs it.
func (n *Node) stallGrace() time.Duration {
	return max(3*n.cfg.ProbeInterval, 2*n.cfg.HeartbeatTimeout)
}

// repairStalledFollowers runs on the leader after each probe round (see above).
func (n *Node) repairStalledFollowers() {
	term := n.Raft.CurrentTerm()
	now := time.Now()
	grace := n.stallGrace()
	// A cheap look first: raft's stats (the newest snapshot) go through its main loop.
	candidate := false
	n.peerMon.mu.Lock()
	for _, e := range n.peerMon.peers {
		if e.Error == "" && e.log.stalledBeyond(term, 1, now, grace) {
			candidate = true
		}
	}
	n.peerMon.mu.Unlock()
	if !candidate {
		return
	}
	snap, err := strconv.ParseUint(n.Raft.Stats()["last_snapshot_index"], 10, 64)
	if err != nil {
		return
	}
	var target uint64
	var stalled []string
	n.peerMon.mu.Lock()
	for id, e := range n.peerMon.peers {
		if e.Error == "" && e.log.stalledBeyond(term, snap, now, grace) {
			target = max(target, e.log.lastIndex)
			stalled = append(stalled, id)
		}
	}
	n.peerMon.mu.Unlock()
	if len(stalled) == 0 {
		return
	}
	n.lg.Warn("followers stand still at a log suffix of an earlier term beyond this leader's newest snapshot (hashicorp/raft#697): snapshotting past it so that they can catch up",
		"followers", stalled, "their_last_index", target, "snapshot_index", snap, "term", term)
	if err := n.snapshotPast(target); err != nil {
		n.lg.Warn("repairing the stalled followers failed; retrying after the next probe round", "error", err)
	}
}

// snapshotPast writes barriers until this leader has applied an index beyond target (at
// most maxRepairBarriers of them), then takes a snapshot.
func (n *Node) snapshotPast(target uint64) error {
	if applied := n.Raft.AppliedIndex(); applied <= target {
		k := min(target-applied+1, maxRepairBarriers)
		futures := make([]raft.Future, 0, k)
		for range k {
			futures = append(futures, n.Raft.Barrier(10*time.Second))
		}
		for _, f := range futures {
			if err := f.Error(); err != nil {
				return err
			}
		}
		if n.Raft.AppliedIndex() <= target {
			return errors.New("not yet past the followers' last index")
		}
	}
	if err := n.Raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return err
	}
	return nil
}
