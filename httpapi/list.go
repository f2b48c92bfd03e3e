package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/fsm"
)

// maxListScan bounds the records one list request examines for a participant filter; a
// request that reaches it answers a short page with "next" set.
const maxListScan = 20000

// getTransaction serves GET /v1/transactions/{id}?consistency=.
func (s *Server) getTransaction(c echo.Context) error {
	if aerr := checkParams(c, "consistency"); aerr != nil {
		return writeError(c, aerr)
	}
	level, aerr := parseLevel(c)
	if aerr != nil {
		return writeError(c, aerr)
	}
	id := lookupID(c.Param("id"))
	if level == LevelDefault && !s.node.LeaderReady() {
		// A record that is final here has no later state: serve it without a hop.
		if t, ok := s.state.Get(id); ok && (t.Status == fsm.StatusCommitted || t.Status == fsm.StatusRolledBack) {
			ri := s.readInfo(level)
			return s.writeTxn(c, viewOf(t), ri)
		}
	}
	p, aerr := s.plan(c.Request().Context(), level)
	if aerr != nil {
		return writeError(c, aerr)
	}
	if p == planForward {
		return s.forwardRead(c)
	}
	ri := s.readInfo(level)
	t, ok := s.state.Get(id)
	if !ok {
		setReadHeaders(c, ri)
		if done, err := s.archived(c, id); done {
			return err
		}
		return writeError(c, &apiError{Code: codeNotFound, Detail: fmt.Sprintf("no transaction %q on node %s (%s read at applied index %d)", id, s.node.ID(), level, ri.AppliedIndex) + s.archiveGaps()})
	}
	v := viewOf(t)
	if s.node.LeaderReady() {
		v = s.leaderView(t)
	}
	return s.writeTxn(c, v, ri)
}

func (s *Server) writeTxn(c echo.Context, v TransactionView, ri *ReadInfo) error {
	v.Read = ri
	setReadHeaders(c, ri)
	return c.JSON(http.StatusOK, v)
}

// listParams are the query parameters of GET /v1/transactions.
var listParams = []string{"consistency", "status", "limit", "after", "order", "participant", "key", "createdFrom", "createdTo"}

// parseListQuery turns the query string into an fsm.ListQuery; errors name the parameter.
func parseListQuery(c echo.Context) (fsm.ListQuery, *apiError) {
	q := fsm.ListQuery{Desc: true, Limit: 100, MaxScan: maxListScan}
	if aerr := checkParams(c, listParams...); aerr != nil {
		return q, aerr
	}
	if v, given := c.QueryParams()["status"]; given {
		st, err := fsm.ParseStatus(v[0]) // "" (status=) is no status either
		if err != nil {
			return q, badRequest(`"status": ` + err.Error())
		}
		q.Status = st
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return q, badRequest(`"limit" must be an integer from 1 to 1000`)
		}
		q.Limit = n
	}
	switch v := c.QueryParam("order"); v {
	case "", "desc":
	case "asc":
		q.Desc = false
	default:
		return q, badRequest(fmt.Sprintf(`"order" must be asc or desc, not %q`, v))
	}
	if v := c.QueryParam("after"); v != "" {
		cur, ok := parseCursor(v)
		if !ok {
			return q, badRequest(`"after" must be the "next" value of an earlier page`)
		}
		q.After = cur
	}
	if v := c.QueryParam("participant"); v != "" {
		if len(v) > 2048 || strings.ContainsAny(v, " \t\r\n") {
			return q, badRequest(`"participant" must be a host, host:port or a participant URL`)
		}
		q.Participant = v
	}
	if v := c.QueryParam("key"); v != "" {
		if err := validKey(v); err != nil {
			return q, badRequest(`"key": ` + err.Error())
		}
		q.Key = v
	}
	var err error
	if q.CreatedFrom, err = parseTime(c.QueryParam("createdFrom")); err != nil {
		return q, badRequest(`"createdFrom": ` + err.Error())
	}
	if q.CreatedTo, err = parseTime(c.QueryParam("createdTo")); err != nil {
		return q, badRequest(`"createdTo": ` + err.Error())
	}
	if q.CreatedFrom != 0 && q.CreatedTo != 0 && q.CreatedTo <= q.CreatedFrom {
		return q, badRequest(`"createdTo" must be after "createdFrom"`)
	}
	return q, nil
}

// parseTime reads a created-at bound: RFC 3339 or unix ms; "" is 0 (unbounded).
func parseTime(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		if ms <= 0 {
			return 0, fmt.Errorf("unix ms must be positive")
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, fmt.Errorf("want RFC 3339 (2026-01-02T15:04:05Z) or unix ms, not %q", v)
	}
	if t.UnixMilli() <= 0 {
		return 0, fmt.Errorf("must be after 1970")
	}
	return t.UnixMilli(), nil
}

// formatCursor is the "next" of a page: "<createdAt unix ms>_<id>". Clients pass it back
// as after=; it stays valid when its record is pruned.
func formatCursor(c *fsm.Cursor) string {
	if c == nil {
		return ""
	}
	return strconv.FormatInt(c.CreatedAt, 10) + "_" + c.ID
}

func parseCursor(v string) (*fsm.Cursor, bool) {
	i := strings.IndexByte(v, '_')
	if i <= 0 || i == len(v)-1 || len(v) > 256 {
		return nil, false
	}
	ms, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil || ms < 0 {
		return nil, false
	}
	return &fsm.Cursor{CreatedAt: ms, ID: v[i+1:]}, true
}

// listTransactions serves GET /v1/transactions: newest first (order=asc for oldest
// first), filtered by status, participant, key and a created-at range, limit 1 to 1000
// [100], after= the "next" of the previous page.
func (s *Server) listTransactions(c echo.Context) error {
	q, aerr := parseListQuery(c)
	if aerr != nil {
		return writeError(c, aerr)
	}
	level, aerr := parseLevel(c)
	if aerr != nil {
		return writeError(c, aerr)
	}
	p, aerr := s.plan(c.Request().Context(), level)
	if aerr != nil {
		return writeError(c, aerr)
	}
	if p == planForward {
		return s.forwardRead(c)
	}
	ri := s.readInfo(level)
	txns, next := s.state.Query(q)
	leader := s.node.LeaderReady()
	out := TransactionList{Transactions: make([]TransactionView, 0, len(txns)), Next: formatCursor(next), Read: ri}
	for _, t := range txns {
		v := viewOf(t)
		if leader {
			v = s.leaderView(t)
			if q.Status != 0 && v.Status != q.Status.String() {
				continue // settled since it was indexed: it shows under its final status
			}
		}
		out.Transactions = append(out.Transactions, v)
	}
	setReadHeaders(c, ri)
	return c.JSON(http.StatusOK, out)
}
