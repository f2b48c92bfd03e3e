// Package client is the Go SDK for txcoord's HTTP API.
//
// A Client talks to one or more nodes (any node serves every route: followers forward to
// the leader). Submit runs a transaction to its outcome: it sends an Idempotency-Key (its
// own unless given), retries what is safe to retry (the 503 codes, 429, connection errors,
// a 202 while phase two runs) with exponential backoff and the server's Retry-After, moving
// to the next node after a failure, until the outcome or the context ends. Because every
// attempt carries the same key, a retry never starts a second transaction.
//
// Every request carries the W3C trace context (traceparent) of its context's span, if any,
// so a caller's trace continues into the coordinator's transaction span.
//
// Errors from the API are *api.Error values; compare them with errors.Is against the
// sentinels (client.ErrNotFound, api.ErrConflict, ...), or errors.As for the detail.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/api"
)

// Sentinels for errors.Is (the same values as package api's).
var (
	ErrBadRequest    = api.ErrBadRequest
	ErrUnauthorized  = api.ErrUnauthorized
	ErrNotFound      = api.ErrNotFound
	ErrConflict      = api.ErrConflict
	ErrNoLeader      = api.ErrNoLeader
	ErrBusy          = api.ErrBusy
	ErrUnavailable   = api.ErrUnavailable
	ErrIndeterminate = api.ErrIndeterminate
)

// Options configure a Client. Zero values take the defaults in brackets.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>" ["": none]. Operator actions
	// (Retry, Resolve) need the cluster token when the cluster has one.
	Token string
	// TLS configures HTTPS to the nodes (e.g. RootCAs with the cluster CA) when HTTPClient
	// is nil [system roots].
	TLS *tls.Config
	// HTTPClient sends the requests [a client with its own transport using TLS]. Its
	// Timeout, if any, bounds each attempt.
	HTTPClient *http.Client
	// InitialBackoff and MaxBackoff bound the wait between attempts [50 ms, 2 s]; a
	// Retry-After from the server is honoured up to MaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one attempt of a read or operator action [30 s]. Submit's
	// attempts are bounded by twice the transaction's timeout plus AttemptTimeout, since a
	// node holds the POST until the outcome.
	AttemptTimeout time.Duration
}

// Client is a txcoord API client, safe for concurrent use.
type Client struct {
	nodes []*url.URL
	opts  Options
	hc    *http.Client
	next  atomic.Uint32 // the node to try first: the last one that answered
}

// New returns a client for the nodes, each a base URL ("http://127.0.0.1:8081") or a
// host:port (taken as http://, or https:// when opts.TLS is set). It returns an error for
// no nodes or a URL that does not parse.
func New(nodes []string, opts Options) (*Client, error) {
	if len(nodes) == 0 {
		return nil, errors.New("client: no node URLs")
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 30 * time.Second
	}
	c := &Client{opts: opts, hc: opts.HTTPClient}
	for _, n := range nodes {
		n = strings.TrimSpace(n)
		if !strings.Contains(n, "://") {
			if opts.TLS != nil {
				n = "https://" + n
			} else {
				n = "http://" + n
			}
		}
		u, err := url.Parse(strings.TrimSuffix(n, "/"))
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("client: node %q is not an http(s) base URL", n)
		}
		c.nodes = append(c.nodes, u)
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		tr.TLSClientConfig = opts.TLS
		c.hc = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return c, nil
}

// Nodes returns the node base URLs the client uses, in the order given.
func (c *Client) Nodes() []string {
	out := make([]string, len(c.nodes))
	for i, u := range c.nodes {
		out[i] = u.String()
	}
	return out
}

// Transaction is what Submit runs.
type Transaction struct {
	// Services are the participants, 1 to 32 (Prepare URLs: see Services).
	Services []api.Service
	// Timeout bounds phase one, 1 ms to 60 s, rounded down to ms [0: the server's, 5 s].
	Timeout time.Duration
	// IdempotencyKey identifies the transaction across retries ["": one minted by Submit,
	// reported in an *IncompleteError]. Reusing a key returns the first transaction's
	// outcome, whatever the services.
	IdempotencyKey string
	// Mode is api.ModeDefault or api.ModeFast ["": the server's --default-mode]. Fast mode
	// needs participants that ask for outcomes (docs/fast-path.md).
	Mode string
}

