package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/participant/protocol"
)

// Callbacks are a service's three steps of a transaction. A nil callback does nothing and
// succeeds. Each runs at most once at a time per transaction id, and only when the record says
// it must (see the package documentation). Through a BoltStore, ctx carries the store's write
// transaction: BoltTx(ctx).
type Callbacks struct {
	// Prepare reserves what the transaction needs, so that a later Commit cannot fail, or
	// returns an error, which is a NACK vote with err.Error() as reason. On error it must
	// leave no effect (automatic when all its writes go through an atomic store's
	// transaction). deadline is the request's absolute deadline (zero if none was sent); ctx
	// ends at it.
	Prepare func(ctx context.Context, txID string, deadline time.Time) error
	// Commit makes a prepared transaction's effect final (sells what Prepare held). An error
	// is answered with HTTP 500 and the coordinator retries; it should only be transient.
	Commit func(ctx context.Context, txID string) error
	// Rollback releases what Prepare held. It is called only for a transaction whose Prepare
	// succeeded here; an error is answered with HTTP 500 and the coordinator retries.
	Rollback func(ctx context.Context, txID string) error
}

// DefaultMaxBodyBytes is the default bound on a request body (bytes); a longer body is
// answered with HTTP 413.
const DefaultMaxBodyBytes = 64 << 10

// MaxTransactionIDBytes bounds the length of Request.TransactionID (bytes); a longer id is a
// bad request (HTTP 400).
const MaxTransactionIDBytes = 256

// ErrBadRequest is wrapped by the errors Handler.Do returns for an invalid request (missing
// or too long transaction id, malformed deadline, unknown phase). ServeHTTP answers it with 400.
var ErrBadRequest = errors.New("bad request")

// ErrStaleTerm is wrapped by the error Handler.Do returns for a call whose Request.Term
// (the Txcoord-Term header) is lower than the highest term this participant has recorded for
// the transaction: it comes from a coordinator that has since been replaced (fencing
// tokens). Nothing runs and nothing is recorded. ServeHTTP answers it with HTTP 409
// {"error":"stale_term","detail":"..."}; the coordinator treats that as a failed call.
var ErrStaleTerm = errors.New("stale coordinator term")

type payloadKey struct{}

// Payload returns the payload of the transaction a callback runs for: in Prepare the one
// the request carried, in Commit and Rollback the one kept with the vote. It returns nil
// when the client gave this participant none.
func Payload(ctx context.Context) json.RawMessage {
	p, _ := ctx.Value(payloadKey{}).(json.RawMessage)
	return p
}

// DecodePayload unmarshals Payload(ctx) into v. It returns an error when there is no
// payload or it does not fit v.
func DecodePayload(ctx context.Context, v any) error {
	p := Payload(ctx)
	if len(p) == 0 {
		return errors.New("the transaction carries no payload for this participant")
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	return nil
}

func withPayload(ctx context.Context, p json.RawMessage) context.Context {
	if len(p) == 0 {
		return ctx
	}
	return context.WithValue(ctx, payloadKey{}, p)
}

// Reasons the Handler gives in its NACK replies. Tests and dashboards may match on them.
const (
	ReasonAlreadyRolledBack = "already rolled back"
	ReasonDeadlinePassed    = "prepare deadline passed"
	ReasonNeverPrepared     = "unknown transaction: never prepared here"
)

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(h *Handler) { h.log = l } }

// WithMaxBodyBytes bounds request bodies to n bytes (default DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option { return func(h *Handler) { h.maxBody = n } }

// WithClock sets the clock used to compare deadlines and stamp records (default time.Now).
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// Handler is the participant side of the protocol: an http.Handler for the three phases,
// backed by a Store. It is safe for concurrent use. Create it with NewHandler, and start
// Run beside it so that it asks for the outcome of transactions whose phase two does not
// come (inquiry; without Run it only answers calls).
type Handler struct {
	cb      Callbacks
	store   Store
	log     *slog.Logger
	maxBody int64
	now     func() time.Time

	mu    sync.Mutex
	locks map[string]*txLock

	inq inquirer // the transactions it holds, for Run
}

