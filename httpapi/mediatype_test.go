package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// TestPostNeedsJSONContentType: a POST whose body is not declared application/json is
// refused with 415 before anything runs, so a browser on another site cannot forge one
// without a CORS preflight (which is never granted); a charset parameter is fine.
func TestPostNeedsJSONContentType(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(e.commitAll)
	for _, ct := range []string{"text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/jsonx", "json"} {
		rec := e.post(threeServices, "Content-Type", ct)
		checkError(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusUnsupportedMediaType, "unsupported_media_type")
	}
	for _, path := range []string{"/v1/transactions/x/retry", "/v1/cluster/remove"} {
		rec := e.do(http.MethodPost, path, nil, "Content-Type", "text/plain")
		if rec.Code != http.StatusUnsupportedMediaType && rec.Code != http.StatusNotFound {
			t.Errorf("POST %s as text/plain: HTTP %d, want 415 (or 404 where the route is not served here)", path, rec.Code)
		}
	}
	if n := len(e.sub.Calls()); n != 0 {
		t.Fatalf("refused requests reached the submitter %d times", n)
	}
	if rec := e.post(threeServices, "Content-Type", "application/json; charset=utf-8"); rec.Code != http.StatusOK {
		t.Fatalf("application/json with a charset: HTTP %d %s", rec.Code, rec.Body)
	}
}

// TestDecodeStrictWording: a wrong type is named by its JSON field, not by a Go type.
func TestDecodeStrictWording(t *testing.T) {
	var req OperatorRequest
	aerr := decodeStrict([]byte(`{"note": 42}`), &req)
	if aerr == nil || aerr.Detail != `invalid JSON: "note" must be a string, not a number` {
		t.Fatalf("decodeStrict = %+v", aerr)
	}
	if aerr := decodeStrict([]byte(`{"nope": 1}`), &req); aerr == nil || !strings.Contains(aerr.Detail, `unknown field "nope"`) {
		t.Fatalf("unknown field: %+v", aerr)
	}
}
