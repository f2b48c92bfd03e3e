package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPMiddlewareLabels: requests are counted by route pattern (never the raw path),
// bounded method and the status actually written, including statuses that come from an
// error the handler or a later middleware returns, 404s from the router and 405s.
func TestHTTPMiddlewareLabels(t *testing.T) {
	m := New(Sources{})
	e := echo.New()
	e.Pre(m.HTTPMiddleware())
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // a refusing middleware, like auth
		return func(c echo.Context) error {
			if c.Request().Header.Get("X-Refuse") != "" {
				return echo.NewHTTPError(http.StatusTooManyRequests, "slow down")
			}
			return next(c)
		}
	})
	e.GET("/v1/transactions/:id", func(c echo.Context) error {
		if c.Param("id") == "missing" {
			return echo.NewHTTPError(http.StatusNotFound, "no such transaction")
		}
		return c.String(http.StatusOK, "ok")
	})
	e.POST("/v1/transactions", func(c echo.Context) error { return errors.New("boom") })
	do := func(method, path string, hdr ...string) int {
		req := httptest.NewRequest(method, path, nil)
		if len(hdr) > 0 {
			req.Header.Set(hdr[0], "1")
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := 0; i < 3; i++ {
		do(http.MethodGet, "/v1/transactions/id-"+string(rune('a'+i)))
	}
	if code := do(http.MethodGet, "/v1/transactions/missing"); code != 404 {
		t.Fatalf("missing: %d", code)
	}
	if code := do(http.MethodPost, "/v1/transactions"); code != 500 {
		t.Fatalf("boom: %d", code)
	}
	if code := do(http.MethodGet, "/v1/transactions/x", "X-Refuse"); code != 429 {
		t.Fatalf("refused: %d", code)
	}
	do(http.MethodGet, "/no/such/path/1")
	do(http.MethodGet, "/no/such/path/2")
	do(http.MethodDelete, "/v1/transactions")
	do("BREW", "/v1/transactions/x")

	for _, c := range []struct {
		route, method, code string
		want                float64
	}{
		{"/v1/transactions/:id", "GET", "200", 3},
		{"/v1/transactions/:id", "GET", "404", 1},
		{"/v1/transactions/:id", "GET", "429", 1},
		{"/v1/transactions", "POST", "500", 1},
		{UnmatchedRoute, "GET", "404", 2},
		{"/v1/transactions", "DELETE", "405", 1},
		{"/v1/transactions/:id", "other", "405", 1},
	} {
		if got := testutil.ToFloat64(m.http.requests.WithLabelValues(c.route, c.method, c.code)); got != c.want {
			t.Errorf("requests{route=%q,method=%q,code=%q} = %v, want %v", c.route, c.method, c.code, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.http.requests); n != 7 {
		t.Errorf("%d request series, want 7 (no raw paths, no raw methods)", n)
	}
	if n := testutil.CollectAndCount(m.http.duration, "txcoord_http_request_duration_seconds"); n != 5 {
		t.Errorf("%d duration series, want 5 route/method pairs", n)
	}
	if got := testutil.ToFloat64(m.http.inFlight); got != 0 {
		t.Errorf("in flight %v after every request ended", got)
	}
}
