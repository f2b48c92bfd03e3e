package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

const (
	clientToken  = "client-token-0123456789abcdef"
	clusterToken = "cluster-token-0123456789abcdef"
)

func authTune(t *testing.T, partHeader http.Header) func(int, *server.Config) {
	api, err := httpapi.NewTokenSet(clientToken)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := httpapi.NewTokenSet(clusterToken)
	if err != nil {
		t.Fatal(err)
	}
	return func(_ int, c *server.Config) {
		c.API.Auth = &httpapi.Auth{API: api, Cluster: cl}
		c.Participant.Header = partHeader
	}
}

func authDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAuthCluster runs a 3-node cluster with authentication on. Every route a real node
// serves (the API, operator and membership routes, /metrics, the UI) refuses a missing or
// wrong token; a follower forwards a client's POST to the leader with the cluster token;
// participants receive the configured header.
func TestAuthCluster(t *testing.T) {
	var sawHeader atomic.Int32
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Participant-Key") == "s3cret" {
			sawHeader.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	defer ps.Close()
	c := servertest.Start(t, servertest.Options{Tune: authTune(t, http.Header{"X-Participant-Key": {"s3cret"}})})
	c.WaitLeader(10 * time.Second)
	f := c.Node(c.Follower())

	open := map[string]bool{"/healthz": true, "/readyz": true, "/v1/openapi.json": true, "/": true, "/ui": true, "/ui/*": true}
	operator := map[string]bool{"/v1/transactions/:id/retry": true, "/v1/transactions/:id/resolve": true,
		"/v1/cluster/join": true, "/v1/cluster/remove": true, "/v1/cluster/transfer-leadership": true,
		"/v1/admin/snapshot": true} // a backup holds every transaction: operators only
	n := 0
	for _, r := range f.API.Echo().Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		n++
		path := strings.ReplaceAll(strings.ReplaceAll(r.Path, ":id", "nope"), "*", "index.html")
		url := f.URL() + path
		if open[r.Path] {
			if code, _ := authDo(t, r.Method, url, "", ""); code == http.StatusUnauthorized {
				t.Errorf("%s %s: open route answered 401", r.Method, r.Path)
			}
			continue
		}
		for _, tok := range []string{"", "wrong-token-0123456789abcdef"} {
			if code, body := authDo(t, r.Method, url, tok, "{}"); code != http.StatusUnauthorized || !strings.Contains(body, `"error":"unauthorized"`) {
				t.Errorf("%s %s with token %q: %d %s, want 401 unauthorized", r.Method, r.Path, tok, code, body)
			}
		}
		code, _ := authDo(t, r.Method, url, clientToken, "{}")
		if operator[r.Path] != (code == http.StatusUnauthorized) {
			t.Errorf("%s %s with the client token: %d", r.Method, r.Path, code)
		}
		if code, body := authDo(t, r.Method, url, clusterToken, `{}`); code == http.StatusUnauthorized {
			t.Errorf("%s %s with the cluster token: 401 %s", r.Method, r.Path, body)
		}
	}
	if n < 12 {
		t.Errorf("only %d routes checked", n)
	}

	// Forwarding: the client talks to a follower with its own token.
	code, body := authDo(t, http.MethodPost, f.URL()+"/v1/transactions", clientToken, `{"services":["`+ps.URL+`/prepare"]}`)
	if code != http.StatusOK || !strings.Contains(body, `"committed"`) {
		t.Fatalf("POST via follower: %d %s", code, body)
	}
	if sawHeader.Load() < 2 {
		t.Errorf("participant saw the configured header %d times, want prepare and commit", sawHeader.Load())
	}
	// An operator action through a follower is forwarded with the cluster token.
	code, body = authDo(t, http.MethodPost, f.URL()+"/v1/transactions/no-such-txn/retry", clusterToken, `{}`)
	if code != http.StatusNotFound {
		t.Fatalf("retry via follower: %d %s, want 404 from the leader", code, body)
	}
}
