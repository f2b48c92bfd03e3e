// Package protocol is txcoord's participant wire protocol: the request and reply bodies
// exchanged with services over HTTP, the headers every call carries, the rule that derives
// commit and rollback URLs from a prepare URL, the size limits, and the protocol's OpenAPI
// description (OpenAPI).
//
// It imports only the standard library, and sits below both sides of the protocol: the
// coordinator's client (coordinator/call) and the library service authors import
// (participant, which re-exports these types) each depend on it, never on each other, so a
// service author's build pulls in nothing of the coordinator. It lives under participant/
// because it is the participant protocol; docs/participant-protocol.md has the full text.
//
// The protocol in short:
//   - every call is an HTTP POST with a JSON body Request and the header
//     "Idempotency-Key: <transactionId>:<phase>";
//   - HTTP 200 with {"status":"ACK"} acknowledges (in phase one: votes yes);
//     HTTP 200 with {"status":"NACK","reason":"..."} refuses (in phase one: votes no);
//   - anything else is an error. In phase one an error counts as a NACK (presumed abort);
//     in phase two it is retried, because the decision is already final.
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Phase names one of the three calls a participant receives.
type Phase string

// The three phases. PhasePrepare is phase one; PhaseCommit and PhaseRollback are the two
// outcomes of phase two.
const (
	PhasePrepare  Phase = "prepare"
	PhaseCommit   Phase = "commit"
	PhaseRollback Phase = "rollback"
)

// Status is the "status" field of a participant's reply.
type Status string

// ACK and NACK are the only two statuses a participant may answer with.
const (
	ACK  Status = "ACK"
	NACK Status = "NACK"
)

// IdempotencyKeyHeader carries "<transactionId>:<phase>" on every call, so that a participant
// behind a generic idempotency layer can deduplicate without parsing the body.
const IdempotencyKeyHeader = "Idempotency-Key"

// Headers naming the leader that sent a call: its node id and its Raft term. A
// participant may log them (the demo services do) so that tests and audits can check that
// no phase-two message came from a node after a newer term began; the participant library
// refuses a call whose term is lower than the highest it has seen for the transaction
// (fencing, docs/participant-protocol.md).
const (
	NodeHeader = "Txcoord-Node"
	TermHeader = "Txcoord-Term"
)

// DeadlineFormat is the layout of Request.Deadline: RFC 3339 in UTC with milliseconds.
const DeadlineFormat = "2006-01-02T15:04:05.000Z07:00"

// MaxReplyBytes bounds how much of a participant's reply body is read (bytes). A longer
// body is an error: a participant has no reason to send more than a short JSON object.
const MaxReplyBytes = 64 << 10

// Request is the JSON body of every call:
// {"transactionId": "...", "deadline": "...", "payload": <any JSON value>, "inquiry": [...]}.
// Deadline is the absolute end of phase one (RFC 3339, ms, UTC); a participant should not
// hold its prepare callback past it. Payload is what the client gave this participant for
// this transaction (absent when none); the coordinator sends it in Prepare only, and a
// participant keeps it with its vote for its commit or rollback (the Handler does).
type Request struct {
	TransactionID string          `json:"transactionId"`
	Deadline      string          `json:"deadline"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	// Inquiry, in Prepare, lists the base URLs of the coordinator cluster's nodes' HTTP APIs
	// ("http://10.0.0.1:8080"): where a participant that voted yes and holds the transaction
	// past its deadline asks for the outcome, GET <url>/v1/transactions/{id}/outcome
	// ?deadline=<Deadline> (docs/participant-protocol.md, "Inquiry"). Absent when the
	// coordinator knows no address; never sent in Commit or Rollback. At most
	// MaxInquiryURLs entries, each a valid URL (ValidateURL).
	Inquiry []string `json:"inquiry,omitempty"`
	// Term is the sender's Raft term from the Txcoord-Term header (0 when absent). It is
	// not part of the body: the library's Handler.ServeHTTP fills it in, the coordinator's
	// client sends the header from the context (call.WithOrigin).
	Term uint64 `json:"-"`
}

// Reply is the JSON body of a participant's answer: {"status":"ACK"} or
// {"status":"NACK","reason":"no rooms"}.
type Reply struct {
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// FormatDeadline renders t as Request.Deadline expects it.
func FormatDeadline(t time.Time) string { return t.UTC().Format(DeadlineFormat) }

// Endpoints are the three URLs of one participant.
type Endpoints struct {
	Prepare  string `json:"prepare"`
	Commit   string `json:"commit"`
	Rollback string `json:"rollback"`
}

// URL returns the endpoint for phase p.
func (e Endpoints) URL(p Phase) string {
	switch p {
	case PhaseCommit:
		return e.Commit
	case PhaseRollback:
		return e.Rollback
	default:
		return e.Prepare
	}
}

// ErrBadURL is wrapped by every error that Derive and ValidateURL return.
var ErrBadURL = errors.New("invalid participant URL")

// MaxURLBytes bounds a participant URL. Every URL is kept in the replicated state for as
// long as its transaction, so without a bound a client could make every node hold megabytes
// per request.
const MaxURLBytes = 2048

// ValidateURL checks that raw is an absolute http or https URL of at most MaxURLBytes with a
// host and no user info or fragment. It returns an error wrapping ErrBadURL that says what
// is wrong.
func ValidateURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadURL)
	}
	if len(raw) > MaxURLBytes {
		return nil, fmt.Errorf("%w: %d bytes long; the limit is %d", ErrBadURL, len(raw), MaxURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadURL, raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: %q: scheme must be http or https", ErrBadURL, raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q: no host", ErrBadURL, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %q: user info is not allowed", ErrBadURL, raw)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q: fragment is not allowed", ErrBadURL, raw)
	}
	return u, nil
}

// Derive returns the endpoints of a participant given only its prepare URL: commit and
// rollback are the same URL with the last path segment "prepare" replaced by "commit" and
// "rollback" (the query string is kept). It returns an error wrapping ErrBadURL when the URL
// is invalid or its last path segment is not "prepare".
func Derive(prepareURL string) (Endpoints, error) {
	u, err := ValidateURL(prepareURL)
	if err != nil {
		return Endpoints{}, err
	}
	path := strings.TrimSuffix(u.Path, "/")
	dir, last := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, last = path[:i+1], path[i+1:]
	}
	if last != string(PhasePrepare) {
		return Endpoints{}, fmt.Errorf("%w: %q: last path segment must be %q (or give an object with prepare, commit and rollback URLs)", ErrBadURL, prepareURL, PhasePrepare)
	}
	with := func(seg string) string {
		v := *u
		v.Path = dir + seg
		v.RawPath = ""
		return v.String()
	}
	ep := Endpoints{Prepare: prepareURL, Commit: with(string(PhaseCommit)), Rollback: with(string(PhaseRollback))}
	// The derived URLs must pass the same checks: "rollback" is one byte longer than
	// "prepare", so a prepare URL at the length limit derives one over it.
	if err := ep.Validate(); err != nil {
		return Endpoints{}, err
	}
	return ep, nil
}

// Validate checks that all three endpoints are valid URLs. It returns an error wrapping
// ErrBadURL.
func (e Endpoints) Validate() error {
	for _, raw := range []string{e.Prepare, e.Commit, e.Rollback} {
		if _, err := ValidateURL(raw); err != nil {
			return err
		}
	}
	return nil
}
