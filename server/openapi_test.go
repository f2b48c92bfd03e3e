package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/openapitest"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestOpenAPIDescribesEveryRoute compares the routes a whole node registers (the API,
// /metrics, the operations page) with the operations api/openapi.json describes: a route
// without a description fails, and so does a description of a route that does not exist.
// Routes the document deliberately leaves out are listed in it, under
// x-txcoord-undescribed-routes, with the reason.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := openapitest.Load(t, api.OpenAPI)
	c := servertest.Start(t, servertest.Options{Nodes: 1})
	n := c.Node(c.WaitLeader(10 * time.Second))

	var skip []openapitest.Route
	for _, u := range doc.Raw()["x-txcoord-undescribed-routes"].([]any) {
		m := u.(map[string]any)
		if m["why"] == "" {
			t.Errorf("undescribed route %v without a reason", m)
		}
		skip = append(skip, openapitest.Route{Method: m["method"].(string), Path: m["path"].(string)})
	}
	var registered []openapitest.Route
	for _, r := range n.API.Echo().Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		rt := openapitest.Route{Method: r.Method, Path: r.Path}
		if slices.Contains(skip, rt) {
			skip = slices.DeleteFunc(skip, func(s openapitest.Route) bool { return s == rt })
			continue
		}
		rt.Path = openapitest.EchoPath(r.Path)
		registered = append(registered, rt)
	}
	for _, s := range skip {
		t.Errorf("x-txcoord-undescribed-routes names %s, which is not registered", s)
	}
	described := doc.Routes()
	for _, r := range registered {
		if !slices.Contains(described, r) {
			t.Errorf("route %s is registered but api/openapi.json does not describe it", r)
		}
	}
	for _, r := range described {
		if !slices.Contains(registered, r) {
			t.Errorf("api/openapi.json describes %s, which no node registers", r)
		}
	}
	if len(registered) < 15 {
		t.Errorf("only %d routes registered: %v", len(registered), registered)
	}
}

// exchange sends one request to a real node and validates the request and its answer
// against the document. It returns the status and the body.
type exchanger struct {
	t   *testing.T
	doc *openapitest.Doc
	url string
	tok string
}

func (x *exchanger) do(method, path, contentType, body string, hdr ...string) (int, []byte) {
	x.t.Helper()
	var b []byte
	if body != "" || contentType != "" {
		b = []byte(body)
	}
	req := openapitest.Request(method, x.url+path, b)
	defer openapitest.Forget(req)
	req.RequestURI = ""
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if x.tok != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+x.tok)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		x.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	// The request is checked too (when it is meant to be valid: a 2xx), so the document
	// describes what clients must send as well as what they get.
	if err := x.doc.Check(req, resp.StatusCode, resp.Header, raw, resp.StatusCode/100 == 2); err != nil {
		x.t.Errorf("%v", err)
	}
	return resp.StatusCode, raw
}

func (x *exchanger) want(code int, method, path, contentType, body string, hdr ...string) []byte {
	x.t.Helper()
	got, raw := x.do(method, path, contentType, body, hdr...)
	if got != code {
		x.t.Errorf("%s %s: HTTP %d %s, want %d", method, path, got, raw, code)
	}
	return raw
}

