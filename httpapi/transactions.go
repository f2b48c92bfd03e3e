package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/cluster"
	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

func (s *Server) postTransaction(c echo.Context) error {
	r := c.Request()
	if len(r.Header.Values(participant.IdempotencyKeyHeader)) > 1 {
		return writeError(c, badRequest("Idempotency-Key given more than once"))
	}
	key := r.Header.Get(participant.IdempotencyKeyHeader)
	if err := validKey(key); err != nil {
		return writeError(c, badRequest(err.Error()))
	}
	body, aerr := s.readBody(r)
	if aerr != nil {
		return writeError(c, aerr)
	}
	// Validate on the node that took the request, so bad input never travels or logs.
	req, aerr := s.parseTxnRequest(body)
	if aerr != nil {
		return writeError(c, aerr)
	}
	if req.payloads != nil {
		// Before anything is logged or forwarded (every node knows the cluster's level from
		// the log, and a leader on an earlier build would not understand the request): a
		// Begin with payloads is a command type servers on an earlier build cannot apply
		// (feature level 2).
		if fe, ok := s.node.(featureGate); ok {
			if err := fe.FeatureError(2, "participant payloads"); err != nil {
				return writeError(c, featureRefusal(err, "; send the request without payloads meanwhile"))
			}
		}
	}
	if req.mode == coordinator.ModeFast {
		// As for payloads: a fast transaction logs command types (feature level 3) that a
		// server on an earlier build cannot apply, and nothing may be sent before it is known
		// that the decision can be logged.
		if fe, ok := s.node.(featureGate); ok {
			if err := fe.FeatureError(3, "fast mode"); err != nil {
				return writeError(c, featureRefusal(err, `; send the request with "mode": "default" meanwhile`))
			}
		}
	}
	return s.forward(c, body, req, key, req.timeout)
}

// submitLocal runs the transaction on this node, which is ready as leader. done false
// means nothing was written because this node no longer leads (a leadership transfer is
// in progress, or leadership was just lost): the caller waits for a leader and retries.
func (s *Server) submitLocal(c echo.Context, req txnRequest, key string, timeout time.Duration) (done bool, _ error) {
	r := c.Request()
	ctx := r.Context()
	if s.cfg.Propagator != nil {
		ctx = s.cfg.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	txn, err := s.sub.Submit(ctx, coordinator.Request{Participants: req.parts, Payloads: req.payloads, Timeout: timeout, Key: key, Mode: req.mode})
	switch {
	case err == nil:
		return true, s.answer(c, txn)
	case errors.Is(err, coordinator.ErrNotLeader):
		return false, nil
	case errors.Is(err, coordinator.ErrIndeterminate):
		id := ""
		if txn != nil {
			id = txn.ID
		}
		return true, s.answerIndeterminate(c, id, key, timeout, err)
	case transient(err):
		s.lg.Warn("submit failed; nothing was logged", "error", err)
		return true, writeError(c, &apiError{Code: codeUnavailable, Detail: "nothing was logged, retry: " + err.Error(), retryAfter: "1"})
	}
	ae := errorOf(err, codeInternal)
	if ae.Code == codeInternal {
		s.lg.Error("submit failed", "error", err)
	}
	return true, writeError(c, ae)
}

// transient reports whether a Submit error means "nothing was written, try again": a
// storage write that failed (disk full, I/O error: the leader steps down, cluster.ErrStorage),
// Raft shut down or its queue full. These are 503 unavailable, never 500.
func transient(err error) bool {
	return errors.Is(err, cluster.ErrStorage) || errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrAbortedByRestore)
}

// featureRefusal maps a FeatureError: 409 feature_unavailable with advice when some server
// is known to run an earlier build, 503 with Retry-After while this node cannot tell yet
// (cluster.ErrFeaturePending: replaying its log after a restart).
func featureRefusal(err error, advice string) *apiError {
	ae := errorOf(err, codeFeature)
	if ae.Code == codeFeature {
		ae.Detail += advice
	}
	return ae
}

// featureGate is implemented by *cluster.Node: FeatureError says why a feature level is not
// enabled yet (wrapping cluster.ErrFeatureUnavailable), nil once it is.
type featureGate interface {
	FeatureError(need uint32, what string) error
}

// waitBound is when POST stops waiting for a transaction: phase one's deadline plus
// PhaseTwoWait (by default the transaction's own timeout once more).
func (s *Server) waitBound(t *fsm.Txn) time.Time {
	p2 := s.cfg.PhaseTwoWait
	if p2 <= 0 {
		p2 = time.Duration(t.Deadline-t.CreatedAt) * time.Millisecond
	}
	return time.UnixMilli(t.Deadline).Add(p2)
}

