package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/internal/openapitest"
)

// checkOpenAPI validates an answer of the API tests against api/openapi.json: every
// request served through env.do is checked, so each test's answers (errors, 202s, 503s of
// forwarding, rate limits) are answers the document describes. Routes that tests add for
// themselves (not in the document) are skipped unless they answer 404 or 405, whose body
// must still be the error shape.
func checkOpenAPI(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	doc := openapitest.Load(t, api.OpenAPI)
	if !doc.Describes(req.Method, req.URL.Path) && rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
		return
	}
	if err := doc.Check(req, rec.Code, rec.Header(), rec.Body.Bytes(), false); err != nil {
		t.Errorf("answer not described by api/openapi.json: %v", err)
	}
}

// TestOpenAPIServed: GET /v1/openapi.json answers the document, open even when tokens are
// configured, and it is an OpenAPI 3.1 document valid against the specification's schema.
func TestOpenAPIServed(t *testing.T) {
	openapitest.Load(t, api.OpenAPI)
	e := authEnv(t, &Auth{API: mustTokens(t, apiTok1), Cluster: mustTokens(t, clusterTok)})
	rec := e.do(http.MethodGet, api.OpenAPIPath, nil)
	if rec.Code != http.StatusOK || rec.Body.String() != string(api.OpenAPI) {
		t.Fatalf("GET %s: %d, body equal to api.OpenAPI: %v", api.OpenAPIPath, rec.Code, rec.Body.String() == string(api.OpenAPI))
	}
	checkJSONType(t, rec.Header())
}
