package demo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/internal/openapitest"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// TestOpenAPIDemoReplies drives a demo service with the coordinator's own participant
// client, through a proxy that validates every call (its headers and body, as the
// coordinator sends them) and every reply against participant/protocol/openapi.json: votes (ACK,
// NACK), repeated calls, a Rollback before its Prepare (tombstone) and the Prepare refused
// after it, a Commit never prepared, an injected HTTP 500 and a malformed call the library
// refuses.
func TestOpenAPIDemoReplies(t *testing.T) {
	doc := openapitest.Load(t, protocol.OpenAPI)
	svc, err := demo.New(demo.Config{Kind: demo.KindHotel, DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Exit: func(int) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// Only well-formed calls are checked as requests; the malformed one below is meant to
	// be wrong, and only its reply is checked.
	strict := doc.Middleware(svc.Handler(), true, t.Errorf)
	loose := doc.Middleware(svc.Handler(), false, t.Errorf)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Malformed") != "" {
			loose.ServeHTTP(w, r)
			return
		}
		strict.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ep, err := participant.Derive(srv.URL + "/prepare")
	if err != nil {
		t.Fatal(err)
	}
	cl := call.NewClient(call.ClientOptions{})
	ctx, cancel := context.WithTimeout(call.WithOrigin(context.Background(), "n1", 7), 30*time.Second)
	defer cancel()
	send := func(p participant.Phase, id string) (participant.Reply, error) {
		return cl.Call(ctx, ep.URL(p), p, participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now().Add(5 * time.Second))})
	}
	want := func(p participant.Phase, id string, status participant.Status) {
		t.Helper()
		r, err := send(p, id)
		if err != nil || r.Status != status {
			t.Errorf("%s %s: %+v %v, want %s", p, id, r, err, status)
		}
	}
	want(participant.PhasePrepare, "t1", participant.ACK)
	want(participant.PhasePrepare, "t1", participant.ACK)
	want(participant.PhaseCommit, "t1", participant.ACK)
	want(participant.PhaseCommit, "t1", participant.ACK)
	want(participant.PhaseRollback, "t2", participant.ACK) // tombstone
	want(participant.PhasePrepare, "t2", participant.NACK)
	want(participant.PhaseCommit, "t3", participant.NACK) // never prepared
	want(participant.PhasePrepare, "t4", participant.ACK)
	want(participant.PhaseRollback, "t4", participant.ACK)
	want(participant.PhaseRollback, "t4", participant.ACK)

	f := svc.Faults()
	f.NackRate = 1
	if err := svc.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	want(participant.PhasePrepare, "t5", participant.NACK)
	f.NackRate, f.ErrorRate = 0, 1
	if err := svc.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	var ce *call.CallError
	if _, err := send(participant.PhasePrepare, "t6"); !errors.As(err, &ce) {
		t.Errorf("injected fault: %v, want a CallError", err)
	}
	f.ErrorRate = 0
	_ = svc.SetFaults(f)

	// A call the library refuses: its 400 reply is described too.
	req, _ := http.NewRequest(http.MethodPost, ep.Prepare, bytes.NewReader([]byte(`{"transactionId":`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Test-Malformed", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed call: HTTP %d, want 400", resp.StatusCode)
	}
}
