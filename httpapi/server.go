// Package httpapi is txcoord's HTTP API, served by every node with echo:
//
//	POST /v1/transactions        run a transaction (forwarded to the leader by followers)
//	GET  /v1/transactions/{id}   one transaction (?consistency=default|stale|linearizable)
//	GET  /v1/transactions/{id}/outcome  a participant's inquiry (?deadline=; inquiry.go)
//	GET  /v1/transactions        a page of transactions (filters, order, cursor: list.go)
//	GET  /v1/cluster/read-index  the leader's quorum-confirmed commit index (reads.go)
//	GET  /v1/cluster             this node's view of the cluster
//	GET  /healthz, /readyz       liveness and readiness
//	GET  /v1/openapi.json        the OpenAPI 3.1 document of all of them (api.OpenAPI)
//
// Every error is JSON {"error": "<code>", "detail": "<human text>"}; the code is stable and
// the status code follows from it through one function, statusOf.
package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
)

// Submitter starts transactions on the leader (*coordinator.Engine implements it).
type Submitter interface {
	Submit(ctx context.Context, r coordinator.Request) (*fsm.Txn, error)
}

// Node is the cluster side the API needs (*cluster.Node implements it).
type Node interface {
	ID() string
	LeaderReady() bool
	Ready() bool
	Leader() (id, httpAddr string)
	Status() cluster.Status
}

// State is the read side of the FSM (*fsm.FSM implements it).
type State interface {
	Get(id string) (*fsm.Txn, bool)
	// Query returns a page of transactions and the next page's cursor (fsm.FSM.Query).
	Query(q fsm.ListQuery) ([]*fsm.Txn, *fsm.Cursor)
	// Stuck returns failed transactions and those unfinished since cutoff (unix ms).
	Stuck(cutoff int64, limit int) []*fsm.Txn
	WaitFor(ctx context.Context, id string, cond func(*fsm.Txn) bool) (*fsm.Txn, error)
	// AppliedIndex is the Raft index of the last applied entry; WaitApplied waits for one.
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, index uint64) error
}

// Config tunes the API. Zero values take the defaults in brackets.
type Config struct {
	// DefaultTimeout is phase one's bound when a request names none [5000 ms].
	DefaultTimeout time.Duration
	// MaxTimeout is the largest timeout a request may ask for [60000 ms]. Larger values are
	// refused with 400, never clamped. DefaultTimeout is capped to it.
	MaxTimeout time.Duration
	// PhaseTwoWait is how long POST waits for phase two after phase one's timeout before it
	// answers 202 [the transaction's own timeout once more].
	PhaseTwoWait time.Duration
	// MaxServices is the most participants one transaction may have [32].
	MaxServices int
	// MaxBodyBytes bounds a request body [1 MiB].
	MaxBodyBytes int64
	// StuckAfter is how long a transaction's current phase may stay unfinished before
	// /v1/stuck lists it (phase two counted from the decision) [1m]; failed ones always are.
	StuckAfter time.Duration
	// MaxPayloadBytes bounds one participant's payload, as compact JSON [8 KiB]; a larger
	// one is a 400 naming the limit.
	MaxPayloadBytes int
	// MaxTxnPayloadBytes bounds the payloads of one transaction together, as compact JSON
	// [64 KiB]. The FSM holds payloads only while a transaction prepares, so they take at
	// most this times the leader's in-flight limit of memory on each node.
	MaxTxnPayloadBytes int
	// ForwardWait is how long a follower keeps trying to hand a POST to the leader, on top
	// of the time the transaction itself may take (its timeout and the phase-two wait)
	// [10 s]. When it runs out the client gets 503 no_leader, or 503 indeterminate if an
	// attempt may have reached a leader.
	ForwardWait time.Duration
	Logger      hclog.Logger
	// Auth enables bearer-token authentication (auth.go); nil: off.
	Auth *Auth
	// URLPolicy restricts participant URLs (policy.go); nil: only link-local and cloud
	// metadata addresses are refused.
	URLPolicy *call.Policy
	// RateLimit bounds each client's request rate (ratelimit.go); zero: off.
	RateLimit RateLimit
	// ForwardTLS, when set, makes forwarding to the leader use HTTPS verified with it
	// (tlsutil.Client with the cluster CA).
	ForwardTLS *tls.Config
	// ReadForwardWait bounds how long a read that must be served by the leader (the
	// default level on a follower for a record not final there, linearizable, or stale on
	// a node that has not caught up) keeps trying to reach one before it answers 503
	// no_leader with Retry-After [2 s].
	ReadForwardWait time.Duration
	// History, when set, answers transactions pruned from the state (history.go).
	History History
	// ReadHeaderTimeout bounds how long a client may take to send its request headers
	// (slowloris) [10 s].
	ReadHeaderTimeout time.Duration
	// DefaultMode is how a transaction whose request names no "mode" runs
	// [coordinator.ModeDefault]; ModeFast needs feature level 3 and participants that ask
	// for outcomes (docs/fast-path.md). A follower forwards the body as it came: the
	// leader's DefaultMode applies.
	DefaultMode coordinator.Mode
	// Propagator, when set, reads the trace context of a POST /v1/transactions on the
	// leader (W3C traceparent: propagation.TraceContext), so that the transaction's span is
	// a child of the client's [nil: tracing off, the header is not read]. A follower passes
	// the traceparent and tracestate headers on to the leader either way.
	Propagator propagation.TextMapPropagator
}