// answer waits on this node's FSM until the transaction is terminal or the bound passes:
// 200 with the outcome, or 202 with the status phase two is still in.
func (s *Server) answer(c echo.Context, txn *fsm.Txn) error {
	ctx, cancel := context.WithDeadline(c.Request().Context(), s.waitBound(txn))
	defer cancel()
	// On the leader the engine says when every participant has acknowledged phase two,
	// which is before the completion entry is logged: answer then.
	var settled <-chan struct{}
	if st, ok := s.sub.(Settler); ok {
		settled = st.Settled(txn.ID)
	}
	wctx := ctx
	if settled != nil {
		var stop context.CancelFunc
		wctx, stop = context.WithCancel(ctx)
		defer stop()
		go func() {
			select {
			case <-settled:
				stop()
			case <-wctx.Done():
			}
		}()
	}
	t, _ := s.state.WaitFor(wctx, txn.ID, func(t *fsm.Txn) bool { return t == nil || t.Status.Terminal() })
	if t == nil {
		t = txn
	}
	if !t.Status.Terminal() && settled != nil && isClosed(settled) {
		return c.JSON(http.StatusOK, settledOutcome(t))
	}
	code := http.StatusOK
	if !t.Status.Terminal() {
		code = http.StatusAccepted
	}
	return c.JSON(code, outcomeOf(t))
}

// Settler is optionally implemented by the Submitter (*coordinator.Engine does): Settled
// returns a channel closed once every participant of id acknowledged phase two, or nil.
type Settler interface {
	Settled(id string) <-chan struct{}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// answerIndeterminate handles a Begin whose commit is unknown (leadership lost while it was
// in flight, case C05): the entry may still commit under the next leader, so this node
// waits on its own replicated state for the real outcome before it gives up with 503. The
// 503 names the transaction id (when known) and the Idempotency-Key to retry with: for a
// request a follower forwarded without a client key, that is the key the follower minted,
// which the client has no other way to learn.
func (s *Server) answerIndeterminate(c echo.Context, id, key string, timeout time.Duration, cause error) error {
	if id != "" {
		p2 := s.cfg.PhaseTwoWait
		if p2 <= 0 {
			p2 = timeout
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), timeout+p2)
		defer cancel()
		t, _ := s.state.WaitFor(ctx, id, func(t *fsm.Txn) bool { return t != nil && t.Status.Terminal() })
		// Only a record bound to this request's key answers it. A fast transaction that was
		// never logged ends as a presumed-abort record without a key: the key is free, and a
		// retry with it may start another transaction that commits, so "rolled_back" from
		// that record would be an answer the key later contradicts.
		if t != nil && key != "" && t.Key != key {
			t = nil
		}
		if t != nil {
			// The Begin committed: the transaction exists. 200 with its outcome, or 202
			// while it is still running.
			code := http.StatusOK
			if !t.Status.Terminal() {
				code = http.StatusAccepted
			}
			return c.JSON(code, outcomeOf(t))
		}
	}
	var how []string
	if id != "" {
		how = append(how, "ask GET /v1/transactions/"+id)
	}
	if key != "" {
		how = append(how, "retry with the same Idempotency-Key: "+key)
	} else {
		how = append(how, "a retry without an Idempotency-Key may start a second transaction")
	}
	return writeError(c, &apiError{Code: codeIndeterminate, TransactionID: id, retryAfter: "1",
		Detail: fmt.Sprintf("%v; %s", cause, strings.Join(how, "; "))})
}

// LiveProgress is optionally implemented by the Submitter (*coordinator.Engine does): Live
// returns the phase-two progress of a transaction this node drives, ahead of the log.
type LiveProgress interface {
	Live(id string) ([]fsm.Report, bool)
}

// liveView is viewOf(t) with, on the leader, each participant's phase-two progress as the
// engine knows it now: an acknowledgement shows as soon as it arrives, not only once the
// next log entry records it.
func (s *Server) liveView(t *fsm.Txn) TransactionView {
	v := viewOf(t)
	lp, ok := s.sub.(LiveProgress)
	if !ok || t.Status.Terminal() {
		return v
	}
	reports, ok := lp.Live(t.ID)
	if !ok {
		return v
	}
	for i := range v.Participants {
		if i >= len(reports) {
			break
		}
		p, r := &v.Participants[i], reports[i]
		if r.Acked && !p.Acknowledged {
			p.Acknowledged, p.LastError = true, ""
		}
		if r.Attempts > p.Attempts {
			p.Attempts = r.Attempts
			if !p.Acknowledged {
				p.LastError = r.Error
			}
		}
	}
	return v
}
