package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/participant"
)

// forwardedHeader marks a request a follower passed on; a node that gets one and does not
// lead answers 503 instead of forwarding again, so requests never loop.
const forwardedHeader = "X-Txcoord-Forwarded-By"

type forwarder struct {
	hc   *http.Client
	self string
	// authorize adds the credential a forwarded request carries (auth.go); nil: none.
	authorize func(ctx context.Context, h http.Header)
	https     bool // call nodes over HTTPS (tls.go)
}

func newForwarder(self string) *forwarder {
	return &forwarder{self: self, hc: &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

func (s *Server) readBody(r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, badRequest(fmt.Sprintf("body over %d bytes", s.cfg.MaxBodyBytes))
		}
		return nil, badRequest("reading body: " + err.Error())
	}
	return body, nil
}

// forward runs a validated POST: on this node when it is the ready leader, otherwise on
// the leader it passes the request to. The request always travels with an Idempotency-Key
// (the client's, or one minted here), so resending it after a failed or ambiguous attempt
// (a reset connection, a leader that just stepped down) can never start a second
// transaction (case C06). It retries while the cluster has no usable leader, within the
// time the client would have waited anyway: the transaction's timeout, the phase-two wait
// and ForwardWait.
//
// It never forwards to this node itself: while this node is the Raft leader but not ready
// (establishing its term, or handing leadership over: raft refuses writes during a
// transfer), it waits with a capped backoff for the new leader, one goroutine and one timer
// per request whatever happens, so that many clients during a transfer cost bounded memory.
// A node that cannot serve and will not by waiting (Raft shut down, removed from the
// configuration, not yet a member: NodeState.Unavailable) answers 503 unavailable at once.
//
// When the time runs out the answer is 503 no_leader if no attempt can have reached a
// leader, and 503 indeterminate, naming the key to retry with, if one may have: a dropped
// connection or a leader that did not answer in time may still have started the
// transaction, and "no leader" would invite a retry without the key.
func (s *Server) forward(c echo.Context, body []byte, req txnRequest, key string, timeout time.Duration) error {
	r := c.Request()
	forwardedBy := r.Header.Get(forwardedHeader)
	p2 := s.cfg.PhaseTwoWait
	if p2 <= 0 {
		p2 = timeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout+p2+s.cfg.ForwardWait)
	defer cancel()
	delay := 25 * time.Millisecond
	var last *apiError
	var maybeSent string // a leader an attempt may have reached, "" while none may have
	for attempt := 0; ; attempt++ {
		if err := s.unavailable(); err != nil {
			return writeError(c, &apiError{Code: codeUnavailable, retryAfter: "1", Detail: err.Error()})
		}
		ready := s.node.LeaderReady()
		var lid, addr string
		if !ready && key == "" {
			// From the first attempt that could not run here on, every attempt (also one
			// that runs here once leadership arrives) carries the same key.
			key = "fwd-" + uuid.NewString()
		}
		if !ready && forwardedBy == "" {
			lid, addr = s.node.Leader()
		}
		switch {
		case ready:
			done, err := s.submitLocal(c, req, key, timeout)
			if done {
				return err
			}
			last = &apiError{Code: codeNoLeader, Detail: "this node is handing leadership over or lost it; waiting for the next leader"}
		case forwardedBy != "":
			// A follower passed this on: it retries itself; never forward again (no loops).
			return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "request forwarded by " + forwardedBy + " but this node does not lead"})
		case lid == s.node.ID():
			// Raft leader, not ready: establishing its term or transferring leadership.
			last = &apiError{Code: codeNoLeader, Detail: "this node leads but is not ready (establishing its term or handing leadership over)"}
		case addr != "":
			actx, moved := s.whileLeads(ctx, lid)
			resp, sent, err := s.fwd.postSent(actx, baseURL(addr)+"/v1/transactions", body, key, traceHeaders(r.Header))
			if to := moved(); to != "" && err != nil {
				// Another leader was elected while the old one held the request (paused, cut
				// off): it can no longer log anything, so the request goes to the new one at
				// once, with the same key (a transaction the old leader logged is then found
				// by it, never started twice).
				maybeSent = addr
				last = &apiError{Code: codeNoLeader, Detail: fmt.Sprintf("leader %s was replaced by %s while it held the request", lid, to)}
				delay = 25 * time.Millisecond
				continue
			}
			if err == nil {
				retry := false
				if resp.StatusCode == http.StatusServiceUnavailable {
					// no_leader is only ever answered before anything is written.
					var ae apiError
					if json.Unmarshal(resp.body, &ae) == nil && ae.Code == codeNoLeader {
						retry, last = true, &ae
					}
				}
				if !retry {
					return copyResponse(c, resp)
				}
			} else {
				s.lg.Debug("forward to leader failed; will retry", "leader", addr, "error", err)
				if sent {
					maybeSent = addr
				}
				last = &apiError{Code: codeNoLeader, Detail: "forwarding to leader " + addr + ": " + err.Error()}
			}
		default:
			last = &apiError{Code: codeNoLeader, Detail: "no leader is known (election in progress or no quorum)"}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if maybeSent != "" {
				last = &apiError{Code: codeIndeterminate, Detail: fmt.Sprintf(
					"the request was forwarded to leader %s but no answer came back, so the transaction may have started (last error: %s); retry with the same Idempotency-Key: %s",
					maybeSent, last.Detail, key)}
			}
			last.retryAfter = "1"
			return writeError(c, last)
		case <-t.C:
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// leaderPoll is how often a forwarded POST checks whether the leader it went to is still
// the one this node knows.
const leaderPoll = 50 * time.Millisecond

// LeaderWatcher is optionally implemented by the Node (*cluster.Node does): LeaderID is
// the id of the leader this node knows now, "" for none. A forwarded POST uses it to notice
// that its leader was replaced while it held the request.
type LeaderWatcher interface {
	LeaderID() string
}

// whileLeads returns a context that ends with ctx or as soon as this node knows a leader
// other than lid (a new term: lid can no longer log), and moved, which reports that leader
// ("" while lid still leads here). Call moved once the attempt is over: it also releases
// the watcher. Without a LeaderWatcher the context is ctx's.
func (s *Server) whileLeads(ctx context.Context, lid string) (context.Context, func() string) {
	lw, ok := s.node.(LeaderWatcher)
	if !ok {
		return ctx, func() string { return "" }
	}
	actx, cancel := context.WithCancel(ctx)
	var to atomic.Value
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-actx.Done():
				close(done)
				return
			case <-t.C:
				if id := lw.LeaderID(); id != "" && id != lid {
					to.Store(id)
					cancel()
				}
			}
		}
	}()
	return actx, func() string {
		cancel()
		<-done
		id, _ := to.Load().(string)
		return id
	}
}

