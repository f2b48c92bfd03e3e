package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	e := echo.New()
	Register(e)
	ts := httptest.NewServer(e)
	t.Cleanup(ts.Close)
	return ts
}

// noRedirect is a client that reports redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestPageServesHTML checks that GET /ui/ is the page with the elements the script fills
// in and the dialogs of the operator actions, with a policy that forbids inline script and
// other origins.
func TestPageServesHTML(t *testing.T) {
	ts := newServer(t)
	resp, body := get(t, http.DefaultClient, ts.URL+"/ui/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("GET /ui/: Content-Type %q", ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("GET /ui/: Content-Security-Policy %q", csp)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("GET /ui/: no X-Content-Type-Options: nosniff")
	}
	for _, want := range []string{
		`<html lang="en">`, `<main id="main"`, `<h1`,
		`id="members-body"`, `id="stuck-list"`, `id="inflight-body"`, `id="recent-body"`,
		`id="chart-outcomes-svg"`, `id="chart-latency-svg"`, `id="chart-window"`,
		`role="search"`, `id="search-by"`, `id="search-text"`, `id="history-body"`, `id="page-prev"`, `id="page-next"`,
		`<dialog id="action-dialog"`, `id="action-note"`, `id="action-submit"`, `id="pause"`,
		`role="alert"`, `aria-live="polite"`,
		`<script src="app.js" defer></script>`, `<link rel="stylesheet" href="style.css">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /ui/: page lacks %s", want)
		}
	}
	// Nothing from another origin and nothing inline that the policy would block.
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)(src|href)="(https?:)?//`),
		regexp.MustCompile(`(?i)<script>`),
		regexp.MustCompile(`(?i)\sstyle="`),
		regexp.MustCompile(`(?i)\son[a-z]+="`),
	} {
		if m := bad.FindString(body); m != "" {
			t.Errorf("GET /ui/: page has %q", m)
		}
	}
	// Every file the page references is served.
	for _, m := range regexp.MustCompile(`(?:src|href)="([a-z][a-z0-9.-]*)"`).FindAllStringSubmatch(body, -1) {
		if r, _ := get(t, http.DefaultClient, ts.URL+"/ui/"+m[1]); r.StatusCode != http.StatusOK {
			t.Errorf("the page references %s, served with HTTP %d", m[1], r.StatusCode)
		}
	}
}

// TestAssetsContentTypes checks each asset's Content-Type and that every embedded file has
// a known one.
func TestAssetsContentTypes(t *testing.T) {
	ts := newServer(t)
	for name, want := range map[string]string{
		"index.html":  "text/html; charset=utf-8",
		"app.js":      "text/javascript; charset=utf-8",
		"style.css":   "text/css; charset=utf-8",
		"favicon.svg": "image/svg+xml",
	} {
		resp, body := get(t, http.DefaultClient, ts.URL+"/ui/"+name)
		if resp.StatusCode != http.StatusOK || body == "" {
			t.Errorf("GET /ui/%s: HTTP %d, %d bytes", name, resp.StatusCode, len(body))
		}
		if ct := resp.Header.Get("Content-Type"); ct != want {
			t.Errorf("GET /ui/%s: Content-Type %q, want %q", name, ct, want)
		}
		if resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET /ui/%s: ETag %q, Cache-Control %q", name, resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
		}
	}
	_ = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && contentTypes[path.Ext(p)] == "" {
			t.Errorf("embedded %s has no content type in contentTypes", p)
		}
		return err
	})
}

func TestRedirectsAndNotFound(t *testing.T) {
	ts := newServer(t)
	for _, p := range []string{"/", "/ui"} {
		resp, _ := get(t, noRedirect, ts.URL+p)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: HTTP %d Location %q, want 302 to /ui/", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := get(t, http.DefaultClient, ts.URL+"/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: HTTP %d, want 404", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, ts.URL+"/ui/../go.mod"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/../go.mod: HTTP %d, want 404", resp.StatusCode)
	}
}

func TestConditionalGet(t *testing.T) {
	ts := newServer(t)
	resp, _ := get(t, http.DefaultClient, ts.URL+"/ui/app.js")
	etag := resp.Header.Get("ETag")
	resp, body := get(t, http.DefaultClient, ts.URL+"/ui/app.js", "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Fatalf("GET /ui/app.js with If-None-Match %s: HTTP %d, %d bytes; want 304", etag, resp.StatusCode, len(body))
	}
}