type txLock struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders and waiters; the entry is deleted at zero
}

// NewHandler returns a Handler running cb over store. It panics if store is nil.
func NewHandler(cb Callbacks, store Store, opts ...Option) *Handler {
	if store == nil {
		panic("participant.NewHandler: nil Store")
	}
	h := &Handler{cb: cb, store: store, log: slog.Default(), maxBody: DefaultMaxBodyBytes,
		now: time.Now, locks: make(map[string]*txLock)}
	h.inq = inquirer{grace: DefaultInquiryGrace, initial: inquiryBackoffInitial, max: DefaultInquiryBackoffMax,
		hc: defaultInquiryClient(), held: make(map[string]*held)}
	for _, o := range opts {
		o(h)
	}
	if h.cb.Prepare == nil {
		h.cb.Prepare = func(context.Context, string, time.Time) error { return nil }
	}
	if h.cb.Commit == nil {
		h.cb.Commit = func(context.Context, string) error { return nil }
	}
	if h.cb.Rollback == nil {
		h.cb.Rollback = func(context.Context, string) error { return nil }
	}
	return h
}

// ServeHTTP serves the phase named by the last segment of the request path ("prepare",
// "commit" or "rollback"; anything else is 404), so one Handler can be mounted at
// /prefix/{phase}. See Phase for the rest.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := Phase(path.Base(r.URL.Path))
	if !validPhase(p) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("last path segment %q is not prepare, commit or rollback", p))
		return
	}
	h.serve(w, r, p)
}

// Phase returns an http.Handler that serves phase p whatever the path: POST with a JSON
// Request body (at most the configured max bytes) answered with 200 and a JSON Reply. Errors
// are JSON {"error": code, "detail": text}: 405 for a method other than POST, 400 for
// malformed JSON, a missing transaction id or an Idempotency-Key header that does not match
// the body, 413 for a body too large, 503 if the client went away while waiting, 500 for a
// store failure or a failed commit or rollback callback.
func (h *Handler) Phase(p Phase) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, p) })
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, p Phase) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed; use POST")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		return
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
		return
	}
	if key := r.Header.Get(IdempotencyKeyHeader); key != "" && req.TransactionID != "" && key != req.TransactionID+":"+string(p) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%s %q does not match transaction %q and phase %q", IdempotencyKeyHeader, key, req.TransactionID, p))
		return
	}
	if v := r.Header.Get(TermHeader); v != "" {
		term, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%s %q is not a term number", TermHeader, v))
			return
		}
		req.Term = term
	}
	// The coordinator's call carries its span's W3C traceparent: the callbacks' ctx holds
	// it as the remote parent, so a service's own spans join the transaction's trace.
	ctx := r.Context()
	if _, ok := r.Header["Traceparent"]; ok { // the server canonicalized the key
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	reply, err := h.Do(ctx, p, req)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, reply)
	case errors.Is(err, ErrStaleTerm):
		writeError(w, http.StatusConflict, "stale_term", err.Error())
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case r.Context().Err() != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
	}
}