// Services turns prepare URLs into the services of a Transaction.
func Services(prepareURLs ...string) []api.Service {
	out := make([]api.Service, len(prepareURLs))
	for i, u := range prepareURLs {
		out[i] = api.Service{Prepare: u}
	}
	return out
}

// NewKey returns a fresh Idempotency-Key ("sdk-" and 26 random base32 characters).
func NewKey() string { return "sdk-" + rand.Text() }

// IncompleteError is Submit's error when the context ended (or the attempts ran out)
// before the outcome was known. The transaction may exist: resubmit with the same
// IdempotencyKey, or look it up with Get when TransactionID is set.
type IncompleteError struct {
	IdempotencyKey string
	TransactionID  string // "" when no answer named it
	Status         string // the last status seen (a 202), "" if none
	Last           error  // the last attempt's error, nil after a 202
	Err            error  // why Submit stopped (the context's error)
	// NeverSent is true when no attempt was written to any node (every one failed to
	// connect): no transaction can exist, and resubmitting is as safe as the first try.
	NeverSent bool
}

func (e *IncompleteError) Error() string {
	s := "transaction outcome unknown (Idempotency-Key " + e.IdempotencyKey
	if e.TransactionID != "" {
		s += ", transaction " + e.TransactionID
	}
	if e.Status != "" {
		s += ", last status " + e.Status
	}
	s += "): " + e.Err.Error()
	if e.Last != nil {
		s += "; last error: " + e.Last.Error()
	}
	if e.NeverSent {
		s += " (no node was reached: nothing was started)"
	}
	return s
}

// Unwrap returns the context's error and the last attempt's, for errors.Is.
func (e *IncompleteError) Unwrap() []error { return []error{e.Err, e.Last} }

// Submit runs t and returns its outcome: Status committed, rolled_back or failed. It
// retries until then or until ctx ends (an *IncompleteError); an answer that retrying
// cannot change (400, 401, 409, 415, 500) is returned at once as an *api.Error.
func (c *Client) Submit(ctx context.Context, t Transaction) (*api.Outcome, error) {
	key := t.IdempotencyKey
	if key == "" {
		key = NewKey()
	}
	req := api.TransactionRequest{Services: t.Services, Mode: t.Mode}
	if t.Timeout > 0 {
		ms := t.Timeout.Milliseconds()
		req.TimeoutMs = &ms
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	per := c.opts.AttemptTimeout + 2*max(t.Timeout, 5*time.Second)
	inc := &IncompleteError{IdempotencyKey: key, NeverSent: true}
	bo := c.backoff()
	for {
		var out api.Outcome
		code, err := c.once(ctx, per, http.MethodPost, "/v1/transactions", nil, body, key, &out)
		var ue *unsentError
		if !errors.As(err, &ue) {
			inc.NeverSent = false
		}
		switch {
		case err == nil && code == http.StatusOK:
			return &out, nil
		case err == nil:
			// 202: the transaction exists and phase two runs; ask again with the key (the
			// node holds the request until the outcome or its bound).
			inc.TransactionID, inc.Status, inc.Last = out.TransactionID, out.Status, nil
			bo.Reset()
		case !retryable(err, true):
			return nil, err
		default:
			inc.Last = err
			var ae *api.Error
			if errors.As(err, &ae) && ae.TransactionID != "" {
				inc.TransactionID = ae.TransactionID
			}
			c.rotate()
		}
		if werr := c.wait(ctx, bo, err); werr != nil {
			inc.Err = werr
			return nil, inc
		}
	}
}

// retryable reports whether a request that failed with err may be sent again. A POST
// that is not idempotent (an operator action) is resent only when it cannot have reached
// a node, or the node said nothing was done (no_leader, busy, rate_limited).
func retryable(err error, idempotent bool) bool {
	var ae *api.Error
	if errors.As(err, &ae) {
		if idempotent {
			return ae.Code.Retryable()
		}
		return ae.Code == api.CodeNoLeader || ae.Code == api.CodeBusy || ae.Code == api.CodeRateLimited
	}
	var ue *unsentError
	if errors.As(err, &ue) {
		return true
	}
	var te *transportError
	return errors.As(err, &te) && idempotent
}

func (c *Client) backoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = c.opts.InitialBackoff, c.opts.MaxBackoff, 0
	bo.Reset()
	return bo
}

