// Package call is the coordinator's HTTP client for the participant protocol
// (participant/protocol): it sends Prepare, Commit and Rollback, classifies every failure
// (CallError, with NotSent when the request provably never left), never lets net/http
// replay a request, checks each dialed address against the URL policy (Policy), and runs
// the leader's fence (WithFence) right before each request is written.
//
// It belongs to the coordinator: the participant library that services import never
// imports it, so a service's build carries none of it.
package call

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/participant/protocol"
)

// ErrorKind classifies why a call did not produce a valid reply.
type ErrorKind string

// The error kinds a CallError carries.
const (
	KindTimeout   ErrorKind = "timeout"   // no answer before the call's deadline
	KindTransport ErrorKind = "transport" // connection refused, reset, DNS failure, ...
	KindStatus    ErrorKind = "status"    // an HTTP status other than 200 (redirects included)
	KindReply     ErrorKind = "reply"     // 200 with a body that is not a valid Reply
	KindCanceled  ErrorKind = "canceled"  // the caller gave up (e.g. leadership was lost)
	KindFenced    ErrorKind = "fenced"    // the fence (WithFence) refused: this node may no longer lead; nothing was sent
)

// CallError is the error Client.Call returns when the participant's answer was neither ACK
// nor NACK. Its message is short and precise, e.g. "HTTP 500: out of memory" or
// "invalid reply: status \"OK\" is neither ACK nor NACK".
type CallError struct {
	Kind       ErrorKind
	StatusCode int           // for KindStatus
	RetryAfter time.Duration // from a Retry-After header on 429 or 503, else 0
	Msg        string
	Err        error // the underlying error, if any
	// NotSent is true when the call provably never reached the participant: no connection
	// was obtained (DNS failure, connection refused, dial timeout, a policy refusal) or the
	// fence (WithFence) refused it, so not one byte of the request was written. A participant whose
	// every call of a transaction was NotSent holds nothing for it.
	NotSent bool
}

func (e *CallError) Error() string { return e.Msg }
func (e *CallError) Unwrap() error { return e.Err }

// ClientOptions tunes a Client. Zero values take the defaults.
type ClientOptions struct {
	// MaxConnsPerHost bounds idle connections kept per participant host (default 256), so a
	// busy coordinator reuses connections instead of opening one per call.
	MaxConnsPerHost int
	// Header is added to every call (e.g. an Authorization header for participants).
	Header http.Header
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
	// Policy, when set, is checked on every address dialed (after DNS resolution), so a
	// participant name that comes to resolve to a forbidden address is refused (policy.go).
	Policy *Policy
}

// Client calls participants. It never follows redirects, reads at most MaxReplyBytes of a
// reply, and is safe for concurrent use.
type Client struct {
	hc     *http.Client
	header http.Header
}

// NewClient returns a Client with pooled keep-alive connections.
func NewClient(o ClientOptions) *Client {
	if o.MaxConnsPerHost <= 0 {
		o.MaxConnsPerHost = 256
	}
	rt := o.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:               nil, // participants are called directly, never through a proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: o.Policy.control()}).DialContext,
			MaxIdleConns:        4 * o.MaxConnsPerHost,
			MaxIdleConnsPerHost: o.MaxConnsPerHost,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false,
		}
	}
	return &Client{
		hc: &http.Client{
			Transport: rt,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		header: o.Header,
	}
}

