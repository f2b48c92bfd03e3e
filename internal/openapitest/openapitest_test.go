package openapitest_test

import (
	"net/http"
	"testing"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/internal/openapitest"
	"github.com/txcoord/txcoord/participant/protocol"
)

// TestCheckRejects: the checks catch what they are for, so a passing API test means
// something: a wrong enum value, an undeclared field (strict mode), a missing required
// field, an undeclared status, a request without its required header, an unknown error
// code on an undescribed route.
func TestCheckRejects(t *testing.T) {
	p := openapitest.Load(t, protocol.OpenAPI)
	req := func(hdr bool) *http.Request {
		r := openapitest.Request("POST", "http://participant/prepare", []byte(`{"transactionId":"t1","deadline":"2026-11-29T14:41:30.500Z"}`))
		r.Header.Set("Content-Type", "application/json")
		if hdr {
			r.Header.Set("Idempotency-Key", "t1:prepare")
		}
		return r
	}
	js := http.Header{"Content-Type": {"application/json"}}
	if err := p.Check(req(true), 200, js, []byte(`{"status":"NACK","reason":"no rooms"}`), true); err != nil {
		t.Errorf("a valid exchange: %v", err)
	}
	for name, body := range map[string]string{
		"enum":       `{"status":"MAYBE"}`,
		"undeclared": `{"status":"ACK","extra":1}`,
		"required":   `{"reason":"x"}`,
	} {
		if err := p.Check(req(true), 200, js, []byte(body), false); err == nil {
			t.Errorf("%s: %s passed", name, body)
		}
	}
	if err := p.Check(req(false), 200, js, []byte(`{"status":"ACK"}`), true); err == nil {
		t.Errorf("a call without Idempotency-Key passed")
	}
	// The Prepare's inquiry list (issue 17): a list of URLs, nothing else.
	for body, ok := range map[string]bool{
		`{"transactionId":"t1","deadline":"2026-11-29T14:41:30.500Z","inquiry":["http://n1:8081","http://n2:8081"]}`: true,
		`{"transactionId":"t1","deadline":"2026-11-29T14:41:30.500Z","inquiry":"http://n1:8081"}`:                    false,
		`{"transactionId":"t1","deadline":"2026-11-29T14:41:30.500Z","inquiry":[1]}`:                                 false,
	} {
		r := openapitest.Request("POST", "http://participant/prepare", []byte(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", "t1:prepare")
		if err := p.Check(r, 200, js, []byte(`{"status":"ACK"}`), true); (err == nil) != ok {
			t.Errorf("prepare %s: %v, want valid=%v", body, err, ok)
		}
	}

	d := openapitest.Load(t, api.OpenAPI)
	get := openapitest.Request("GET", "http://node/v1/cluster", nil)
	if err := d.Check(get, 418, js, []byte(`{"error":"internal","detail":"x"}`), false); err == nil {
		t.Errorf("an undeclared status passed")
	}
	if err := d.Check(get, 401, js, []byte(`{"error":"nope","detail":"x"}`), false); err == nil {
		t.Errorf("an unknown error code passed")
	}
	if err := d.Check(openapitest.Request("GET", "http://node/v2/x", nil), 404, js, []byte(`{"error":"nope","detail":"x"}`), false); err == nil {
		t.Errorf("an unknown error code on an undescribed route passed")
	}
	if err := d.Check(openapitest.Request("GET", "http://node/v2/x", nil), 200, js, []byte(`{}`), false); err == nil {
		t.Errorf("a 200 on an undescribed route passed")
	}
}
