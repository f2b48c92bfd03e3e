package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// TransactionRequest is the body of POST /v1/transactions:
//
//	{"services": ["http://flight/prepare", {"prepare": "...", "commit": "...", "rollback": "..."}],
//	 "timeout": 1000}
//
// A string entry is a prepare URL whose last path segment is "prepare"; its commit and
// rollback URLs are derived (participant.Derive). Timeout is phase one's bound in ms.
type TransactionRequest struct {
	Services []json.RawMessage `json:"services"`
	Timeout  json.RawMessage   `json:"timeout"`
}

// maxKeyLen bounds an Idempotency-Key header (bytes).
const maxKeyLen = 200

// parseRequest validates a POST body. Every rule gives a reason the client can act on;
// nothing is written to the log for a rejected request. Duplicate participants (the same
// prepare URL twice) are rejected rather than merged: a caller that lists a service twice
// has a bug we should not hide.
func (s *Server) parseRequest(body []byte) ([]fsm.Participant, time.Duration, *apiError) {
	var req TransactionRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, 0, badRequest("invalid JSON: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, 0, badRequest("invalid JSON: data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, badRequest("invalid JSON: data after the object")
	}
	timeout, aerr := s.parseTimeout(req.Timeout)
	if aerr != nil {
		return nil, 0, aerr
	}
	if req.Services == nil {
		return nil, 0, badRequest(`"services" is required: a list of prepare URLs`)
	}
	if len(req.Services) == 0 {
		return nil, 0, badRequest(`"services" is empty: a transaction needs at least one participant`)
	}
	if len(req.Services) > s.cfg.MaxServices {
		return nil, 0, badRequest(fmt.Sprintf(`"services" has %d entries; the limit is %d`, len(req.Services), s.cfg.MaxServices))
	}
	parts := make([]fsm.Participant, 0, len(req.Services))
	seen := make(map[string]int, len(req.Services))
	for i, raw := range req.Services {
		ep, err := parseService(raw)
		if err != nil {
			return nil, 0, badRequest(fmt.Sprintf("services[%d]: %v", i, err))
		}
		if j, dup := seen[ep.Prepare]; dup {
			return nil, 0, badRequest(fmt.Sprintf("services[%d] repeats services[%d] (%s): list each participant once", i, j, ep.Prepare))
		}
		seen[ep.Prepare] = i
		parts = append(parts, fsm.Participant{Prepare: ep.Prepare, Commit: ep.Commit, Rollback: ep.Rollback})
	}
	return parts, timeout, nil
}

func parseService(raw json.RawMessage) (participant.Endpoints, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var u string
		if err := json.Unmarshal(raw, &u); err != nil {
			return participant.Endpoints{}, err
		}
		return participant.Derive(u)
	case len(raw) > 0 && raw[0] == '{':
		var ep participant.Endpoints
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ep); err != nil {
			return participant.Endpoints{}, fmt.Errorf("invalid object: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		if ep.Prepare == "" || ep.Commit == "" || ep.Rollback == "" {
			return participant.Endpoints{}, errors.New(`an object must name all of "prepare", "commit" and "rollback"`)
		}
		return ep, ep.Validate()
	default:
		return participant.Endpoints{}, errors.New("must be a prepare URL string or an object with prepare, commit and rollback URLs")
	}
}

// parseTimeout accepts a JSON integer of ms from 1 to MaxTimeout; absent or null means
// DefaultTimeout. Strings, fractions and exponents are refused, not coerced (case C09).
// A timeout above MaxTimeout, however large (2^31, 2^53, a hundred digits), is refused with
// 400 rather than clamped: the client learns the limit instead of silently getting another
// bound, and the value is rejected before any duration arithmetic, so it cannot overflow
// into a deadline in the past.
func (s *Server) parseTimeout(raw json.RawMessage) (time.Duration, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return s.cfg.DefaultTimeout, nil
	}
	maxMs := s.cfg.MaxTimeout.Milliseconds()
	outOfRange := badRequest(fmt.Sprintf(`"timeout" must be an integer number of ms from 1 to %d`, maxMs))
	for i, b := range raw {
		if (b < '0' || b > '9') && !(i == 0 && b == '-') {
			return 0, outOfRange
		}
	}
	var ms int64
	if len(raw) > 19 {
		return 0, outOfRange
	}
	if _, err := fmt.Sscan(string(raw), &ms); err != nil || ms < 1 || ms > maxMs || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0, outOfRange
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// validKey checks an Idempotency-Key header: 1 to maxKeyLen printable ASCII characters.
func validKey(k string) error {
	if len(k) > maxKeyLen {
		return fmt.Errorf("Idempotency-Key is over %d bytes", maxKeyLen)
	}
	for _, r := range k {
		if r < 0x21 || r > 0x7e {
			return errors.New("Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return nil
}
