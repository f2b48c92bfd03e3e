package fsm_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// t0 is the base of every timestamp in these tests (unix ms). Nothing here reads a clock.
const t0 = int64(1_700_000_000_000)

// parts returns n participants in the derived URL form the encoder compresses.
func parts(n int) []fsm.Participant {
	ps := make([]fsm.Participant, n)
	for i := range ps {
		base := fmt.Sprintf("http://127.0.0.1:%d/", 9001+i)
		ps[i] = fsm.Participant{Prepare: base + "prepare", Commit: base + "commit", Rollback: base + "rollback"}
	}
	return ps
}

func votes(n int, v fsm.Vote) []fsm.Vote {
	vs := make([]fsm.Vote, n)
	for i := range vs {
		vs[i] = v
	}
	return vs
}

func begin(id string, n int) *fsm.Begin {
	return &fsm.Begin{ID: id, CreatedAt: t0, Deadline: t0 + 5000, Participants: parts(n)}
}

func decideCommit(id string, n int) *fsm.Decide {
	return &fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: t0 + 100, Votes: votes(n, fsm.VoteYes), Reasons: make([]string, n)}
}

// decideAbort records a NACK from the second participant; the others answered yes or not
// at all, so the votes differ from a commit's.
func decideAbort(id string, n int) *fsm.Decide {
	d := &fsm.Decide{ID: id, Decision: fsm.DecisionAbort, At: t0 + 100, Votes: votes(n, fsm.VoteYes), Reasons: make([]string, n)}
	if n > 1 {
		d.Votes[1], d.Reasons[1] = fsm.VoteNo, "no rooms"
	}
	if n > 2 {
		d.Votes[2] = fsm.VoteNone
	}
	return d
}

func complete(at int64, ids ...string) *fsm.Complete {
	c := &fsm.Complete{At: at}
	for _, id := range ids {
		c.Items = append(c.Items, fsm.Completion{ID: id, Attempts: []uint32{1, 2, 1}})
	}
	return c
}

func fail(id string, n int) *fsm.Fail {
	rs := make([]fsm.Report, n)
	for i := range rs {
		rs[i] = fsm.Report{Attempts: 5, Error: "HTTP 500"}
	}
	rs[0] = fsm.Report{Acked: true, Attempts: 1}
	return &fsm.Fail{ID: id, At: t0 + 900, Reports: rs}
}

// node is one FSM fed through the real log path: Encode, then Apply of a raft.Log with
// consecutive indexes, as Raft would.
type node struct {
	t   testing.TB
	f   *fsm.FSM
	idx uint64
}

func newNode(t testing.TB) *node { return &node{t: t, f: fsm.New()} }

func (n *node) do(c fsm.Command) fsm.Result {
	n.t.Helper()
	n.idx++
	return n.raw(fsm.Encode(c))
}

func (n *node) raw(data []byte) fsm.Result {
	n.t.Helper()
	out := n.f.Apply(&raft.Log{Index: n.idx, Type: raft.LogCommand, Data: data})
	res, ok := out.(fsm.Result)
	if !ok {
		n.t.Fatalf("Apply returned %T, want fsm.Result", out)
	}
	return res
}

// must applies c and fails the test on an error result.
func (n *node) must(c fsm.Command) *fsm.Txn {
	n.t.Helper()
	res := n.do(c)
	if res.Err != nil {
		n.t.Fatalf("%T %+v: %v", c, c, res.Err)
	}
	return res.Txn
}

func (n *node) get(id string) *fsm.Txn {
	t, _ := n.f.Get(id)
	return t
}

func snapBytes(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := f.WriteSnapshot(&b); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	return b.Bytes()
}

// pinSnapshot fails t unless f's snapshot, hex-encoded, is golden: the bytes this version
// writes are pinned, so an encoding change must come with a new version.
func pinSnapshot(t testing.TB, f *fsm.FSM, golden string) {
	t.Helper()
	if got := hex.EncodeToString(snapBytes(t, f)); got != golden {
		t.Errorf("snapshot encoding changed:\n got  %s\n want %s", got, golden)
	}
}

// restoreHex returns a fresh FSM restored from a hex-encoded snapshot.
func restoreHex(t testing.TB, golden string) *fsm.FSM {
	t.Helper()
	b, err := hex.DecodeString(golden)
	if err != nil {
		t.Fatalf("golden snapshot: %v", err)
	}
	return restore(t, b)
}

// restore returns a fresh FSM restored from b.
func restore(t testing.TB, b []byte) *fsm.FSM {
	t.Helper()
	f := fsm.New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return f
}

// copyTxn deep-copies a record so that a later comparison detects in-place mutation.
func copyTxn(t *fsm.Txn) *fsm.Txn {
	if t == nil {
		return nil
	}
	c := *t
	c.Participants = append([]fsm.Participant(nil), t.Participants...)
	c.States = append([]fsm.ParticipantState(nil), t.States...)
	return &c
}

// fakeSink is a raft.SnapshotSink in memory. failAfter >= 0 makes Write fail once that
// many bytes have been accepted.
type fakeSink struct {
	buf       bytes.Buffer
	failAfter int
	writes    int
	closed    int
	cancelled int
}

var errDiskFull = errors.New("disk full")

func newSink() *fakeSink { return &fakeSink{failAfter: -1} }

func (s *fakeSink) Write(p []byte) (int, error) {
	s.writes++
	if s.failAfter >= 0 && s.buf.Len()+len(p) > s.failAfter {
		n := s.failAfter - s.buf.Len()
		s.buf.Write(p[:n])
		return n, errDiskFull
	}
	return s.buf.Write(p)
}
func (s *fakeSink) Close() error  { s.closed++; return nil }
func (s *fakeSink) ID() string    { return "fake" }
func (s *fakeSink) Cancel() error { s.cancelled++; return nil }

var _ raft.SnapshotSink = (*fakeSink)(nil)

// persist takes a raft snapshot of f and persists it into a fresh fake sink.
func persist(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := newSink()
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if sink.closed != 1 || sink.cancelled != 0 {
		t.Fatalf("Persist: closed %d cancelled %d, want 1 and 0", sink.closed, sink.cancelled)
	}
	return sink.buf.Bytes()
}

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
