package httpapi

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/labstack/echo/v4"
)

const (
	apiTok1    = "client-token-aaaaaaaaaaaaaaaa"
	apiTok2    = "client-token-bbbbbbbbbbbbbbbb"
	clusterTok = "cluster-token-cccccccccccccccc"
)

func mustTokens(t *testing.T, toks ...string) *TokenSet {
	t.Helper()
	ts, err := NewTokenSet(toks...)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func authEnv(t *testing.T, a *Auth) *env {
	e := newEnv(t, Config{Auth: a})
	// Routes that other packages add (metrics, the UI) and a route added later must be
	// covered by the same middleware.
	e.srv.Echo().GET("/metrics", func(c echo.Context) error { return c.String(200, "m") })
	e.srv.Echo().GET("/ui/*", func(c echo.Context) error { return c.String(200, "ui") })
	e.srv.Echo().GET("/v1/some-future-route", func(c echo.Context) error { return c.String(200, "x") })
	return e
}

// concrete turns an echo route pattern into a path that matches it.
func concrete(p string) string {
	p = strings.ReplaceAll(p, ":id", "some-id")
	return strings.ReplaceAll(p, "*", "index.html")
}

// TestAuthEveryRoute walks every registered route: without a token and with a wrong one
// each non-open route answers 401 with the JSON error shape and WWW-Authenticate; with the
// right one it does not. A new route is covered without editing this test.
func TestAuthEveryRoute(t *testing.T) {
	e := authEnv(t, &Auth{API: mustTokens(t, apiTok1, apiTok2), Cluster: mustTokens(t, clusterTok)})
	routes := e.srv.Echo().Routes()
	if len(routes) < 8 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	for _, r := range routes {
		if r.Method == echo.RouteNotFound {
			continue
		}
		path := concrete(r.Path)
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			body := func() *strings.Reader { return strings.NewReader(`{}`) }
			if openRoutes[r.Path] {
				if rec := e.do(r.Method, path, body()); rec.Code == http.StatusUnauthorized {
					t.Fatalf("open route answered 401")
				}
				return
			}
			for _, hdr := range [][]string{
				nil,
				{"Authorization", "Bearer wrong-token-dddddddddddddddd"},
				{"Authorization", "Bearer " + apiTok1 + "x"},
				{"Authorization", "Basic " + apiTok1},
				{"Authorization", apiTok1},
				{"Authorization", "Bearer "},
			} {
				rec := e.do(r.Method, path, body(), hdr...)
				checkRec(t, rec, http.StatusUnauthorized, codeUnauthorized)
				if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
				}
				if strings.Contains(rec.Body.String(), apiTok1) || strings.Contains(rec.Body.String(), "wrong-token") {
					t.Errorf("token echoed in the answer: %s", rec.Body)
				}
			}
			if rec := e.do(r.Method, path, body(), "Authorization", "Bearer "+clusterTok); rec.Code == http.StatusUnauthorized {
				t.Errorf("cluster token refused: %s", rec.Body)
			}
			for _, tok := range []string{apiTok1, apiTok2} {
				rec := e.do(r.Method, path, body(), "Authorization", "bearer "+tok)
				if clusterRoutes[r.Path] {
					checkRec(t, rec, http.StatusUnauthorized, codeUnauthorized)
				} else if rec.Code == http.StatusUnauthorized {
					t.Errorf("client token refused: %s", rec.Body)
				}
			}
		})
	}
	// Unknown paths are not open either (deny by default).
	checkRec(t, e.do(http.MethodGet, "/nope", nil), http.StatusUnauthorized, codeUnauthorized)
}

func TestAuthClusterRoutesNeedClusterToken(t *testing.T) {
	// The classification of the operator and membership routes, whether or not this test
	// server registers them.
	e := authEnv(t, &Auth{API: mustTokens(t, apiTok1), Cluster: mustTokens(t, clusterTok)})
	for p := range clusterRoutes {
		rec := e.do(http.MethodPost, concrete(p), strings.NewReader(`{}`), "Authorization", "Bearer "+apiTok1)
		if _, registered := findRoute(e.srv.Echo(), p); registered {
			checkRec(t, rec, http.StatusUnauthorized, codeUnauthorized)
		}
	}
	// A request claiming to be forwarded must carry the cluster token.
	rec := e.post(`{"services":["`+flight+`"]}`, "Authorization", "Bearer "+apiTok1, forwardedHeader, "n9")
	checkRec(t, rec, http.StatusUnauthorized, codeUnauthorized)
	rec = e.post(`{"services":["`+flight+`"]}`, "Authorization", "Bearer "+clusterTok, forwardedHeader, "n9")
	if rec.Code != http.StatusOK {
		t.Fatalf("forwarded with cluster token: %d %s", rec.Code, rec.Body)
	}
}

func findRoute(e *echo.Echo, p string) (*echo.Route, bool) {
	for _, r := range e.Routes() {
		if r.Path == p {
			return r, true
		}
	}
	return nil, false
}

func TestAuthOffWithoutTokens(t *testing.T) {
	for _, a := range []*Auth{nil, {}, {API: &TokenSet{}}} {
		e := authEnv(t, a)
		if rec := e.post(`{"services":["` + flight + `"]}`); rec.Code != http.StatusOK {
			t.Fatalf("auth off: %d %s", rec.Code, rec.Body)
		}
	}
}

