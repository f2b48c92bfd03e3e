package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/archive"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/goroutines"
)

// netCut isolates nodes of a startCluster on the production transport: every connection a
// node dials goes through it, and isolating a node closes the connections it dialed or that
// were dialed to it and refuses new ones, in both directions (Raft and discovery alike).
type netCut struct {
	mu       sync.Mutex
	owner    map[string]string // raft address -> node id
	isolated map[string]bool
	conns    map[net.Conn][2]string // connection -> {dialer, target}
}

func newNetCut() *netCut {
	return &netCut{owner: map[string]string{}, isolated: map[string]bool{}, conns: map[net.Conn][2]string{}}
}

// attach makes tr (node id's transport, listening on addr) dial through the cut.
func (nc *netCut) attach(id, addr string, tr *Transport) {
	nc.mu.Lock()
	nc.owner[addr] = id
	nc.mu.Unlock()
	tr.Stream.SetDialer(func(ctx context.Context, target string) (net.Conn, error) {
		nc.mu.Lock()
		to := nc.owner[target]
		blocked := nc.isolated[id] || nc.isolated[to]
		nc.mu.Unlock()
		if blocked {
			return nil, errors.New("netcut: partitioned")
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return nil, err
		}
		nc.mu.Lock()
		defer nc.mu.Unlock()
		if nc.isolated[id] || nc.isolated[to] {
			c.Close()
			return nil, errors.New("netcut: partitioned")
		}
		nc.conns[c] = [2]string{id, to}
		return c, nil
	})
}

// isolate cuts id off from every other node (on) or heals it (off).
func (nc *netCut) isolate(id string, on bool) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.isolated[id] = on
	if !on {
		return
	}
	for c, ends := range nc.conns {
		if ends[0] == id || ends[1] == id {
			c.Close()
			delete(nc.conns, c)
		}
	}
}

// logIndexes records the first and last index of a node's log store (the harness cannot
// read raft's own bookkeeping of it).
type logIndexes struct {
	raft.LogStore
}

func (l logIndexes) first() uint64 { i, _ := l.FirstIndex(); return i }

// dumpOnStall writes every goroutine's stack and each node's Raft stats to the test log:
// a round that does not settle on a loaded CI machine is then diagnosable from the log.
func dumpOnStall(t testing.TB, what string, stats map[string]map[string]string) {
	t.Helper()
	for id, s := range stats {
		t.Logf("%s: raft stats of %s: %v", what, id, s)
	}
	t.Logf("%s: goroutines:\n%s", what, goroutines.Dump())
}

// TestDeposedLeaderWithDivergentSuffixCatchesUp is the replication stall of issue 12: a
// leader appends entries of its own term that never commit (it is cut off right after),
// the other two elect a new leader that commits past them and compacts its log beyond
// the point where the logs part, and the old leader rejoins. It must catch up (through
// InstallSnapshot, then entries) and hold the same state as the others. hashicorp/raft
// v1.7.3 keeps a follower's conflicting suffix across an installed snapshot (upstream
// hashicorp/raft#697): while the leader's newest snapshot is not beyond that suffix, the
// follower rejects every AppendEntries after the snapshot and gets the snapshot again,
// forever; the leader's repair (repairStalledFollowers) snapshots past it.
func TestDeposedLeaderWithDivergentSuffixCatchesUp(t *testing.T) {
	t.Run("members", func(t *testing.T) { divergentSuffixScenario(t, false) })
	// Transactions and Prunes on both sides, every node with its archive: the old leader's
	// restore hands the archive a gap, the leader's snapshots wait for its archive.
	t.Run("archive", func(t *testing.T) { divergentSuffixScenario(t, true) })
}

// txnWrite returns the entries of one committed transaction (and, every fifth, a Prune of
// what finished before it); with txns false, one SetMember.
func txnWrite(txns bool, tag string, k int) []fsm.Command {
	if !txns {
		return []fsm.Command{&fsm.SetMember{NodeID: fmt.Sprintf("%s-%d", tag, k), HTTPAddr: "127.0.0.1:1"}}
	}
	at := int64(1_700_000_000_000 + 10*k)
	id := fmt.Sprintf("%s-%06d", tag, k)
	ps := []fsm.Participant{{Prepare: "http://a/prepare", Commit: "http://a/commit", Rollback: "http://a/rollback"}}
	out := []fsm.Command{
		&fsm.Begin{ID: id, CreatedAt: at, Deadline: at + 5, Participants: ps},
		&fsm.DecideCommit{ID: id, AfterMs: 1},
		&fsm.Complete{At: at + 2, Items: []fsm.Completion{{ID: id, Attempts: []uint32{1}}}},
	}
	if k%5 == 4 {
		out = append(out, &fsm.Prune{FinishedBefore: at - 20})
	}
	return out
}