// TestOpenAPIAnswersOfARunningNode sends the main requests of every route to a running
// node (real Raft, engine and participants) and validates each request and answer against
// api/openapi.json: the outcomes of POST /v1/transactions (committed, rolled back, failed,
// with a payload;
// 400, 401, 415), a transaction (200, 404), the list, stuck, operator actions (200, 400,
// 404, 409), history, archive and backup, membership answers, the cluster view, the read index, readyz, healthz,
// metrics, the redirects, unknown routes and methods (404, 405), and the document itself.
func TestOpenAPIAnswersOfARunningNode(t *testing.T) {
	doc := openapitest.Load(t, api.OpenAPI)
	const clusterTok = "cluster-token-0123456789abcdef"
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "/no/") && strings.HasSuffix(r.URL.Path, "/prepare") {
			_, _ = io.WriteString(w, `{"status":"NACK","reason":"no rooms left"}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	defer good.Close()
	flaky := &flakyCommit{}
	ps := httptest.NewServer(flaky)
	defer ps.Close()
	c := servertest.Start(t, servertest.Options{Nodes: 1, Tune: func(_ int, cfg *server.Config) {
		cfg.Engine.PhaseTwoMaxAttempts = 2
		cfg.Engine.RetryInitial = 5 * time.Millisecond
		cfg.Engine.RetryMax = 10 * time.Millisecond
		ts, err := httpapi.NewTokenSet(clusterTok)
		if err != nil {
			t.Fatal(err)
		}
		// Only a cluster token: client routes stay open, operator and membership routes
		// need it (a 401 to validate).
		cfg.API.Auth = &httpapi.Auth{Cluster: ts}
	}})
	n := c.Node(c.WaitLeader(10 * time.Second))
	x := &exchanger{t: t, doc: doc, url: n.URL()}
	const js = "application/json"

	// The document itself.
	raw := x.want(200, "GET", api.OpenAPIPath, "", "")
	if !bytes.Equal(raw, api.OpenAPI) {
		t.Errorf("GET %s does not answer api/openapi.json", api.OpenAPIPath)
	}

	// Transactions.
	var out api.Outcome
	raw = x.want(200, "POST", "/v1/transactions", js, `{"services":["`+good.URL+`/a/prepare",{"prepare":"`+good.URL+`/b/prepare","commit":"`+good.URL+`/b/commit","rollback":"`+good.URL+`/b/rollback"}],"timeout":2000}`, "Idempotency-Key", "oas-1")
	if json.Unmarshal(raw, &out); out.Status != api.StatusCommitted {
		t.Fatalf("commit: %s", raw)
	}
	committed := out.TransactionID
	raw = x.want(200, "POST", "/v1/transactions", js, `{"services":["`+good.URL+`/a/prepare","`+good.URL+`/no/prepare"]}`)
	if json.Unmarshal(raw, &out); out.Status != api.StatusRolledBack || len(out.Errors) == 0 {
		t.Fatalf("rollback: %s", raw)
	}
	raw = x.want(200, "POST", "/v1/transactions", js, `{"services":["`+ps.URL+`/f/prepare"],"timeout":1000}`)
	if json.Unmarshal(raw, &out); out.Status != api.StatusFailed {
		t.Fatalf("failed: %s", raw)
	}
	failed := out.TransactionID
	raw = x.want(200, "POST", "/v1/transactions", js, `{"services":["`+ps.URL+`/g/prepare"],"timeout":1000}`)
	json.Unmarshal(raw, &out)
	failed2 := out.TransactionID
	// Payloads need feature level 2, which a new cluster enables a moment after it starts
	// (until then: 409 feature_unavailable, also validated).
	if err := c.Eventually(30*time.Second, func() error {
		if code, raw := x.do("POST", "/v1/transactions", js, `{"services":[{"prepare":"`+good.URL+`/p/prepare","payload":{"seats":2,"flight":"LH400"}}]}`); code != 200 {
			return fmt.Errorf("with a payload: HTTP %d %s", code, raw)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	x.want(400, "POST", "/v1/transactions", js, `{"services":[]}`)
	x.want(400, "POST", "/v1/transactions", js, `{"services":["`+good.URL+`/a/prepare"],"timeout":"1s"}`)
	x.want(400, "POST", "/v1/transactions", js, `{"services":["`+good.URL+`/a/prepare"]}`, "Idempotency-Key", "has space")
	x.want(415, "POST", "/v1/transactions", "text/plain", `{"services":["`+good.URL+`/a/prepare"]}`)

	x.want(200, "GET", "/v1/transactions/"+committed, "", "")
	x.want(200, "GET", "/v1/transactions/"+failed+"?consistency=linearizable", "", "")
	x.want(200, "GET", "/v1/transactions/"+committed+"?consistency=stale", "", "")
	x.want(404, "GET", "/v1/transactions/no-such-id", "", "")
	x.want(400, "GET", "/v1/transactions/"+committed+"?consistency=eventual", "", "")
	x.want(200, "GET", "/v1/transactions", "", "")
	x.want(200, "GET", "/v1/transactions?status=committed&limit=1&order=asc&participant="+strings.TrimPrefix(good.URL, "http://"), "", "")
	raw = x.want(200, "GET", "/v1/transactions?limit=1", "", "")
	var page api.TransactionList
	if json.Unmarshal(raw, &page); page.Next == "" {
		t.Fatalf("page without next: %s", raw)
	}
	x.want(200, "GET", "/v1/transactions?limit=1&after="+page.Next, "", "")
	x.want(400, "GET", "/v1/transactions?limit=0", "", "")
	x.want(400, "GET", "/v1/transactions?colour=red", "", "")
	x.want(200, "GET", "/v1/stuck?olderThan=0", "", "")
	x.want(200, "GET", "/v1/stuck", "", "")
	x.want(400, "GET", "/v1/stuck?olderThan=-1", "", "")

	// Operator actions (cluster token).
	x.want(401, "POST", "/v1/transactions/"+failed+"/retry", js, `{}`)
	x.tok = clusterTok
	x.want(400, "POST", "/v1/transactions/"+failed2+"/resolve", js, `{}`)
	x.want(200, "POST", "/v1/transactions/"+failed2+"/resolve", js, `{"note":"settled by hand"}`)
	flaky.healed.Store(true)
	x.want(200, "POST", "/v1/transactions/"+failed+"/retry", js, `{"note":"ledger back"}`)
	x.want(409, "POST", "/v1/transactions/"+committed+"/retry", js, ``)
	x.want(404, "POST", "/v1/transactions/nope/resolve", js, `{"note":"x"}`)
	x.want(415, "POST", "/v1/transactions/"+committed+"/retry", "", ``)

	// History, archive, backup.
	x.want(200, "GET", "/v1/history", "", "")
	x.want(400, "GET", "/v1/history?limit=5000", "", "")
	x.want(200, "GET", "/v1/archive", "", "")
	x.want(200, "GET", "/v1/admin/snapshot", "", "")

	// Cluster.
	x.want(200, "GET", "/v1/cluster", "", "")
	x.want(200, "GET", "/v1/cluster/read-index", "", "")
	x.want(400, "POST", "/v1/cluster/join", js, `{"id":"n9"}`)
	x.do("POST", "/v1/cluster/remove", js, `{"id":"n9"}`)
	x.do("POST", "/v1/cluster/transfer-leadership", js, `{"to":"n9"}`)
	x.want(401, "POST", "/v1/cluster/remove", js, `{"id":"n9"}`, "Authorization", "Bearer wrong-token-0123456789")

	// Meta, redirects, unknown routes.
	x.want(200, "GET", "/healthz", "", "")
	x.want(200, "GET", "/readyz", "", "")
	x.want(200, "GET", "/metrics", "", "")
	x.want(302, "GET", "/", "", "")
	x.want(302, "GET", "/ui", "", "")
	x.want(404, "GET", "/v1/nothing-here", "", "")
	x.want(405, "DELETE", "/v1/cluster", "", "")
}
