package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// TransactionRequest is the body of POST /v1/transactions:
//
//	{"services": ["http://flight/prepare",
//	              {"prepare": "http://hotel/prepare", "payload": {"nights": 2}},
//	              {"prepare": "...", "commit": "...", "rollback": "..."}],
//	 "timeout": 1000}
//
// A string entry is a prepare URL whose last path segment is "prepare"; its commit and
// rollback URLs are derived (participant.Derive). An object names "prepare" and optionally
// "commit" and "rollback" (derived when absent) and "payload", any JSON value sent to the
// participant as "payload" in its Prepare (at most Config.MaxPayloadBytes compact, and
// Config.MaxTxnPayloadBytes for all participants together). Timeout is phase one's bound in
// ms. Mode, "default" or "fast" (absent or null: Config.DefaultMode), is how the
// transaction runs (docs/fast-path.md).
// Field names are matched exactly and each may appear once (parseRequest).
type TransactionRequest struct {
	Services []json.RawMessage `json:"services"`
	Timeout  json.RawMessage   `json:"timeout"`
	Mode     json.RawMessage   `json:"mode"`
}

// maxKeyLen bounds an Idempotency-Key header (bytes).
const maxKeyLen = 200

// parseRequest validates a POST body. Every rule gives a reason the client can act on;
// nothing is written to the log for a rejected request. Duplicate participants (the same
// prepare URL twice) are rejected rather than merged: a caller that lists a service twice
// has a bug we should not hide. Field names, at the top level and in a participant object,
// must be spelled exactly and appear once: "Services", or "services" twice, is refused
// rather than matched case-insensitively or resolved by letting the last one win, as
// encoding/json alone would.
func (s *Server) parseRequest(body []byte) ([]fsm.Participant, time.Duration, *apiError) {
	r, aerr := s.parseTxnRequest(body)
	return r.parts, r.timeout, aerr
}

// txnRequest is a validated POST body.
type txnRequest struct {
	parts    []fsm.Participant
	payloads []string // nil when no participant has a payload, else one per participant
	timeout  time.Duration
	mode     coordinator.Mode
}

// parseTxnRequest is parseRequest with the payloads and the mode.
func (s *Server) parseTxnRequest(body []byte) (txnRequest, *apiError) {
	parts, payloads, timeout, mode, aerr := s.parseBody(body)
	return txnRequest{parts: parts, payloads: payloads, timeout: timeout, mode: mode}, aerr
}

func (s *Server) parseBody(body []byte) ([]fsm.Participant, []string, time.Duration, coordinator.Mode, *apiError) {
	obj, err := decodeObject(body, "services", "timeout", "mode")
	if err != nil {
		return nil, nil, 0, "", badRequest("invalid JSON: " + err.Error())
	}
	mode := s.cfg.DefaultMode
	if raw := bytes.TrimSpace(obj["mode"]); len(raw) > 0 && string(raw) != "null" {
		var m string
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, nil, 0, "", badRequest(`"mode" must be "default" or "fast"`)
		}
		if mode, err = coordinator.ParseMode(m); err != nil || m == "" {
			return nil, nil, 0, "", badRequest(fmt.Sprintf(`"mode" must be "default" or "fast", not %q`, m))
		}
	}
	parts, payloads, timeout, aerr := s.parseServices(obj)
	return parts, payloads, timeout, mode, aerr
}

