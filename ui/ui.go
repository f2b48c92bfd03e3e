// Package ui is the operator's web page, served by every node at /ui/: outcomes and latency
// over the last minutes (inline SVG charts), stuck transactions with their per-participant
// errors and attempt counts, the operator actions (retry, resolve), transactions in flight,
// recent outcomes, search and paging through the history, each transaction's timeline, and
// the cluster's members and roles (docs/ui.md).
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: no build step, no
// external fonts or scripts. It reads the public HTTP API of the node that serves it
// (GET /v1/cluster, /v1/transactions, /v1/stuck; POST /v1/transactions/{id}/retry and
// /resolve) and refreshes itself every 1.5 s, so it shows that node's view of the cluster.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed static
var static embed.FS

// contentTypes are the types of the files in static/, by extension. They are fixed here
// rather than taken from the mime package, whose table the host's /etc/mime.types can
// change.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// csp allows the page's own files and API only: no inline script or style, no other origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Register mounts the page at GET /ui/ (its files under /ui/...) and redirects GET / and
// GET /ui to it.
func Register(e *echo.Echo) {
	assets := load()
	redirect := func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") }
	e.GET("/", redirect)
	e.GET("/ui", redirect)
	e.GET("/ui/*", func(c echo.Context) error {
		name := c.Param("*")
		if name == "" {
			name = "index.html"
		}
		a, ok := assets[name]
		if !ok {
			return echo.NewHTTPError(http.StatusNotFound, "no such file in the web page: /ui/"+name)
		}
		h := c.Response().Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		// Revalidate on every load: after an upgrade the page and its script change together.
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasSuffix(name, ".html") {
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
		}
		http.ServeContent(c.Response(), c.Request(), name, time.Time{}, bytes.NewReader(a.body))
		return nil
	})
}

// load reads the embedded files once; a file with an unknown extension is a programming
// error caught by the package's tests.
func load() map[string]asset {
	out := map[string]asset{}
	_ = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := contentTypes[path.Ext(p)]
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		out[strings.TrimPrefix(p, "static/")] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}
