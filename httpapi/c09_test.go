package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// c09Services is a valid "services" list for the timeout cases.
const c09Services = `["` + flight + `","` + hotel + `"]`

// servicesN returns a JSON list of n distinct prepare URLs.
func servicesN(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"http://svc-%d.example/prepare"`, i)
	}
	b.WriteByte(']')
	return b.String()
}

func withTimeout(t string) string { return `{"services":` + c09Services + `,"timeout":` + t + `}` }
func withServices(s string) string {
	return `{"services":` + s + `,"timeout":1000}`
}

type c09Case struct {
	name    string
	body    string
	key     string // Idempotency-Key header, "" for none
	status  int    // 200 for a valid request, else 400
	detail  string // substring of "detail" (rejected requests)
	timeout time.Duration
	parts   int // participants of a valid request
}

// c09Cases are the client-input edge cases of case C09. Every rejected body must be
// answered 400 with a reason and must not reach the Submitter (nothing is logged).
//
// Rules they pin down:
//   - timeout is a JSON integer of ms from 1 to MaxTimeout (60000). Absent or null means the
//     default (5000). Strings ("100"), fractions (1.5), exponents (1e3), 0 and negatives are
//     refused, never coerced.
//   - Huge timeouts (60001, 2^31, 2^53, 2^63, any number of digits) are REJECTED with 400,
//     not clamped: clamping would silently change what the client asked for, and a
//     refused value never reaches duration arithmetic, so it cannot overflow into a
//     deadline in the past.
//   - Duplicate participants (the same prepare URL twice, as strings or objects) are
//     rejected, not merged.
//   - Field names are exact and appear once: "Services", or "services" given twice, is a
//     400, not a silent pick of one of them (encoding/json alone would match keys
//     case-insensitively and let the last duplicate win).
func c09Cases() []c09Case {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	const rangeMsg = `"timeout" must be an integer number of ms from 1 to 60000`
	return []c09Case{
		// timeout
		{name: "timeout missing uses default", body: `{"services":` + c09Services + `}`, status: 200, timeout: ms(5000), parts: 2},
		{name: "timeout null uses default", body: withTimeout("null"), status: 200, timeout: ms(5000), parts: 2},
		{name: "timeout 0", body: withTimeout("0"), status: 400, detail: rangeMsg},
		{name: "timeout -0", body: withTimeout("-0"), status: 400, detail: rangeMsg},
		{name: "timeout -1", body: withTimeout("-1"), status: 400, detail: rangeMsg},
		{name: "timeout 1", body: withTimeout("1"), status: 200, timeout: ms(1), parts: 2},
		{name: "timeout 60000", body: withTimeout("60000"), status: 200, timeout: ms(60000), parts: 2},
		{name: "timeout 60001", body: withTimeout("60001"), status: 400, detail: rangeMsg},
		{name: "timeout 2^31", body: withTimeout("2147483648"), status: 400, detail: rangeMsg},
		{name: "timeout 2^53", body: withTimeout("9007199254740992"), status: 400, detail: rangeMsg},
		{name: "timeout 2^63", body: withTimeout("9223372036854775808"), status: 400, detail: rangeMsg},
		{name: "timeout -2^63", body: withTimeout("-9223372036854775808"), status: 400, detail: rangeMsg},
		{name: "timeout 40 digits", body: withTimeout(strings.Repeat("9", 40)), status: 400, detail: rangeMsg},
		{name: "timeout string", body: withTimeout(`"100"`), status: 400, detail: rangeMsg},
		{name: "timeout fraction", body: withTimeout("1.5"), status: 400, detail: rangeMsg},
		{name: "timeout 1.0", body: withTimeout("1.0"), status: 400, detail: rangeMsg},
		{name: "timeout exponent", body: withTimeout("1e3"), status: 400, detail: rangeMsg},
		{name: "timeout bool", body: withTimeout("true"), status: 400, detail: rangeMsg},
		{name: "timeout object", body: withTimeout(`{"ms":1}`), status: 400, detail: rangeMsg},

		// services
		{name: "services missing", body: `{"timeout":1000}`, status: 400, detail: `"services" is required`},
		{name: "services null", body: withServices("null"), status: 400, detail: `"services" is required`},
		{name: "services empty", body: withServices("[]"), status: 400, detail: `"services" is empty`},
		{name: "services not a list", body: withServices(`"` + flight + `"`), status: 400, detail: `"services" must be a list`},
		{name: "services object", body: withServices(`{"a":"` + flight + `"}`), status: 400, detail: `"services" must be a list`},
		{name: "duplicate strings", body: withServices(`["` + flight + `","` + hotel + `","` + flight + `"]`), status: 400, detail: "services[2] repeats services[0]"},
		{name: "duplicate string and object", body: withServices(`["` + flight + `",{"prepare":"` + flight + `","commit":"http://flight.example/c","rollback":"http://flight.example/r"}]`), status: 400, detail: "services[1] repeats services[0]"},
		{name: "ftp scheme", body: withServices(`["ftp://flight.example/prepare"]`), status: 400, detail: "scheme must be http or https"},
		{name: "file scheme", body: withServices(`["file:///etc/prepare"]`), status: 400, detail: "scheme must be http or https"},
		{name: "javascript scheme", body: withServices(`["javascript:alert(1)//prepare"]`), status: 400, detail: "scheme must be http or https"},
		{name: "relative URL", body: withServices(`["/flight/prepare"]`), status: 400, detail: "scheme must be http or https"},
		{name: "no host", body: withServices(`["http:///prepare"]`), status: 400, detail: "no host"},
		{name: "user info", body: withServices(`["http://u:p@flight.example/prepare"]`), status: 400, detail: "user info"},
		{name: "URL over 2 KiB", body: withServices(`["http://flight.example/prepare?` + strings.Repeat("a", 2048) + `"]`), status: 400, detail: "the limit is 2048"},
		{name: "URL just under 2 KiB", body: withServices(`["http://flight.example/prepare?` + strings.Repeat("a", 2040-len("http://flight.example/prepare?")) + `"]`), status: 200, timeout: time.Second, parts: 1},
		{name: "empty string", body: withServices(`[""]`), status: 400, detail: "services[0]"},
		{name: "last segment not prepare", body: withServices(`["http://flight.example/book"]`), status: 400, detail: `last path segment must be "prepare"`},
		{name: "prepare only in query", body: withServices(`["http://flight.example/x?prepare"]`), status: 400, detail: `last path segment must be "prepare"`},
		{name: "https and trailing slash", body: withServices(`["https://flight.example/v1/prepare/"]`), status: 200, timeout: ms(1000), parts: 1},
		{name: "object with three URLs", body: withServices(`[{"prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://a.example/r"},"` + hotel + `"]`), status: 200, timeout: ms(1000), parts: 2},
		{name: "object missing rollback", body: withServices(`[{"prepare":"http://a.example/p","commit":"http://a.example/c"}]`), status: 400, detail: `must name both "commit" and "rollback", or neither`},
		{name: "object unknown field", body: withServices(`[{"prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://a.example/r","weight":1}]`), status: 400, detail: `unknown field "weight"`},
		{name: "object field twice", body: withServices(`[{"prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://a.example/r","prepare":"http://b.example/p"}]`), status: 400, detail: `"prepare" appears twice`},
		{name: "object field in other case", body: withServices(`[{"Prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://a.example/r"}]`), status: 400, detail: `unknown field "Prepare"`},
		{name: "object URL not a string", body: withServices(`[{"prepare":7,"commit":"http://a.example/c","rollback":"http://a.example/r"}]`), status: 400, detail: `"prepare" must be a string`},
		{name: "object bad scheme", body: withServices(`[{"prepare":"http://a.example/p","commit":"ftp://a.example/c","rollback":"http://a.example/r"}]`), status: 400, detail: "scheme must be http or https"},
		{name: "number entry", body: withServices(`[42]`), status: 400, detail: "must be a prepare URL string or an object"},
		{name: "null entry", body: withServices(`[null]`), status: 400, detail: "must be a prepare URL string or an object"},
		{name: "list entry", body: withServices(`[["` + flight + `"]]`), status: 400, detail: "must be a prepare URL string or an object"},
		{name: "32 entries", body: withServices(servicesN(32)), status: 200, timeout: ms(1000), parts: 32},
		{name: "33 entries", body: withServices(servicesN(33)), status: 400, detail: `"services" has 33 entries; the limit is 32`},
		{name: "10000 entries", body: withServices(servicesN(10000)), status: 400, detail: `"services" has 10000 entries; the limit is 32`},

		// the body as a whole
		{name: "invalid JSON", body: `{"services":["` + flight + `"`, status: 400, detail: "invalid JSON"},
		{name: "not an object", body: `["` + flight + `"]`, status: 400, detail: "invalid JSON"},
		{name: "trailing garbage", body: withServices(c09Services) + ` x`, status: 400, detail: "invalid JSON: data after the object"},
		{name: "second object", body: withServices(c09Services) + withServices(c09Services), status: 400, detail: "invalid JSON: data after the object"},
		{name: "trailing bracket", body: withServices(c09Services) + `]`, status: 400, detail: "invalid JSON"},
		{name: "trailing whitespace is fine", body: withServices(c09Services) + " \n\t", status: 200, timeout: ms(1000), parts: 2},
		{name: "unknown top-level field", body: `{"services":` + c09Services + `,"timeout":1000,"retries":3}`, status: 400, detail: `unknown field "retries"`},
		{name: "field name in other case", body: `{"Services":` + c09Services + `,"timeout":1000}`, status: 400, detail: `unknown field "Services"`},
		{name: "services twice", body: `{"services":` + c09Services + `,"services":["http://evil.example/prepare"]}`, status: 400, detail: `"services" appears twice`},
		{name: "timeout twice", body: `{"services":` + c09Services + `,"timeout":1000,"timeout":60000}`, status: 400, detail: `"timeout" appears twice`},
		{name: "empty object", body: `{}`, status: 400, detail: `"services" is required`},
		{name: "empty body", body: ``, status: 400, detail: "invalid JSON"},
		{name: "10 MB body", body: `{"services":["http://x.example/` + strings.Repeat("a", 10<<20) + `/prepare"]}`, status: 400, detail: "body over 1048576 bytes"},

		// Idempotency-Key
		{name: "key of 200 bytes", body: withServices(c09Services), key: strings.Repeat("k", 200), status: 200, timeout: ms(1000), parts: 2},
		{name: "key over 200 bytes", body: withServices(c09Services), key: strings.Repeat("k", 201), status: 400, detail: "Idempotency-Key is over 200 bytes"},
		{name: "key with spaces", body: withServices(c09Services), key: "order 42", status: 400, detail: "Idempotency-Key must be printable ASCII without spaces"},
		{name: "key with non-ASCII", body: withServices(c09Services), key: "ordér-42", status: 400, detail: "Idempotency-Key must be printable ASCII"},
	}
}

