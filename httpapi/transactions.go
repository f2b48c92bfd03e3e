package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/cluster"
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
	parts, timeout, aerr := s.parseRequest(body)
	if aerr != nil {
		return writeError(c, aerr)
	}
	return s.forward(c, body, parts, key, timeout)
}

// submitLocal runs the transaction on this node, which is ready as leader. done false
// means nothing was written because this node no longer leads (a leadership transfer is
// in progress, or leadership was just lost): the caller waits for a leader and retries.
func (s *Server) submitLocal(c echo.Context, parts []fsm.Participant, key string, timeout time.Duration) (done bool, _ error) {
	r := c.Request()
	txn, err := s.sub.Submit(r.Context(), coordinator.Request{Participants: parts, Timeout: timeout, Key: key})
	switch {
	case err == nil:
		return true, s.answer(c, txn)
	case errors.Is(err, coordinator.ErrNotLeader):
		return false, nil
	case errors.Is(err, coordinator.ErrBusy):
		return true, writeError(c, &apiError{Code: codeBusy, Detail: err.Error(), retryAfter: "1"})
	case errors.Is(err, coordinator.ErrKeyReused):
		return true, writeError(c, &apiError{Code: codeConflict, Detail: err.Error()})
	case errors.Is(err, cluster.ErrFeatureUnavailable):
		return true, writeError(c, &apiError{Code: codeFeature, Detail: err.Error()})
	case errors.Is(err, coordinator.ErrIndeterminate):
		id := ""
		if txn != nil {
			id = txn.ID
		}
		return true, s.answerIndeterminate(c, id, key, timeout, err)
	case transient(err):
		s.lg.Warn("submit failed; nothing was logged", "error", err)
		return true, writeError(c, &apiError{Code: codeUnavailable, Detail: "nothing was logged, retry: " + err.Error(), retryAfter: "1"})
	default:
		s.lg.Error("submit failed", "error", err)
		return true, writeError(c, &apiError{Code: codeInternal, Detail: err.Error()})
	}
}

// transient reports whether a Submit error means "nothing was written, try again": a
// storage write that failed (disk full, I/O error: the leader steps down, cluster.ErrStorage),
// Raft shut down or its queue full. These are 503 unavailable, never 500.
func transient(err error) bool {
	return errors.Is(err, cluster.ErrStorage) || errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrAbortedByRestore)
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

func (s *Server) getTransaction(c echo.Context) error {
	t, ok := s.state.Get(c.Param("id"))
	if !ok {
		return writeError(c, &apiError{Code: codeNotFound, Detail: fmt.Sprintf("no transaction %q on node %s", c.Param("id"), s.node.ID())})
	}
	return c.JSON(http.StatusOK, viewOf(t))
}

// listTransactions serves GET /v1/transactions?status=&limit=&after=: limit defaults to
// 100 and may be at most 1000; after is the "next" cursor of the previous page.
func (s *Server) listTransactions(c echo.Context) error {
	var status fsm.Status
	if v := c.QueryParam("status"); v != "" {
		st, err := fsm.ParseStatus(v)
		if err != nil {
			return writeError(c, badRequest(err.Error()))
		}
		status = st
	}
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return writeError(c, badRequest(`"limit" must be an integer from 1 to 1000`))
		}
		limit = n
	}
	txns, next := s.state.List(status, c.QueryParam("after"), limit)
	out := TransactionList{Transactions: make([]TransactionView, len(txns)), Next: next}
	for i, t := range txns {
		out.Transactions[i] = viewOf(t)
	}
	return c.JSON(http.StatusOK, out)
}