func (s *Server) parseServices(obj map[string]json.RawMessage) ([]fsm.Participant, []string, time.Duration, *apiError) {
	timeout, aerr := s.parseTimeout(obj["timeout"])
	if aerr != nil {
		return nil, nil, 0, aerr
	}
	var services []json.RawMessage
	if raw := bytes.TrimSpace(obj["services"]); len(raw) > 0 {
		if err := json.Unmarshal(raw, &services); err != nil {
			return nil, nil, 0, badRequest(`"services" must be a list of prepare URLs or objects with prepare, commit and rollback URLs`)
		}
	}
	if services == nil {
		return nil, nil, 0, badRequest(`"services" is required: a list of prepare URLs`)
	}
	if len(services) == 0 {
		return nil, nil, 0, badRequest(`"services" is empty: a transaction needs at least one participant`)
	}
	if len(services) > s.cfg.MaxServices {
		return nil, nil, 0, badRequest(fmt.Sprintf(`"services" has %d entries; the limit is %d`, len(services), s.cfg.MaxServices))
	}
	parts := make([]fsm.Participant, 0, len(services))
	payloads := make([]string, 0, len(services))
	seen := make(map[string]int, len(services))
	total, any := 0, false
	for i, raw := range services {
		ep, payload, err := parseService(raw)
		if err != nil {
			return nil, nil, 0, badRequest(fmt.Sprintf("services[%d]: %v", i, err))
		}
		if len(payload) > s.cfg.MaxPayloadBytes {
			return nil, nil, 0, badRequest(fmt.Sprintf("services[%d].payload is %d bytes (compact JSON); the limit is %d bytes per participant (--max-payload-bytes)", i, len(payload), s.cfg.MaxPayloadBytes))
		}
		if total += len(payload); total > s.cfg.MaxTxnPayloadBytes {
			return nil, nil, 0, badRequest(fmt.Sprintf("the payloads of services[0..%d] are %d bytes (compact JSON); the limit is %d bytes per transaction (--max-txn-payload-bytes)", i, total, s.cfg.MaxTxnPayloadBytes))
		}
		any = any || payload != ""
		payloads = append(payloads, payload)
		if j, dup := seen[ep.Prepare]; dup {
			return nil, nil, 0, badRequest(fmt.Sprintf("services[%d] repeats services[%d] (%s): list each participant once", i, j, ep.Prepare))
		}
		seen[ep.Prepare] = i
		parts = append(parts, fsm.Participant{Prepare: ep.Prepare, Commit: ep.Commit, Rollback: ep.Rollback})
	}
	if aerr := s.checkPolicy(parts); aerr != nil {
		return nil, nil, 0, aerr
	}
	if !any {
		payloads = nil
	}
	return parts, payloads, timeout, nil
}

// decodeObject reads raw as exactly one JSON object whose keys are among fields, each
// spelled exactly and present at most once, and returns the values unparsed. Whitespace
// may follow the object; anything else may not.
func decodeObject(raw []byte, fields ...string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, errors.New("empty body")
	}
	if err != nil {
		return nil, cleanJSONError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("want a JSON object")
	}
	out := make(map[string]json.RawMessage, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, cleanJSONError(err)
		}
		k, _ := tok.(string) // in an object Token returns a key or an error
		if !slices.Contains(fields, k) {
			return nil, fmt.Errorf("unknown field %q", k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("field %q appears twice", k)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, cleanJSONError(err)
		}
		out[k] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, cleanJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the object")
	}
	return out, nil
}

// cleanJSONError drops encoding/json's "json: " prefix and names a truncated input.
func cleanJSONError(err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of input")
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// parseService reads one "services" entry: a prepare URL, or an object with "prepare" and
// optionally "commit", "rollback" (derived from prepare when absent) and "payload" (any
// JSON value, returned compacted; "" when absent or null).
func parseService(raw json.RawMessage) (participant.Endpoints, string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var u string
		if err := json.Unmarshal(raw, &u); err != nil {
			return participant.Endpoints{}, "", err
		}
		ep, err := participant.Derive(u)
		return ep, "", err
	case len(raw) > 0 && raw[0] == '{':
		obj, err := decodeObject(raw, "prepare", "commit", "rollback", "payload")
		if err != nil {
			return participant.Endpoints{}, "", fmt.Errorf("invalid object: %v", err)
		}
		var ep participant.Endpoints
		for _, f := range []struct {
			name string
			dst  *string
		}{{"prepare", &ep.Prepare}, {"commit", &ep.Commit}, {"rollback", &ep.Rollback}} {
			if v, ok := obj[f.name]; ok {
				if err := json.Unmarshal(v, f.dst); err != nil {
					return participant.Endpoints{}, "", fmt.Errorf("invalid object: %q must be a string", f.name)
				}
			}
		}
		payload := ""
		if v := bytes.TrimSpace(obj["payload"]); len(v) > 0 && string(v) != "null" {
			var buf bytes.Buffer
			if err := json.Compact(&buf, v); err != nil {
				return participant.Endpoints{}, "", fmt.Errorf(`invalid "payload": %v`, cleanJSONError(err))
			}
			payload = buf.String()
		}
		switch {
		case ep.Prepare == "":
			return participant.Endpoints{}, "", errors.New(`an object must name "prepare" (and may name "commit", "rollback" and "payload")`)
		case ep.Commit == "" && ep.Rollback == "":
			d, err := participant.Derive(ep.Prepare)
			if err != nil {
				return participant.Endpoints{}, "", fmt.Errorf("%w; or name \"commit\" and \"rollback\" too", err)
			}
			return d, payload, nil
		case ep.Commit == "" || ep.Rollback == "":
			return participant.Endpoints{}, "", errors.New(`an object must name both "commit" and "rollback", or neither (they are then derived from "prepare")`)
		}
		return ep, payload, ep.Validate()
	default:
		return participant.Endpoints{}, "", errors.New("must be a prepare URL string or an object with a prepare URL (and optionally commit, rollback and payload)")
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