func TestC09_ClientInputValidation(t *testing.T) {
	for _, tc := range c09Cases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			var hdr []string
			if tc.key != "" {
				hdr = []string{participant.IdempotencyKeyHeader, tc.key}
			}
			rec := e.post(tc.body, hdr...)
			calls := e.sub.Calls()
			if tc.status != http.StatusOK {
				got := checkRec(t, rec, tc.status, codeBadRequest)
				if !strings.Contains(got["detail"], tc.detail) {
					t.Errorf("detail = %q, want it to contain %q", got["detail"], tc.detail)
				}
				if len(calls) != 0 {
					t.Errorf("rejected request reached the Submitter: %+v", calls)
				}
				if ids := e.txnIDs(); len(ids) != 0 {
					t.Errorf("rejected request wrote transactions: %v", ids)
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200: %s", rec.Code, rec.Body)
			}
			if o := outcome(t, rec.Body.Bytes()); o.Status != "committed" {
				t.Errorf("status = %q, want committed", o.Status)
			}
			if len(calls) != 1 {
				t.Fatalf("Submitter called %d times, want 1", len(calls))
			}
			if calls[0].Timeout != tc.timeout {
				t.Errorf("timeout = %v, want %v", calls[0].Timeout, tc.timeout)
			}
			if len(calls[0].Participants) != tc.parts {
				t.Errorf("participants = %d, want %d", len(calls[0].Participants), tc.parts)
			}
			if calls[0].Key != tc.key {
				t.Errorf("key = %q, want %q", calls[0].Key, tc.key)
			}
			for i, p := range calls[0].Participants {
				for _, u := range []string{p.Prepare, p.Commit, p.Rollback} {
					if _, err := protocol.ValidateURL(u); err != nil {
						t.Errorf("participant %d: %v", i, err)
					}
				}
			}
		})
	}
}

