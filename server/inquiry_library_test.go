package server_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
	"github.com/txcoord/txcoord/server/servertest"
)

// cbCount counts a participant's callback runs.
type cbCount struct{ prepare, commit, rollback atomic.Int32 }

func (c *cbCount) callbacks() participant.Callbacks {
	return participant.Callbacks{
		Prepare:  func(context.Context, string, time.Time) error { c.prepare.Add(1); return nil },
		Commit:   func(context.Context, string) error { c.commit.Add(1); return nil },
		Rollback: func(context.Context, string) error { c.rollback.Add(1); return nil },
	}
}

// runLibrary starts h.Run until the test ends, and checks that it returns.
func runLibrary(t *testing.T, h *participant.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// A participant that ACKed a Prepare from a coordinator the cluster never heard of (a
// leader that died before logging anything, as in fast mode) asks the real cluster once
// the deadline has passed; the leader logs a presumed abort and answers rolled_back, and
// the library runs the rollback callback: nobody is left holding.
func TestLibraryInquiryGetsPresumedAbort(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	c.WaitLeader(30 * time.Second)
	var urls []string
	for i := range c.Len() {
		urls = append(urls, "http://"+c.Peer(i).HTTPAddr)
	}
	// A transaction whose deadline is before the cluster reached feature level 3 is past
	// its retention horizon (404: not kept); wait until a probe's deadline is after it.
	waitFor(t, "the cluster answers inquiries (feature level 3)", func() bool {
		id := uuid.NewString()
		resp, err := http.Get(protocol.InquiryURL(urls[0], id, protocol.FormatDeadline(time.Now().Add(-1500*time.Millisecond))))
		if err != nil {
			return false
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		o, err := protocol.ParseOutcome(raw, id)
		return err == nil && o.Outcome == protocol.OutcomeRolledBack
	})
	var cb cbCount
	h := participant.NewHandler(cb.callbacks(), participant.NewMemStore(),
		participant.WithInquiryGrace(100*time.Millisecond), participant.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	runLibrary(t, h)
	neverLogged := uuid.NewString() // as a coordinator mints ids
	reply, err := h.Do(context.Background(), participant.PhasePrepare, participant.Request{
		TransactionID: neverLogged, Deadline: protocol.FormatDeadline(time.Now().Add(300 * time.Millisecond)), Inquiry: urls})
	if err != nil || reply.Status != participant.ACK {
		t.Fatalf("prepare: %+v %v", reply, err)
	}
	waitFor(t, "the rollback callback ran", func() bool { return cb.rollback.Load() > 0 })
	if cb.commit.Load() != 0 || cb.rollback.Load() != 1 {
		t.Fatalf("commit %d, rollback %d; want 0 and 1", cb.commit.Load(), cb.rollback.Load())
	}
	// The cluster keeps the presumed abort: every node answers rolled_back now.
	for _, u := range urls {
		resp, err := http.Get(protocol.InquiryURL(u, neverLogged, ""))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		o, err := protocol.ParseOutcome(raw, neverLogged)
		if resp.StatusCode != http.StatusOK || err != nil || o.Outcome != protocol.OutcomeRolledBack {
			t.Errorf("%s: %d %s (%v), want rolled_back", u, resp.StatusCode, raw, err)
		}
	}
}

// A participant whose Commit calls all fail on the way (HTTP 500 before the library sees
// them) learns the commit by inquiry at the Prepare's inquiry URLs, which the real
// coordinator sends, and applies it once; the coordinator's retries are then ACKed.
func TestLibraryInquiryGetsCommitted(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(30 * time.Second)
	var cb cbCount
	h := participant.NewHandler(cb.callbacks(), participant.NewMemStore(),
		participant.WithInquiryGrace(100*time.Millisecond), participant.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	runLibrary(t, h)
	blockCommit := atomic.Bool{}
	blockCommit.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/commit" && blockCommit.Load() {
			http.Error(w, `{"error":"unavailable","detail":"lost on the way"}`, http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	code, out := post(t, "http://"+c.Peer(leader).HTTPAddr, []string{srv.URL + "/prepare"}, 500)
	if out.TransactionID == "" {
		t.Fatalf("POST: %d %+v", code, out)
	}
	waitFor(t, "the commit callback ran by inquiry", func() bool { return cb.commit.Load() > 0 })
	blockCommit.Store(false)
	waitFor(t, "the transaction is committed on the leader", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/transactions/%s", c.Peer(leader).HTTPAddr, out.TransactionID))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(raw), `"status":"committed"`)
	})
	if cb.commit.Load() != 1 || cb.rollback.Load() != 0 {
		t.Fatalf("commit %d, rollback %d; want 1 and 0", cb.commit.Load(), cb.rollback.Load())
	}
}
