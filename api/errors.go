package api

import (
	"fmt"
	"net/http"
	"time"
)

// Code is the stable error code in the "error" member of every error answer. Codes never
// change meaning; new ones may be added, so treat an unknown code by its HTTP status.
type Code string

// The error codes and the HTTP status each is answered with (see StatusOf).
const (
	CodeBadRequest   Code = "bad_request"            // 400: the request is malformed; do not retry it
	CodeUnauthorized Code = "unauthorized"           // 401: missing or wrong bearer token
	CodeNotFound     Code = "not_found"              // 404: no such transaction, member or route
	CodeMethod       Code = "method_not_allowed"     // 405
	CodeConflict     Code = "conflict"               // 409: an operator action that does not apply, or a reused Idempotency-Key
	CodeFeature      Code = "feature_unavailable"    // 409: needs a feature the cluster enables once every node runs a build with it
	CodeMediaType    Code = "unsupported_media_type" // 415: a POST without Content-Type: application/json
	CodeRateLimited  Code = "rate_limited"           // 429: slow down; Retry-After says when
	CodeInternal     Code = "internal"               // 500
	CodeNoLeader     Code = "no_leader"              // 503: no leader could take the request; nothing was started
	CodeBusy         Code = "busy"                   // 503: the leader is at its limit of transactions in flight; nothing was started
	CodeUnavailable  Code = "unavailable"            // 503: the node cannot serve the request now
	// CodeIndeterminate (503): the request may have started a transaction (its id is in
	// Error.TransactionID when known); retry with the same Idempotency-Key to learn it.
	CodeIndeterminate Code = "indeterminate"
)

// Codes lists every error code, in the order above.
var Codes = []Code{CodeBadRequest, CodeUnauthorized, CodeNotFound, CodeMethod, CodeConflict, CodeFeature,
	CodeMediaType, CodeRateLimited, CodeInternal, CodeNoLeader, CodeBusy, CodeUnavailable, CodeIndeterminate}

// StatusOf returns the HTTP status answered with code; 500 for a code it does not know.
func StatusOf(code Code) int {
	switch code {
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeNotFound:
		return http.StatusNotFound
	case CodeMethod:
		return http.StatusMethodNotAllowed
	case CodeConflict, CodeFeature:
		return http.StatusConflict
	case CodeMediaType:
		return http.StatusUnsupportedMediaType
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeNoLeader, CodeBusy, CodeIndeterminate, CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Retryable reports whether a request answered with code may be sent again unchanged
// (after Retry-After): the 503 codes and rate_limited. A POST /v1/transactions answered
// indeterminate is only safe to resend with the same Idempotency-Key.
func (c Code) Retryable() bool {
	switch c {
	case CodeNoLeader, CodeBusy, CodeUnavailable, CodeIndeterminate, CodeRateLimited:
		return true
	}
	return false
}

// Error is the body of every error answer: {"error": code, "detail": text} and, for
// indeterminate (and a conflicting operator action), "transactionId". HTTPStatus and
// RetryAfter are filled in by clients from the response (they are not in the body).
//
// Compare with errors.Is against the sentinels below: errors.Is(err, api.ErrNotFound) is
// true for any *Error whose Code is not_found, whatever its detail.
type Error struct {
	Code          Code   `json:"error"`
	Detail        string `json:"detail"`
	TransactionID string `json:"transactionId,omitempty"`
	// HTTPStatus is the response's status code (0 when not from a response).
	HTTPStatus int `json:"-"`
	// RetryAfter is the response's Retry-After header (0 when absent).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Detail
}

// Is makes errors.Is(err, api.ErrX) match by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns an *Error with code and a formatted detail.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is, one per code.
var (
	ErrBadRequest    = &Error{Code: CodeBadRequest}
	ErrUnauthorized  = &Error{Code: CodeUnauthorized}
	ErrNotFound      = &Error{Code: CodeNotFound}
	ErrMethod        = &Error{Code: CodeMethod}
	ErrConflict      = &Error{Code: CodeConflict}
	ErrFeature       = &Error{Code: CodeFeature}
	ErrMediaType     = &Error{Code: CodeMediaType}
	ErrRateLimited   = &Error{Code: CodeRateLimited}
	ErrInternal      = &Error{Code: CodeInternal}
	ErrNoLeader      = &Error{Code: CodeNoLeader}
	ErrBusy          = &Error{Code: CodeBusy}
	ErrUnavailable   = &Error{Code: CodeUnavailable}
	ErrIndeterminate = &Error{Code: CodeIndeterminate}
)
