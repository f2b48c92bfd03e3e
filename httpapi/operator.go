package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// Operator is the engine's operator side (*coordinator.Engine implements it). When the
// Submitter given to New also implements Operator, the operator routes are served.
type Operator interface {
	Retry(ctx context.Context, id, note string) (*fsm.Txn, error)
	Resolve(ctx context.Context, id, note string) (*fsm.Txn, error)
}

// OperatorRequest is the body of POST /v1/transactions/{id}/retry and /resolve
// (api.OperatorRequest).
type OperatorRequest = api.OperatorRequest

// maxNoteLen bounds an operator note (bytes).
const maxNoteLen = 1024

func (s *Server) operatorRoutes() {
	if _, ok := s.sub.(Operator); !ok {
		return
	}
	s.echo.POST("/v1/transactions/:id/retry", s.operatorAction("retry"))
	s.echo.POST("/v1/transactions/:id/resolve", s.operatorAction("resolve"))
	s.echo.GET("/v1/stuck", s.listStuck)
}

// operatorAction serves retry and resolve. Both go through the leader (a follower passes
// the request on once) and through the Raft log, so the action is visible on every node.
func (s *Server) operatorAction(action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, aerr := s.readBody(c.Request())
		if aerr != nil {
			return writeError(c, aerr)
		}
		var req OperatorRequest
		if len(bytes.TrimSpace(body)) > 0 {
			if aerr := decodeStrict(body, &req); aerr != nil {
				return writeError(c, aerr)
			}
		}
		if len(req.Note) > maxNoteLen {
			return writeError(c, badRequest(fmt.Sprintf(`"note" is over %d bytes`, maxNoteLen)))
		}
		id := lookupID(c.Param("id"))
		if !s.node.LeaderReady() {
			return s.forwardOnce(c, "/v1/transactions/"+url.PathEscape(id)+"/"+action, body)
		}
		op := s.sub.(Operator)
		var txn *fsm.Txn
		var err error
		if action == "retry" {
			txn, err = op.Retry(c.Request().Context(), id, req.Note)
		} else {
			txn, err = op.Resolve(c.Request().Context(), id, req.Note)
		}
		if err == nil {
			return c.JSON(http.StatusOK, viewOf(txn))
		}
		ae := errorOf(err, codeInternal)
		switch {
		case errors.Is(err, fsm.ErrNotFound):
			ae.Detail = fmt.Sprintf("no transaction %q", id)
		case errors.Is(err, fsm.ErrBadTransition):
			status := "unknown"
			if txn != nil {
				status = txn.Status.String()
			}
			ae.TransactionID, ae.Detail = id, fmt.Sprintf("%s does not apply to a transaction that is %s", action, status)
		case errors.Is(err, coordinator.ErrNoteRequired):
			ae.Detail = `"note" is required: say how the transaction was settled`
		}
		return writeError(c, ae)
	}
}

// forwardOnce passes an operator request to the leader, once: the actions are safe to
// repeat by hand (a repeated retry or resolve is refused with 409), so no retry loop.
func (s *Server) forwardOnce(c echo.Context, path string, body []byte) error {
	if by := c.Request().Header.Get(forwardedHeader); by != "" {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "request forwarded by " + by + " but this node does not lead"})
	}
	_, addr := s.node.Leader()
	if addr == "" {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "no leader is known (election in progress or no quorum)"})
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 30*time.Second)
	defer cancel()
	resp, err := s.fwd.post(ctx, baseURL(addr)+path, body, "")
	if err != nil {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "forwarding to leader " + addr + ": " + err.Error()})
	}
	return copyResponse(c, resp)
}

// StuckList is GET /v1/stuck (api.StuckList).
type StuckList = api.StuckList

// listStuck serves GET /v1/stuck?olderThan=MS: failed transactions, and those whose phase
// two is unfinished more than olderThan ms after the decision (or an operator's retry), or
// still preparing that long after they began [Config.StuckAfter], with each participant's
// attempts and last error (on the leader, as of now: see liveView).
func (s *Server) listStuck(c echo.Context) error {
	if aerr := checkParams(c, "olderThan"); aerr != nil {
		return writeError(c, aerr)
	}
	older := s.cfg.StuckAfter
	if v := c.QueryParam("olderThan"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 || ms > int64(365*24*time.Hour/time.Millisecond) {
			return writeError(c, badRequest(`"olderThan" must be a number of ms from 0 to one year`))
		}
		older = time.Duration(ms) * time.Millisecond
	}
	now := time.Now().UnixMilli()
	out := StuckList{Transactions: []TransactionView{}}
	// The index scan yields every candidate (a transaction stuck in phase two began before
	// the cutoff too); Txn.Stuck keeps those whose current phase is overdue.
	for _, t := range s.state.Stuck(now-older.Milliseconds(), 0) {
		if t.Stuck(now, older.Milliseconds()) {
			if _, settled := s.settledOverlay(t); settled {
				continue // every participant acknowledged; only the completion entry is on its way
			}
			out.Transactions = append(out.Transactions, s.liveView(t))
		}
	}
	return c.JSON(http.StatusOK, out)
}
