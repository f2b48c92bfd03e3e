package call_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/participant"
)

// TestPayloadReachesEveryCallback (issue 14, item 1): the payload a Prepare carries reaches
// the prepare callback, and, kept with the vote, the commit and rollback callbacks, whose
// requests carry none.
func TestPayloadReachesEveryCallback(t *testing.T) {
	type order struct {
		Seats int `json:"seats"`
	}
	var mu sync.Mutex
	got := map[string]int{} // "txn/phase" -> seats
	record := func(ctx context.Context, id, phase string) error {
		var o order
		if err := participant.DecodePayload(ctx, &o); err != nil {
			return err
		}
		mu.Lock()
		got[id+"/"+phase] = o.Seats
		mu.Unlock()
		return nil
	}
	h := participant.NewHandler(participant.Callbacks{
		Prepare:  func(ctx context.Context, id string, _ time.Time) error { return record(ctx, id, "prepare") },
		Commit:   func(ctx context.Context, id string) error { return record(ctx, id, "commit") },
		Rollback: func(ctx context.Context, id string) error { return record(ctx, id, "rollback") },
	}, participant.NewMemStore())
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := call.NewClient(call.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(id string, p participant.Phase, payload string) participant.Reply {
		t.Helper()
		req := participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now().Add(time.Minute))}
		if payload != "" {
			req.Payload = json.RawMessage(payload)
		}
		r, err := c.Call(ctx, srv.URL+"/"+string(p), p, req)
		if err != nil {
			t.Fatalf("%s %s: %v", id, p, err)
		}
		return r
	}
	if r := call("t1", participant.PhasePrepare, `{"seats":2}`); r.Status != participant.ACK {
		t.Fatalf("prepare t1: %+v", r)
	}
	call("t1", participant.PhaseCommit, "")
	call("t2", participant.PhasePrepare, `{"seats":5}`)
	call("t2", participant.PhaseRollback, "")
	// Without a payload the prepare callback can refuse: a NACK with the reason.
	if r := call("t3", participant.PhasePrepare, ""); r.Status != participant.NACK {
		t.Errorf("prepare without payload: %+v", r)
	}
	want := map[string]int{"t1/prepare": 2, "t1/commit": 2, "t2/prepare": 5, "t2/rollback": 5}
	mu.Lock()
	defer mu.Unlock()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s saw %d seats, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// TestStaleTermRefused (issue 14, item 4): once a participant has seen term 5 for a
// transaction, a call of term 4 is refused with 409 stale_term, nothing runs and nothing is
// recorded; calls without a term header and of terms 5 and above go through.
func TestStaleTermRefused(t *testing.T) {
	var mu sync.Mutex
	commits := 0
	store := participant.NewMemStore()
	h := participant.NewHandler(participant.Callbacks{
		Commit: func(context.Context, string) error { mu.Lock(); commits++; mu.Unlock(); return nil },
	}, store)
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := call.NewClient(call.ClientOptions{})
	base, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := participant.Request{TransactionID: "t1", Deadline: participant.FormatDeadline(time.Now().Add(time.Minute))}
	if r, err := c.Call(call.WithOrigin(base, "n1", 4), srv.URL+"/prepare", participant.PhasePrepare, req); err != nil || r.Status != participant.ACK {
		t.Fatalf("prepare in term 4: %v %v", r, err)
	}
	if r, err := c.Call(call.WithOrigin(base, "n2", 5), srv.URL+"/prepare", participant.PhasePrepare, req); err != nil || r.Status != participant.ACK {
		t.Fatalf("prepare in term 5: %v %v", r, err)
	}
	if rec := store.Records()["t1"]; rec.Term != 5 {
		t.Fatalf("record term %d after a term-5 call", rec.Term)
	}
	_, err := c.Call(call.WithOrigin(base, "n1", 4), srv.URL+"/commit", participant.PhaseCommit, req)
	var ce *call.CallError
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusConflict {
		t.Fatalf("commit in term 4 after term 5: %v, want HTTP 409", err)
	}
	mu.Lock()
	if commits != 0 {
		t.Fatalf("the stale commit ran the callback")
	}
	mu.Unlock()
	if rec := store.Records()["t1"]; rec.State != participant.StatePrepared {
		t.Fatalf("stale commit changed the record: %+v", rec)
	}
	if r, err := c.Call(call.WithOrigin(base, "n2", 5), srv.URL+"/commit", participant.PhaseCommit, req); err != nil || r.Status != participant.ACK {
		t.Fatalf("commit in term 5: %v %v", r, err)
	}
	if r, err := c.Call(base, srv.URL+"/commit", participant.PhaseCommit, req); err != nil || r.Status != participant.ACK {
		t.Fatalf("commit without a term: %v %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if commits != 1 {
		t.Fatalf("%d commits, want 1", commits)
	}
}