// Do runs one call of phase p without HTTP, for services with their own transport and for
// tests. It returns the reply to send, or an error: one wrapping ErrBadRequest for an invalid
// request, ctx's error if ctx ended while waiting for the transaction's lock, or a store or
// commit/rollback callback error (the coordinator must retry).
func (h *Handler) Do(ctx context.Context, p Phase, req Request) (Reply, error) {
	id := req.TransactionID
	switch {
	case id == "":
		return Reply{}, fmt.Errorf("%w: missing transactionId", ErrBadRequest)
	case len(id) > MaxTransactionIDBytes:
		return Reply{}, fmt.Errorf("%w: transactionId longer than %d bytes", ErrBadRequest, MaxTransactionIDBytes)
	case !validPhase(p):
		return Reply{}, fmt.Errorf("%w: unknown phase %q", ErrBadRequest, p)
	}
	var deadline time.Time
	if p == PhasePrepare && req.Deadline != "" {
		var err error
		if deadline, err = time.Parse(time.RFC3339Nano, req.Deadline); err != nil {
			return Reply{}, fmt.Errorf("%w: deadline %q is not RFC 3339: %v", ErrBadRequest, req.Deadline, err)
		}
	}
	if p == PhasePrepare {
		if err := protocol.ValidateInquiry(req.Inquiry); err != nil {
			return Reply{}, fmt.Errorf("%w: inquiry: %v", ErrBadRequest, err)
		}
	}
	unlock, err := h.lock(ctx, id)
	if err != nil {
		return Reply{}, err
	}
	defer unlock()
	rec, found, err := h.store.Get(ctx, id)
	if err != nil {
		return Reply{}, fmt.Errorf("participant: read record of %q: %w", id, err)
	}
	log := h.log.With("txn", id, "phase", string(p))
	if req.Term > 0 && found {
		switch {
		case req.Term < rec.Term:
			log.Warn("refusing a call from an earlier coordinator term", "term", req.Term, "seen", rec.Term)
			return Reply{}, fmt.Errorf("%w: call of %s from term %d; this participant has seen term %d for transaction %q", ErrStaleTerm, p, req.Term, rec.Term, id)
		case req.Term > rec.Term:
			// Remember the new term before acting, so that no call of an earlier one can
			// follow this one (a record that only moves forward: same state, higher term).
			rec.Term = req.Term
			if err := h.store.Put(ctx, rec, nil); err != nil {
				return Reply{}, fmt.Errorf("participant: record term of %q: %w", id, err)
			}
		}
	}
	term := max(req.Term, rec.Term)
	switch p {
	case PhasePrepare:
		return h.prepare(withPayload(ctx, req.Payload), log, id, deadline, req, term, rec, found)
	case PhaseCommit:
		return h.commit(withPayload(ctx, payloadOf(rec, req)), log, id, rec, found)
	default:
		return h.rollback(withPayload(ctx, payloadOf(rec, req)), log, id, term, rec, found)
	}
}

// payloadOf is the payload a commit or rollback callback gets: the one kept with the vote,
// else one the request carries.
func payloadOf(rec Record, req Request) json.RawMessage {
	if len(rec.Payload) > 0 {
		return rec.Payload
	}
	return req.Payload
}

// callbackError marks an error that came from a callback, not from the store.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }
func (e callbackError) Unwrap() error { return e.err }

// runCallback wraps fn's errors in callbackError.
func runCallback(fn func(ctx context.Context) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := fn(ctx); err != nil {
			return callbackError{err}
		}
		return nil
	}
}

func (h *Handler) prepare(ctx context.Context, log *slog.Logger, id string, deadline time.Time, req Request, term uint64, rec Record, found bool) (Reply, error) {
	if found {
		switch rec.State {
		case StatePrepared, StateCommitted:
			return ack(), nil
		case StateRefused:
			return nack(rec.Reason), nil
		default:
			log.Info("refusing prepare of a transaction already rolled back", "tombstone", rec.Tombstone)
			return nack(ReasonAlreadyRolledBack), nil
		}
	}
	now := h.now()
	if !deadline.IsZero() && !now.Before(deadline) {
		log.Warn("refusing prepare that arrived after its deadline", "deadline", deadline)
		return h.refuse(ctx, id, deadline, term, ReasonDeadlinePassed)
	}
	cctx := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		cctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	effect := runCallback(func(ctx context.Context) error { return h.cb.Prepare(ctx, id, deadline) })
	next := Record{TransactionID: id, State: StatePrepared, Deadline: deadline, Updated: now, Payload: req.Payload, Inquiry: req.Inquiry, Term: term}
	err := h.store.Put(cctx, next, effect)
	if cbErr := (callbackError{}); errors.As(err, &cbErr) {
		log.Info("prepare callback voted NACK", "reason", cbErr.err)
		return h.refuse(ctx, id, deadline, term, cbErr.err.Error())
	}
	if err != nil {
		return Reply{}, fmt.Errorf("participant: record prepare of %q: %w", id, err)
	}
	h.hold(next)
	return ack(), nil
}