// NodeState is optionally implemented by the Node (*cluster.Node does): Unavailable
// returns why this node cannot take writes and waiting will not change that soon (Raft shut
// down, removed from the configuration, not yet a member), or nil.
type NodeState interface {
	Unavailable() error
}

func (s *Server) unavailable() error {
	if ns, ok := s.node.(NodeState); ok {
		return ns.Unavailable()
	}
	return nil
}

type fwdResponse struct {
	StatusCode int
	header     http.Header
	body       []byte
}

func (f *forwarder) post(ctx context.Context, url string, body []byte, key string) (*fwdResponse, error) {
	resp, _, err := f.postSent(ctx, url, body, key, nil)
	return resp, err
}

// traceHeaders returns the W3C trace context headers of a client's request (traceparent,
// tracestate), which a forwarded POST carries unchanged so that the leader's transaction
// span is the client's child whether or not this node traces; nil when there are none.
func traceHeaders(h http.Header) http.Header {
	var out http.Header
	for _, k := range []string{"Traceparent", "Tracestate"} {
		if v := h.Values(k); len(v) > 0 {
			if out == nil {
				out = http.Header{}
			}
			out[k] = v
		}
	}
	return out
}

// postSent is post that also says whether the request may have reached the server: sent
// is false only when the attempt failed before the transport had written the request's
// headers (no connection, or the context ended while dialing), so no server can have acted
// on it. pass holds headers sent as they are (traceHeaders).
func (f *forwarder) postSent(ctx context.Context, url string, body []byte, key string, pass http.Header) (_ *fwdResponse, sent bool, _ error) {
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.scheme(url), bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	for k, v := range pass {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(participant.IdempotencyKeyHeader, key)
	req.Header.Set(forwardedHeader, f.self)
	if f.authorize != nil {
		f.authorize(ctx, req.Header)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, wrote.Load(), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, true, err
	}
	return &fwdResponse{StatusCode: resp.StatusCode, header: resp.Header, body: b}, true, nil
}

func copyResponse(c echo.Context, r *fwdResponse) error {
	for _, h := range []string{"Content-Type", "Retry-After", HeaderConsistency, HeaderServedBy, HeaderAppliedIndex} {
		if v := r.header.Get(h); v != "" {
			c.Response().Header().Set(h, v)
		}
	}
	c.Response().WriteHeader(r.StatusCode)
	_, err := c.Response().Write(r.body)
	return err
}

// baseURL turns "host:port" into "http://host:port"; a value with a scheme is kept.
func baseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

// get passes a read to url as a forwarded request (the leader never forwards it again).
func (f *forwarder) get(ctx context.Context, url string) (*fwdResponse, error) {
	return f.getWith(ctx, url, true)
}

// getPlain is get without the forwarded mark: node-to-node requests on routes that are
// open when no cluster token is configured (the read index).
func (f *forwarder) getPlain(ctx context.Context, url string) (*fwdResponse, error) {
	return f.getWith(ctx, url, false)
}

func (f *forwarder) getWith(ctx context.Context, url string, forwarded bool) (*fwdResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.scheme(url), nil)
	if err != nil {
		return nil, err
	}
	if forwarded {
		req.Header.Set(forwardedHeader, f.self)
	}
	if f.authorize != nil {
		f.authorize(ctx, req.Header)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return &fwdResponse{StatusCode: resp.StatusCode, header: resp.Header, body: b}, nil
}