func (c *Config) defaults() {
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 5 * time.Second
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = 60 * time.Second
	}
	if c.DefaultTimeout > c.MaxTimeout {
		// A request without "timeout" must not get a bound it could not ask for.
		c.DefaultTimeout = c.MaxTimeout
	}
	if c.MaxServices <= 0 {
		c.MaxServices = 32
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = time.Minute
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = 8 << 10
	}
	if c.MaxTxnPayloadBytes <= 0 {
		c.MaxTxnPayloadBytes = 64 << 10
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.ForwardWait <= 0 {
		c.ForwardWait = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.ReadForwardWait <= 0 {
		c.ReadForwardWait = 2 * time.Second
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.DefaultMode == "" {
		c.DefaultMode = coordinator.ModeDefault
	}
}

// Server holds the API's dependencies.
type Server struct {
	cfg   Config
	node  Node
	state State
	sub   Submitter
	lg    hclog.Logger
	fwd   *forwarder
	echo  *echo.Echo
	catch catchUp
}

// New builds the API for one node.
func New(cfg Config, node Node, state State, sub Submitter) *Server {
	cfg.defaults()
	s := &Server{cfg: cfg, node: node, state: state, sub: sub, lg: cfg.Logger.Named("http")}
	s.fwd = newForwarder(node.ID())
	s.fwd.authorize = s.authorizeForward
	if cfg.ForwardTLS != nil {
		s.fwd.useTLS(cfg.ForwardTLS)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleEchoError
	e.Use(s.authMiddleware)
	e.Use(s.rateLimitMiddleware())
	e.Use(s.jsonOnly)
	e.POST("/v1/transactions", s.postTransaction)
	e.GET("/v1/transactions", s.listTransactions)
	e.GET("/v1/transactions/:id", s.getTransaction)
	e.GET(InquiryPath, s.getOutcome)
	e.GET("/v1/cluster", s.getCluster)
	e.GET(readIndexPath, s.getReadIndex)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET(api.OpenAPIPath, serveOpenAPI)
	s.echo = e
	s.operatorRoutes()
	s.membershipRoutes()
	s.historyRoutes()
	return s
}

// Handler returns the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Echo returns the echo instance so that other packages can add routes (metrics, UI).
func (s *Server) Echo() *echo.Echo { return s.echo }

// NewHTTPServer wraps h in an http.Server with timeouts that keep slow clients from holding
// connections (slowloris) while leaving room for the longest transaction a client may ask
// for.
func (s *Server) NewHTTPServer(addr string) *http.Server {
	wait := 2*s.cfg.MaxTimeout + s.cfg.PhaseTwoWait + s.cfg.ForwardWait + 20*time.Second
	return &http.Server{
		Addr:              addr,
		Handler:           s.echo,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      wait,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures and the like (scanners, refused clients): debug level.
		ErrorLog: s.lg.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

// apiError is an error with a stable code (the wire shape of api.Error); api.StatusOf maps
// the code to an HTTP status.
type apiError struct {
	Code          api.Code `json:"error"`
	Detail        string   `json:"detail"`
	TransactionID string   `json:"transactionId,omitempty"`
	retryAfter    string
}

func (e *apiError) Error() string { return string(e.Code) + ": " + e.Detail }

// The error codes (package api has them all, with their statuses).
const (
	codeBadRequest    = api.CodeBadRequest
	codeNotFound      = api.CodeNotFound
	codeNoLeader      = api.CodeNoLeader
	codeBusy          = api.CodeBusy
	codeIndeterminate = api.CodeIndeterminate
	codeMethod        = api.CodeMethod
	codeInternal      = api.CodeInternal
	codeUnavailable   = api.CodeUnavailable
	codeConflict      = api.CodeConflict
	// codeFeature: the request needs a feature level the cluster has not enabled yet (a
	// rolling upgrade is not finished); the detail names the servers on an earlier build.
	codeFeature = api.CodeFeature
)

func statusOf(code api.Code) int { return api.StatusOf(code) }

func badRequest(detail string) *apiError { return &apiError{Code: codeBadRequest, Detail: detail} }

func writeError(c echo.Context, e *apiError) error {
	if e.retryAfter != "" {
		c.Response().Header().Set("Retry-After", e.retryAfter)
	}
	return c.JSON(statusOf(e.Code), e)
}

func (s *Server) handleEchoError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	if errors.As(err, &ae) {
		_ = writeError(c, ae)
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code := codeInternal
		switch he.Code {
		case http.StatusNotFound:
			code = codeNotFound
		case http.StatusMethodNotAllowed:
			code = codeMethod
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			code = codeBadRequest
		}
		detail := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok {
			detail = m
		}
		_ = c.JSON(he.Code, &apiError{Code: code, Detail: detail})
		return
	}
	s.lg.Error("request failed", "path", c.Path(), "error", err)
	_ = writeError(c, &apiError{Code: codeInternal, Detail: err.Error()})
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok", "nodeId": s.node.ID()})
}

// readyz answers 200 when this node can serve current reads: a leader that has
// established leadership, or a follower that has applied the commit index the leader
// confirmed (with a quorum) when this request asked it. Raft's own commit index is not
// enough: after a restart a follower does not learn it until the leader's first
// AppendEntries that carries entries, and heartbeats carry none.
func (s *Server) readyz(c echo.Context) error {
	st := s.node.Status()
	body := map[string]any{"ready": st.Ready, "nodeId": st.NodeID, "role": st.Role, "leaderId": st.LeaderID, "commitIndex": st.CommitIndex, "appliedIndex": st.AppliedIndex}
	ready := st.Ready
	if ready && !s.node.LeaderReady() {
		idx, err := s.checkCaughtUp(c.Request().Context(), 500*time.Millisecond)
		if idx > 0 {
			body["leaderCommitIndex"] = idx
		}
		body["appliedIndex"] = s.appliedIndex()
		if err != nil {
			ready = false
			body["reason"] = err.Error()
		}
	}
	body["ready"] = ready
	if !ready && body["reason"] == nil {
		switch err := s.unavailable(); {
		case err != nil:
			body["reason"] = err.Error() // removed, not yet a member, Raft stopped
		case st.LeaderID == "":
			body["reason"] = "no leader known"
		default:
			body["reason"] = "not ready: catching up with leader " + st.LeaderID
		}
	}
	if !ready {
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable, body)
	}
	return c.JSON(http.StatusOK, body)
}

// serveOpenAPI answers the API's OpenAPI document, as kept in the repository.
func serveOpenAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, api.OpenAPI)
}

func (s *Server) getCluster(c echo.Context) error {
	return c.JSON(http.StatusOK, s.clusterView())
}

// clusterView is this node's Status with "members" always a list, never null.
func (s *Server) clusterView() cluster.Status {
	st := s.node.Status()
	if st.Members == nil {
		st.Members = []cluster.Member{}
	}
	return st
}