// Call POSTs req to url as phase p and returns the participant's Reply (ACK or NACK). The
// call ends with ctx; give ctx the deadline the call must meet. Any other outcome is a
// *CallError.
//
// Each Call writes the request at most once: the transport never replays it on another
// connection (net/http would, for a POST with an Idempotency-Key header and a rewindable
// body, whenever a reused keep-alive connection fails), so every request a participant
// sees is one the caller counts. A Call whose request was never written has
// CallError.NotSent set.
func (c *Client) Call(ctx context.Context, url string, p protocol.Phase, req protocol.Request) (protocol.Reply, error) {
	body, _ := json.Marshal(req)
	var gotConn atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }})
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return protocol.Reply{}, &CallError{Kind: KindTransport, Msg: "bad request: " + err.Error(), Err: err, NotSent: true}
	}
	// No GetBody: the transport cannot rewind the body, so it never sends the request a
	// second time (http.Transport retries only requests it can replay).
	hreq.GetBody = nil
	for k, vs := range c.header {
		hreq.Header[k] = vs
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set(protocol.IdempotencyKeyHeader, req.TransactionID+":"+string(p))
	// The W3C trace context of the call's span (the engine's prepare, commit or rollback
	// span), so that the participant's own spans join the trace; nothing when ctx has no
	// valid span context (tracing off).
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(hreq.Header))
	if o, ok := originOf(ctx); ok {
		hreq.Header.Set(protocol.NodeHeader, o.node)
		hreq.Header.Set(protocol.TermHeader, o.term)
	}
	if fence := fenceOf(ctx); fence != nil {
		if err := fence(ctx); err != nil {
			if ctx.Err() != nil {
				// The call's own deadline or cancellation, not the fence's verdict.
				ce := classify(ctx, err)
				ce.NotSent = true
				return protocol.Reply{}, ce
			}
			return protocol.Reply{}, &CallError{Kind: KindFenced, Msg: "not sent: " + err.Error(), Err: err, NotSent: true}
		}
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		ce := classify(ctx, err)
		ce.NotSent = !gotConn.Load()
		return protocol.Reply{}, ce
	}
	defer resp.Body.Close()
	buf := replyBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 4<<10 { // keep small buffers only: one odd reply must not pin 64 KiB
			buf.Reset()
			replyBufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, protocol.MaxReplyBytes+1)); err != nil {
		return protocol.Reply{}, classify(ctx, err)
	}
	raw := buf.Bytes() // valid until the deferred Put: everything below copies what it keeps
	if resp.StatusCode != http.StatusOK {
		ce := &CallError{Kind: KindStatus, StatusCode: resp.StatusCode}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			ce.Msg = fmt.Sprintf("HTTP %d redirect to %q (not followed)", resp.StatusCode, resp.Header.Get("Location"))
		default:
			ce.Msg = fmt.Sprintf("HTTP %d", resp.StatusCode) + snippet(raw)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			ce.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return protocol.Reply{}, ce
	}
	if len(raw) > protocol.MaxReplyBytes {
		return protocol.Reply{}, &CallError{Kind: KindReply, Msg: fmt.Sprintf("invalid reply: body over %d bytes", protocol.MaxReplyBytes)}
	}
	return ParseReply(raw)
}

// replyBufs recycles reply buffers: a coordinator reads several replies per transaction.
var replyBufs = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }}

// ParseReply parses a participant's 200 body. It accepts exactly {"status":"ACK"} or
// {"status":"NACK","reason":"..."} (unknown fields are ignored so that participants can add
// their own); anything else is a *CallError of kind KindReply.
func ParseReply(raw []byte) (protocol.Reply, error) {
	var r protocol.Reply
	if len(bytes.TrimSpace(raw)) == 0 {
		return protocol.Reply{}, &CallError{Kind: KindReply, Msg: "invalid reply: empty body"}
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return protocol.Reply{}, &CallError{Kind: KindReply, Msg: "invalid reply: not JSON" + snippet(raw), Err: err}
	}
	switch r.Status {
	case protocol.ACK:
		return protocol.Reply{Status: protocol.ACK}, nil
	case protocol.NACK:
		if r.Reason == "" {
			r.Reason = "no reason given"
		}
		if len(r.Reason) > 512 {
			r.Reason = r.Reason[:512] + "..."
		}
		return r, nil
	default:
		return protocol.Reply{}, &CallError{Kind: KindReply, Msg: fmt.Sprintf("invalid reply: status %q is neither ACK nor NACK", r.Status)}
	}
}

func classify(ctx context.Context, err error) *CallError {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return &CallError{Kind: KindTimeout, Msg: "no answer before the deadline", Err: err}
	case ctx.Err() != nil:
		return &CallError{Kind: KindCanceled, Msg: "call canceled", Err: err}
	}
	msg := err.Error()
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && ue.Unwrap() != nil {
		msg = ue.Unwrap().Error() // drop net/http's `Post "url":` prefix; the caller names the URL
	}
	switch {
	case errors.Is(err, io.EOF):
		// A bare "EOF" says nothing to an operator reading the errors list.
		msg = "connection closed before a reply (EOF)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "connection closed before the reply was complete (unexpected EOF)"
	}
	return &CallError{Kind: KindTransport, Msg: msg, Err: err}
}

// snippet returns ": <first 120 bytes of the body>" for error messages, or "".
func snippet(raw []byte) string {
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return ""
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return ": " + s
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 §10.2.3); 0 when absent or
// unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
