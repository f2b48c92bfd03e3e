package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

func ep(host string) fsm.Participant {
	return fsm.Participant{Prepare: "http://" + host + "/prepare", Commit: "http://" + host + "/commit", Rollback: "http://" + host + "/rollback"}
}

// TestEndpointTable: Define fills the table once per participant, a Begin that names
// participants by index resolves to their URLs (through the log encoding, as on every
// node), the table survives a snapshot, and references are checked.
func TestEndpointTable(t *testing.T) {
	n := newNode(t)
	flight, hotel, pay := ep("flight"), ep("hotel"), ep("pay")
	n.do(&fsm.Define{Participants: []fsm.Participant{flight, hotel}})
	n.do(&fsm.Define{Participants: []fsm.Participant{hotel, pay, flight}}) // repeats add nothing
	for want, p := range []fsm.Participant{flight, hotel, pay} {
		if got, ok := n.f.EndpointRef(p); !ok || got != uint32(want) {
			t.Fatalf("EndpointRef(%s) = %d, %v; want %d", p.Prepare, got, ok, want)
		}
	}
	odd := fsm.Participant{Prepare: "http://x/p", Commit: "http://x/c", Rollback: "http://x/r"}
	begin := &fsm.Begin{ID: "t1", CreatedAt: 1000, Deadline: 2000,
		Participants: []fsm.Participant{{}, odd, {}}, Refs: []int32{2, -1, 0}}
	inline := &fsm.Begin{ID: "t1", CreatedAt: 1000, Deadline: 2000, Participants: []fsm.Participant{pay, odd, flight}}
	if len(fsm.Encode(begin)) >= len(fsm.Encode(inline))-30 {
		t.Fatalf("a Begin by reference takes %d bytes, inline %d: references should save the URLs", len(fsm.Encode(begin)), len(fsm.Encode(inline)))
	}
	txn := n.must(begin)
	want := []fsm.Participant{pay, odd, flight}
	for i := range want {
		if txn.Participants[i] != want[i] {
			t.Fatalf("participant %d resolved to %+v, want %+v", i, txn.Participants[i], want[i])
		}
	}
	if res := n.do(&fsm.Begin{ID: "t2", CreatedAt: 1, Deadline: 2, Participants: []fsm.Participant{{}}, Refs: []int32{3}}); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("Begin naming an undefined endpoint: %v, want ErrInvalid", res.Err)
	}

	r := restore(t, snapBytes(t, n.f))
	if !bytes.Equal(snapBytes(t, r), snapBytes(t, n.f)) {
		t.Fatal("the endpoint table does not survive a snapshot")
	}
	if got, _ := r.Get("t1"); got == nil || got.Participants[0] != pay || got.Participants[1] != odd || got.Participants[2] != flight {
		t.Fatalf("restored t1 has participants %+v", got)
	}
	rn := &node{t: t, f: r}
	if got := rn.must(&fsm.Begin{ID: "t3", CreatedAt: 1, Deadline: 2, Participants: []fsm.Participant{{}}, Refs: []int32{1}}); got.Participants[0] != hotel {
		t.Fatalf("after restore, ref 1 resolves to %+v, want hotel", got.Participants[0])
	}
}

// TestEndpointTableIsBounded: past MaxEndpoints, Define adds nothing, so distinct URLs
// from clients cannot grow the state without bound.
func TestEndpointTableIsBounded(t *testing.T) {
	n := newNode(t)
	batch := make([]fsm.Participant, 0, 1024)
	for i := 0; i < fsm.MaxEndpoints+100; i++ {
		batch = append(batch, ep(fmt.Sprintf("h%d", i)))
		if len(batch) == cap(batch) {
			n.do(&fsm.Define{Participants: batch})
			batch = batch[:0]
		}
	}
	n.do(&fsm.Define{Participants: batch})
	if _, ok := n.f.EndpointRef(ep(fmt.Sprintf("h%d", fsm.MaxEndpoints-1))); !ok {
		t.Fatal("the last endpoint under the bound is missing")
	}
	if _, ok := n.f.EndpointRef(ep(fmt.Sprintf("h%d", fsm.MaxEndpoints))); ok {
		t.Fatal("an endpoint past MaxEndpoints was added")
	}
}

// TestDecideCommitEqualsDecide: the compact commit decision leaves exactly the state the
// full Decide would, and follows the same first-decision-wins rule.
func TestDecideCommitEqualsDecide(t *testing.T) {
	a, b := newNode(t), newNode(t)
	begin := &fsm.Begin{ID: "t1", CreatedAt: 1000, Deadline: 6000, Participants: []fsm.Participant{ep("a"), ep("b")}}
	a.must(begin)
	b.must(begin)
	a.must(&fsm.DecideCommit{ID: "t1", AfterMs: 37})
	b.must(&fsm.Decide{ID: "t1", Decision: fsm.DecisionCommit, At: 1037, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteYes}, Reasons: []string{"", ""}})
	if !bytes.Equal(snapBytes(t, a.f), snapBytes(t, b.f)) {
		t.Fatal("DecideCommit and the equivalent Decide leave different states")
	}
	if res := a.do(&fsm.Decide{ID: "t1", Decision: fsm.DecisionAbort, At: 2000, Votes: []fsm.Vote{fsm.VoteNo, fsm.VoteNo}, Reasons: []string{"x", ""}}); !errors.Is(res.Err, fsm.ErrDecided) {
		t.Fatalf("abort after DecideCommit: %v, want ErrDecided", res.Err)
	}
	if res := a.do(&fsm.DecideCommit{ID: "nope", AfterMs: 1}); !errors.Is(res.Err, fsm.ErrNotFound) {
		t.Fatalf("DecideCommit of an unknown id: %v, want ErrNotFound", res.Err)
	}
}