// The derived URLs of a string entry replace only the last segment and keep the query.
func TestC09_DerivedURLs(t *testing.T) {
	e := newEnv(t, Config{})
	rec := e.post(withServices(`["https://pay.example/v2/tx/prepare?tenant=7",{"prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://a.example/r"}]`))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	ps := e.sub.Calls()[0].Participants
	want := [][3]string{
		{"https://pay.example/v2/tx/prepare?tenant=7", "https://pay.example/v2/tx/commit?tenant=7", "https://pay.example/v2/tx/rollback?tenant=7"},
		{"http://a.example/p", "http://a.example/c", "http://a.example/r"},
	}
	for i, w := range want {
		if got := [3]string{ps[i].Prepare, ps[i].Commit, ps[i].Rollback}; got != w {
			t.Errorf("participant %d = %v, want %v", i, got, w)
		}
	}
}

// Configured limits replace the defaults: MaxTimeout and MaxServices.
func TestC09_ConfiguredLimits(t *testing.T) {
	e := newEnv(t, Config{MaxTimeout: 2 * time.Second, MaxServices: 2, DefaultTimeout: 1500 * time.Millisecond})
	if d := checkRec(t, e.post(withTimeout("2001")), 400, codeBadRequest)["detail"]; !strings.Contains(d, "from 1 to 2000") {
		t.Errorf("detail = %q", d)
	}
	if d := checkRec(t, e.post(withServices(servicesN(3))), 400, codeBadRequest)["detail"]; !strings.Contains(d, "the limit is 2") {
		t.Errorf("detail = %q", d)
	}
	if rec := e.post(`{"services":` + servicesN(2) + `}`); rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if got := e.sub.Calls()[0].Timeout; got != 1500*time.Millisecond {
		t.Errorf("default timeout = %v, want 1.5s", got)
	}
}

// A default timeout above the configured maximum is capped to it, so that a request
// without "timeout" never gets a bound its own "timeout" field could not ask for.
func TestC09_DefaultTimeoutCappedByMax(t *testing.T) {
	e := newEnv(t, Config{MaxTimeout: 2 * time.Second})
	if rec := e.post(`{"services":` + c09Services + `}`); rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if got := e.sub.Calls()[0].Timeout; got != 2*time.Second {
		t.Errorf("timeout = %v, want the 2s maximum", got)
	}
}

// A body over the limit is refused even when it is valid JSON.
func TestC09_BodyLimitIsConfigurable(t *testing.T) {
	e := newEnv(t, Config{MaxBodyBytes: 64})
	body := withServices(c09Services)
	if len(body) <= 64 {
		t.Fatal("test body too short")
	}
	rec := e.do(http.MethodPost, "/v1/transactions", bytes.NewReader([]byte(body)))
	if d := checkRec(t, rec, 400, codeBadRequest)["detail"]; !strings.Contains(d, "body over 64 bytes") {
		t.Errorf("detail = %q", d)
	}
	if len(e.sub.Calls()) != 0 {
		t.Error("Submitter called")
	}
}