func TestAuthOnlyClusterToken(t *testing.T) {
	e := authEnv(t, &Auth{Cluster: mustTokens(t, clusterTok)})
	if rec := e.post(`{"services":["` + flight + `"]}`); rec.Code != http.StatusOK {
		t.Fatalf("client route with only a cluster token set: %d %s", rec.Code, rec.Body)
	}
	checkRec(t, e.post(`{"services":["`+flight+`"]}`, forwardedHeader, "n2"), http.StatusUnauthorized, codeUnauthorized)
}

func TestAuthOpenMetrics(t *testing.T) {
	e := authEnv(t, &Auth{API: mustTokens(t, apiTok1), OpenMetrics: true})
	if rec := e.do(http.MethodGet, "/metrics", nil); rec.Code != 200 {
		t.Fatalf("open metrics: %d", rec.Code)
	}
	e = authEnv(t, &Auth{API: mustTokens(t, apiTok1)})
	checkRec(t, e.do(http.MethodGet, "/metrics", nil), http.StatusUnauthorized, codeUnauthorized)
}

func TestTokenSetRules(t *testing.T) {
	if _, err := NewTokenSet("short"); err == nil || strings.Contains(err.Error(), "short") {
		t.Errorf("short token: err = %v (must refuse without printing the token)", err)
	}
	if _, err := NewTokenSet(); err == nil {
		t.Error("empty set accepted")
	}
	ts := mustTokens(t, apiTok1, apiTok2)
	if !ts.Match(apiTok1) || !ts.Match(apiTok2) || ts.Match(apiTok1[:20]) || ts.Match("") || ts.First() != apiTok1 {
		t.Error("Match/First wrong")
	}
	if got := ParseTokenList(" a, ,b ,"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("ParseTokenList = %q", got)
	}
}

// A token file is re-read when it changes (rotation without restart); a broken file
// keeps the old tokens.
func TestTokenFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# client tokens\n" + apiTok1 + "\n\n")
	ts, err := LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go ts.Watch(10*time.Millisecond, hclog.NewNullLogger(), stop)
	write(apiTok1 + "\n" + apiTok2 + "-rotated\n")
	waitFor(t, func() bool { return ts.Match(apiTok2 + "-rotated") })
	write("tooshort\n")
	time.Sleep(100 * time.Millisecond)
	if !ts.Match(apiTok1) {
		t.Fatal("a broken file replaced the tokens")
	}
	if err := ts.Reload(); err == nil || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With auth on, a follower forwards a client's POST with the cluster token and the leader
// accepts it.
func TestAuthForwardCarriesClusterToken(t *testing.T) {
	a := &Auth{API: mustTokens(t, apiTok1), Cluster: mustTokens(t, clusterTok)}
	lead := newNode(t, "B", true, Config{Auth: a})
	follower := newNode(t, "A", false, Config{Auth: a})
	follower.node.setLeaders(leader{"B", lead.addr})
	status, _, body := postTo(t, follower, `{"services":["`+flight+`"]}`, "Authorization", "Bearer "+apiTok1)
	if status != http.StatusOK {
		t.Fatalf("forwarded POST: %d %s", status, body)
	}
	// Only client tokens: the client's own header travels.
	a2 := &Auth{API: mustTokens(t, apiTok1)}
	leader2 := newNode(t, "D", true, Config{Auth: a2})
	follower2 := newNode(t, "C", false, Config{Auth: a2})
	follower2.node.setLeaders(leader{"D", leader2.addr})
	if status, _, body := postTo(t, follower2, `{"services":["`+flight+`"]}`, "Authorization", "Bearer "+apiTok1); status != http.StatusOK {
		t.Fatalf("forwarded POST with client token only: %d %s", status, body)
	}
	// A node with another cluster token is refused by the leader: the 401 comes back.
	bad := &Auth{API: mustTokens(t, apiTok1), Cluster: mustTokens(t, "another-cluster-token-eeeeeeee")}
	follower3 := newNode(t, "E", false, Config{Auth: bad})
	follower3.node.setLeaders(leader{"B", lead.addr})
	if status, _, _ := postTo(t, follower3, `{"services":["`+flight+`"]}`, "Authorization", "Bearer "+apiTok1); status != http.StatusUnauthorized {
		t.Fatalf("wrong cluster token: %d, want 401", status)
	}
}

// Tokens never reach the log, even at trace level and when forwarding fails.
func TestAuthTokensNeverLogged(t *testing.T) {
	var logs strings.Builder
	lg := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &logs})
	a := &Auth{API: mustTokens(t, apiTok1), Cluster: mustTokens(t, clusterTok)}
	f := newNode(t, "A", false, Config{Auth: a, Logger: lg, ForwardWait: 200 * time.Millisecond})
	f.node.setLeaders(leader{"B", "127.0.0.1:1"}) // unreachable leader
	postTo(t, f, `{"services":["`+flight+`"],"timeout":50}`, "Authorization", "Bearer "+apiTok1)
	postTo(t, f, `{"services":["`+flight+`"]}`, "Authorization", "Bearer wrong-token-dddddddddddddddd")
	for _, secret := range []string{apiTok1, clusterTok, "wrong-token"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a token reached the log: %s", logs.String())
		}
	}
	if logs.Len() == 0 {
		t.Log("nothing logged")
	}
}