// refuse records a NACK vote and returns it.
func (h *Handler) refuse(ctx context.Context, id string, deadline time.Time, term uint64, reason string) (Reply, error) {
	rec := Record{TransactionID: id, State: StateRefused, Reason: reason, Deadline: deadline, Updated: h.now(), Term: term}
	if err := h.store.Put(context.WithoutCancel(ctx), rec, nil); err != nil {
		return Reply{}, fmt.Errorf("participant: record NACK vote of %q: %w", id, err)
	}
	return nack(reason), nil
}

func (h *Handler) commit(ctx context.Context, log *slog.Logger, id string, rec Record, found bool) (Reply, error) {
	if !found {
		log.Error("2PC CONFLICT: commit of a transaction never prepared here; refusing")
		return nack(ReasonNeverPrepared), nil
	}
	switch rec.State {
	case StateCommitted:
		return ack(), nil
	case StateRolledBack:
		log.Error("2PC CONFLICT: commit of a transaction already rolled back here; refusing", "tombstone", rec.Tombstone)
		return nack("conflict: transaction was rolled back here"), nil
	case StateRefused:
		log.Error("2PC CONFLICT: commit of a transaction this participant voted NACK on; refusing", "vote_reason", rec.Reason)
		return nack("conflict: this participant voted NACK: " + rec.Reason), nil
	}
	effect := runCallback(func(ctx context.Context) error { return h.cb.Commit(ctx, id) })
	next := rec
	next.State, next.Updated = StateCommitted, h.now()
	if err := h.store.Put(ctx, next, effect); err != nil {
		log.Warn("commit failed; the coordinator will retry", "err", err)
		return Reply{}, fmt.Errorf("participant: commit %q: %w", id, err)
	}
	h.release(id)
	return ack(), nil
}

func (h *Handler) rollback(ctx context.Context, log *slog.Logger, id string, term uint64, rec Record, found bool) (Reply, error) {
	next := Record{TransactionID: id, State: StateRolledBack, Tombstone: !found, Updated: h.now(), Term: term}
	var effect func(context.Context) error
	if found {
		switch rec.State {
		case StateRolledBack:
			return ack(), nil
		case StateCommitted:
			log.Error("2PC CONFLICT: rollback of a transaction already committed here; refusing")
			return nack("conflict: transaction was committed here"), nil
		case StatePrepared:
			effect = runCallback(func(ctx context.Context) error { return h.cb.Rollback(ctx, id) })
		}
		next.Reason, next.Deadline, next.Payload = rec.Reason, rec.Deadline, rec.Payload
	} else {
		log.Info("rollback of a transaction never prepared here: recording a tombstone")
	}
	if err := h.store.Put(ctx, next, effect); err != nil {
		log.Warn("rollback failed; the coordinator will retry", "err", err)
		return Reply{}, fmt.Errorf("participant: rollback %q: %w", id, err)
	}
	h.release(id)
	return ack(), nil
}

// lock takes the per-transaction lock for id, waiting until it is free or ctx ends. A ctx
// that has already ended never takes the lock.
func (h *Handler) lock(ctx context.Context, id string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	l := h.locks[id]
	if l == nil {
		l = &txLock{ch: make(chan struct{}, 1)}
		h.locks[id] = l
	}
	l.refs++
	h.mu.Unlock()
	release := func() {
		h.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(h.locks, id)
		}
		h.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func validPhase(p Phase) bool {
	return p == PhasePrepare || p == PhaseCommit || p == PhaseRollback
}

func ack() Reply               { return Reply{Status: ACK} }
func nack(reason string) Reply { return Reply{Status: NACK, Reason: reason} }

// ErrorBody is the JSON body of every non-200 answer of a Handler: Error is a short code
// ("bad_request", "method_not_allowed", "body_too_large", "not_found", "unavailable",
// "internal_error"), Detail a sentence for humans.
type ErrorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

func writeError(w http.ResponseWriter, status int, code, detail string) {
	writeJSON(w, status, ErrorBody{Error: code, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