func divergentSuffixScenario(t *testing.T, txns bool) {
	nc := newNetCut()
	stores := make([]logIndexes, 3)
	archives := make([]*archive.Archive, 3)
	dirs := tempDirs(t, 3) // before the cluster, so that they are removed after it stopped
	c := startCluster(t, clusterOptions{config: func(i int, cfg *Config) {
		cfg.InMemory = false
		cfg.DataDir = dirs[i]
		cfg.TrailingLogs = 10
		cfg.SnapshotThreshold = 32
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.ProbeInterval = 100 * time.Millisecond
		// A lease long enough for the cut-off leader to append its lost suffix on a loaded
		// machine, and no spurious elections meanwhile.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		cfg.WrapLogStore = func(s raft.LogStore) raft.LogStore {
			stores[i] = logIndexes{s}
			return s
		}
		if txns {
			a, err := archive.Open(filepath.Join(dirs[i], "archive"), archive.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = a.Close() }) // after the nodes stopped (cleanups run last first)
			archives[i] = a
			cfg.Archiver = a
		}
		tr := cfg.Transport.(*Transport)
		nc.attach(cfg.NodeID, cfg.RaftBind, tr)
	}})
	idx := map[*tnode]int{}
	for i, tn := range c.nodes {
		idx[tn] = i
	}
	stats := func() map[string]map[string]string {
		out := map[string]map[string]string{}
		for _, tn := range c.nodes {
			out[tn.id] = tn.n.Raft.Stats()
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// write applies one write through whichever node other than not leads, retrying when
	// leadership moves (a loaded machine), and returns that leader.
	write := func(not *tnode, tag string, k int) *tnode {
		for _, cmd := range txnWrite(txns, tag, k) {
			for retried := false; ; retried = true {
				ld := c.waitOtherLeader(not, 20*time.Second)
				res, err := ld.n.Apply(ctx, cmd)
				if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
					continue
				}
				// After an unknown outcome the first attempt may have committed: the retry
				// is then refused (ErrExists, ErrBadTransition), which is fine.
				if err != nil || (res.Err != nil && !retried) {
					t.Fatalf("apply on %s: %v %v", ld.id, err, res.Err)
				}
				break
			}
		}
		return c.waitOtherLeader(not, 20*time.Second)
	}
	var old *tnode
	for k := 0; k < 20; k++ {
		old = write(&tnode{id: "(none)"}, "before", k)
	}
	committed := old.n.Raft.LastIndex()

	// Cut the leader off and hand it entries at once: it appends them to its log before its
	// lease runs out, and they never commit.
	nc.isolate(old.id, true)
	const divergent = 300
	for k := 0; k < divergent; k++ {
		for _, cmd := range txnWrite(txns, "lost", k) {
			old.n.Raft.Apply(fsm.Encode(cmd), 2*time.Second)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return old.n.Raft.State() != raft.Leader }, "the cut-off leader steps down")
	suffixEnd := old.n.Raft.LastIndex()
	if suffixEnd < committed+divergent/2 {
		t.Fatalf("precondition: the cut-off leader appended only %d entries (last %d after %d)", suffixEnd-committed, suffixEnd, committed)
	}

	next := c.waitOtherLeader(old, 20*time.Second)
	// The new leader commits until its newest snapshot is past the point where the logs
	// part and its log no longer holds that point, while the snapshot is still inside the
	// old leader's lost suffix: the old leader can then catch up only through a snapshot.
	for k := 0; ; k++ {
		snap, _ := strconv.ParseUint(next.n.Raft.Stats()["last_snapshot_index"], 10, 64)
		if first := stores[idx[next]].first(); snap > committed+1 && first > committed+1 && snap+10 < suffixEnd {
			t.Logf("old leader %s: committed %d, lost suffix to %d; new leader %s: snapshot %d, log from %d", old.id, committed, suffixEnd, next.id, snap, first)
			break
		}
		if snap+10 >= suffixEnd || k > 2000 {
			t.Fatalf("precondition: the new leader's snapshot (%d) went past the lost suffix (%d)", snap, suffixEnd)
		}
		next = write(old, "after", k)
		time.Sleep(2 * time.Millisecond) // let the 50 ms snapshot check see the threshold
	}

	nc.isolate(old.id, false)
	want := next.n.FSM.AppliedIndex()
	deadline := time.Now().Add(15 * time.Second)
	for old.n.FSM.AppliedIndex() < want {
		if time.Now().After(deadline) {
			dumpOnStall(t, "old leader did not catch up", stats())
			t.Fatalf("old leader %s applied %d of the leader's %d within 15 s: replication to it stalled", old.id, old.n.FSM.AppliedIndex(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And it goes on following: an entry written now reaches it, and its state is the others'.
	applyAndCheck(t, c.leaderNode(t), c.nodes, "after-rejoin")
	waitFor(t, 10*time.Second, func() bool {
		return c.sameState()
	}, "every node holds the same state")
	if txns {
		if _, ok := old.n.FSM.Get("lost-000000"); ok {
			t.Fatalf("a transaction that never committed is on %s", old.id)
		}
		for i, a := range archives {
			if st := a.Stats(); st.Error != "" {
				t.Fatalf("archive of node %d: %s", i, st.Error)
			}
		}
		if st := archives[idx[old]].Stats(); len(st.Gaps) == 0 {
			t.Fatalf("the old leader's archive records no gap after its state was replaced by a snapshot: %+v", st)
		}
	} else if _, ok := old.n.FSM.Members()["lost-0"]; ok {
		t.Fatalf("an entry that never committed was applied on %s", old.id)
	}
}

// leaderNode returns the node that is Raft leader now.
func (c *testCluster) leaderNode(t *testing.T) *tnode {
	t.Helper()
	var out *tnode
	waitFor(t, 10*time.Second, func() bool {
		for _, tn := range c.nodes {
			if tn.n.LeaderReady() {
				out = tn
				return true
			}
		}
		return false
	}, "a ready leader")
	return out
}

// sameState reports whether every node's FSM, in snapshot form, is the same.
func (c *testCluster) sameState() bool {
	var first string
	for i, tn := range c.nodes {
		var b bytesBuffer
		if err := tn.n.FSM.WriteSnapshot(&b); err != nil {
			return false
		}
		if i == 0 {
			first = string(b)
		} else if string(b) != first {
			return false
		}
	}
	return true
}

type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
