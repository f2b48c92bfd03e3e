package httpapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// InquiryPath is where a participant asks what became of a transaction it voted on
// (issue 17; docs/participant-protocol.md, "Inquiry").
const InquiryPath = "/v1/transactions/:id/outcome"

// maxInquiryRetryAfter caps a pending inquiry's Retry-After: the longest phase one a
// transaction may ask for (--max-timeout's default), so a participant asks again at least
// that often whatever deadline it sent.
const maxInquiryRetryAfter = 60 * time.Second

// InquiryAnswer is the answer of GET /v1/transactions/{id}/outcome (api.InquiryAnswer).
type InquiryAnswer = api.InquiryAnswer

// Inquirer is implemented by the Submitter (*coordinator.Engine does): Inquire answers an
// inquiry on the leader, logging a presumed abort when that is the answer.
type Inquirer interface {
	Inquire(ctx context.Context, id string, deadline time.Time) (coordinator.Answer, error)
}

// getOutcome serves GET /v1/transactions/{id}/outcome?deadline=<the Prepare's deadline> on
// every node. A decision in this node's FSM is final (the first decision wins, and nothing
// changes it), so any node answers it without a hop; everything else is the leader's to
// answer (Engine.Inquire): followers forward, as reads do.
func (s *Server) getOutcome(c echo.Context) error {
	if aerr := checkParams(c, "deadline"); aerr != nil {
		return writeError(c, aerr)
	}
	// Every id the cluster mints is a UUID (version 7), sent to participants in its
	// canonical lower-case form. Any other spelling of the same UUID (upper case, urn:uuid:,
	// braces) is that transaction: answering it as an unknown id would presume aborted what
	// may be committed. A string that is no UUID at all names no transaction the cluster
	// could have run, and is refused rather than written to the log.
	asked := c.Param("id")
	id, ok := canonicalID(asked)
	if !ok {
		return writeError(c, badRequest(fmt.Sprintf("%q is not a transaction id: ids are UUIDs, as in the Prepare's transactionId", truncate(asked, 80))))
	}
	var deadline time.Time
	if v := c.QueryParam("deadline"); v != "" {
		d, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return writeError(c, badRequest(fmt.Sprintf(`"deadline" must be the deadline of the Prepare, RFC 3339 (2026-12-02T06:40:00.000Z), not %q`, v)))
		}
		deadline = d
		if deadline.IsZero() {
			// 0001-01-01T00:00:00Z is a deadline long past, not "no deadline" (the zero
			// value means that below): any instant before the horizon answers the same.
			deadline = time.Unix(0, 0)
		}
	}
	if t, ok := s.state.Get(id); ok && t.Decision != fsm.DecisionNone {
		return writeInquiry(c, asked, coordinator.Answer{Outcome: coordinator.OutcomeOf(t), Txn: t})
	}
	inq, ok := s.sub.(Inquirer)
	if !s.node.LeaderReady() || !ok {
		return s.forwardRead(c)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
	defer cancel()
	a, err := inq.Inquire(ctx, id, deadline)
	if err != nil {
		if errors.Is(err, coordinator.ErrNotLeader) && c.Request().Header.Get(forwardedHeader) == "" {
			return s.forwardRead(c) // leadership just moved
		}
		ae := errorOf(err, codeInternal)
		if errors.Is(err, coordinator.ErrIndeterminate) || transient(err) {
			ae = &apiError{Code: codeUnavailable, retryAfter: "1", Detail: err.Error() + "; ask again"}
		}
		if ae.Code == codeInternal {
			s.lg.Error("inquiry failed", "txn", id, "error", err)
		}
		return writeError(c, ae)
	}
	return writeInquiry(c, asked, a)
}

// canonicalID returns the canonical (lower-case, hyphenated) form of a transaction id
// given as any spelling of a UUID that google/uuid accepts (upper case, urn:uuid:, braces,
// no hyphens), and whether raw is a UUID at all.
func canonicalID(raw string) (string, bool) {
	u, err := uuid.Parse(raw)
	if err != nil {
		return raw, false
	}
	return u.String(), true
}

// lookupID is the id a read or an operator action looks up: the canonical form of a UUID,
// anything else as given (it is then simply not found).
func lookupID(raw string) string {
	id, _ := canonicalID(raw)
	return id
}

func writeInquiry(c echo.Context, id string, a coordinator.Answer) error {
	if a.Outcome == coordinator.OutcomePending {
		// At least 1 s, at most maxInquiryRetryAfter: a far-future deadline (year 9999) must
		// not tell a participant to wait centuries.
		wait := min(max(a.RetryAfter, time.Second), maxInquiryRetryAfter)
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	}
	return c.JSON(http.StatusOK, InquiryAnswer{TransactionID: id, Outcome: string(a.Outcome)})
}

// truncate shortens s to at most n bytes for an error message (a client may send 8 KiB).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
