package httpapi

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/coordinator/call"
)

// Forbidden participant URLs are a 400 naming the reason; the submitter is never called
// and nothing (not even at trace level) is logged.
func TestPolicyRejectsBeforeLogging(t *testing.T) {
	var logs bytes.Buffer
	lg := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &logs})
	e := newEnv(t, Config{Logger: lg, URLPolicy: &call.Policy{
		Allow: []string{".example", "127.0.0.1"}, Self: []string{"127.0.0.1:8081"},
	}})
	for body, reason := range map[string]string{
		`{"services":["http://169.254.169.254/latest/prepare"]}`:                                                          "metadata",
		`{"services":["http://metadata.google.internal/prepare"]}`:                                                        "metadata",
		`{"services":["http://[fe80::1]/prepare"]}`:                                                                       "link-local",
		`{"services":["http://127.0.0.1:8081/prepare"]}`:                                                                  "own address",
		`{"services":["http://evil.net/prepare"]}`:                                                                        "allowlist",
		`{"services":[{"prepare":"http://a.example/p","commit":"http://a.example/c","rollback":"http://169.254.1.1/r"}]}`: "rollback URL refused",
	} {
		rec := e.post(body)
		m := checkRec(t, rec, http.StatusBadRequest, codeBadRequest)
		if !strings.Contains(m["detail"], reason) {
			t.Errorf("%s: detail %q does not name %q", body, m["detail"], reason)
		}
	}
	if n := len(e.sub.Calls()); n != 0 {
		t.Fatalf("submitter called %d times", n)
	}
	if logs.Len() != 0 {
		t.Fatalf("rejected requests were logged: %s", logs.String())
	}
	if rec := e.post(`{"services":["http://flight.example/prepare"]}`); rec.Code != http.StatusOK {
		t.Fatalf("allowed URL: %d %s", rec.Code, rec.Body)
	}
}

// Without a configured policy, link-local and metadata addresses are still refused and
// loopback is allowed.
func TestPolicyDefault(t *testing.T) {
	e := newEnv(t, Config{})
	checkRec(t, e.post(`{"services":["http://169.254.169.254/prepare"]}`), http.StatusBadRequest, codeBadRequest)
	if rec := e.post(`{"services":["http://127.0.0.1:9001/prepare"]}`); rec.Code != http.StatusOK {
		t.Fatalf("loopback refused by default: %d %s", rec.Code, rec.Body)
	}
}