// wait sleeps for the next backoff (or the server's Retry-After, up to MaxBackoff) unless
// ctx ends first, and returns ctx's error then.
func (c *Client) wait(ctx context.Context, bo *backoff.ExponentialBackOff, last error) error {
	d := bo.NextBackOff()
	var ae *api.Error
	if errors.As(last, &ae) && ae.RetryAfter > d {
		d = min(ae.RetryAfter, c.opts.MaxBackoff)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) rotate() {
	n := c.next.Load()
	c.next.CompareAndSwap(n, (n+1)%uint32(len(c.nodes)))
}

// unsentError is a transport error before the request was written: no node saw it.
type unsentError struct{ err error }

func (e *unsentError) Error() string { return e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// transportError is a transport error after the request may have been written.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// once sends one request to the current node. It returns the status of a 2xx answer
// (decoded into out), or an error: *api.Error for an API error, *unsentError or
// *transportError for the transport.
func (c *Client) once(ctx context.Context, per time.Duration, method, path string, q url.Values, body []byte, key string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, per)
	defer cancel()
	node := c.nodes[int(c.next.Load())%len(c.nodes)]
	u := node.JoinPath(path)
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set(api.HeaderIdempotencyKey, key)
	}
	if c.opts.Token != "" {
		req.Header.Set(api.HeaderAuthorization, "Bearer "+c.opts.Token)
	}
	// The caller's trace (W3C traceparent and tracestate of ctx's span), so that the
	// coordinator's transaction span is a child of it; nothing when ctx has no span.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.hc.Do(req)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
		if !wrote.Load() {
			return 0, &unsentError{err}
		}
		return 0, &transportError{err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, &transportError{fmt.Errorf("%s %s: reading the answer: %w", method, u.Redacted(), err)}
	}
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				return 0, fmt.Errorf("%s %s: HTTP %d answer is not the expected JSON: %w", method, u.Redacted(), resp.StatusCode, err)
			}
		}
		return resp.StatusCode, nil
	}
	return 0, apiError(resp, raw)
}

// apiError decodes an error answer; one without the API's body (a proxy's 502) gets a
// code from its status.
func apiError(resp *http.Response, raw []byte) *api.Error {
	e := &api.Error{}
	if json.Unmarshal(raw, e) != nil || e.Code == "" {
		e = &api.Error{Detail: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw[:min(len(raw), 200)])))}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			e.Code = api.CodeUnavailable
		case http.StatusTooManyRequests:
			e.Code = api.CodeRateLimited
		case http.StatusUnauthorized:
			e.Code = api.CodeUnauthorized
		case http.StatusNotFound:
			e.Code = api.CodeNotFound
		default:
			e.Code = api.CodeInternal
		}
	}
	e.HTTPStatus = resp.StatusCode
	if s, err := strconv.Atoi(resp.Header.Get(api.HeaderRetryAfter)); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(resp.Header.Get(api.HeaderRetryAfter)); err == nil {
		e.RetryAfter = max(0, time.Until(t))
	}
	return e
}

// call sends a request and retries what is retryable (idempotent: reads) across nodes
// until an answer or ctx ends; the last error then wraps ctx's.
func (c *Client) call(ctx context.Context, idempotent bool, method, path string, q url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	bo := c.backoff()
	for {
		_, err := c.once(ctx, c.opts.AttemptTimeout, method, path, q, body, "", out)
		if err == nil || !retryable(err, idempotent) {
			return err
		}
		c.rotate()
		if werr := c.wait(ctx, bo, err); werr != nil {
			return fmt.Errorf("%w (last error: %w)", werr, err)
		}
	}
}
