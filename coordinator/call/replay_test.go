package call_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/participant"
)

type connCountKey struct{}

// TestClientNeverReplays: a participant that reads each request on a reused keep-alive
// connection and then resets that connection (issue 14, item 3) sees exactly one request per
// Call. net/http alone re-sends such a POST (it carries an Idempotency-Key and a rewindable
// body) on a new connection, which would bypass the caller's attempt count and backoff.
func TestClientNeverReplays(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		n := r.Context().Value(connCountKey{}).(*atomic.Int64).Add(1)
		if n > 1 { // a reused connection: take the request, then reset
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			conn.Close()
			return
		}
		http.Error(w, "try again", http.StatusInternalServerError)
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connCountKey{}, new(atomic.Int64))
	}
	srv.Start()
	defer srv.Close()

	c := call.NewClient(call.ClientOptions{})
	const calls = 20
	for i := 0; i < calls; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Call(ctx, srv.URL+"/commit", participant.PhaseCommit, participant.Request{TransactionID: "t1"})
		cancel()
		if err == nil {
			t.Fatalf("call %d: want an error", i)
		}
	}
	if got := requests.Load(); got != calls {
		t.Fatalf("participant saw %d requests for %d calls: the transport replayed some", got, calls)
	}
}

// TestClientNotSent: a connection-refused call is flagged NotSent; a call the participant
// received and answered with 500 is not.
func TestClientNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	c := call.NewClient(call.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Call(ctx, "http://"+addr+"/prepare", participant.PhasePrepare, participant.Request{TransactionID: "t1"})
	var ce *call.CallError
	if !errors.As(err, &ce) || !ce.NotSent || ce.Kind != call.KindTransport {
		t.Fatalf("refused call: got %#v, want a transport CallError with NotSent", err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer srv.Close()
	_, err = c.Call(ctx, srv.URL+"/prepare", participant.PhasePrepare, participant.Request{TransactionID: "t1"})
	if !errors.As(err, &ce) || ce.NotSent {
		t.Fatalf("answered call: got %#v, want a CallError without NotSent", err)
	}

	// A fence that refuses: nothing is sent.
	fctx := call.WithFence(ctx, func(context.Context) error { return errors.New("no longer leading") })
	_, err = c.Call(fctx, srv.URL+"/prepare", participant.PhasePrepare, participant.Request{TransactionID: "t1"})
	if !errors.As(err, &ce) || !ce.NotSent || ce.Kind != call.KindFenced {
		t.Fatalf("fenced call: got %#v", err)
	}
}
