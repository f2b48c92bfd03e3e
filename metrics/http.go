package metrics

import (
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// UnmatchedRoute is the route label of requests that matched no registered route (a 404
// from the router), so that scanners probing arbitrary paths add no series.
const UnmatchedRoute = "unmatched"

// httpMetrics are the API's request metrics. Every label has a bounded set of values: the
// route is the echo route pattern ("/v1/transactions/:id", never the raw path), the
// method one of the standard ones or "other", and the code a status the handlers write.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_http_requests_total",
			Help: "HTTP requests answered, by route pattern (\"unmatched\" for paths no route matches), method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "txcoord_http_request_duration_seconds",
			Help:    "HTTP request latency, from the first byte read to the handler's return, by route pattern and method.",
			Buckets: buckets,
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "txcoord_http_requests_in_flight",
			Help: "HTTP requests being served now.",
		}),
	}
}

func (h *httpMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{h.requests, h.duration, h.inFlight}
}

var notFoundHandler = reflect.ValueOf(echo.NotFoundHandler).Pointer()

// methodLabel bounds the method label: a client may send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions:
		return m
	}
	return "other"
}

// HTTPMiddleware returns an echo middleware that counts and times every request. Register
// it with echo's Pre, so that it wraps the whole chain (requests that authentication or
// the rate limiter refuse are counted too); the route is read after the router ran. An
// error the chain returns is handed to echo's HTTPErrorHandler here, as echo's own
// logging middleware does, so that the status it writes is the one counted.
func (m *Metrics) HTTPMiddleware() echo.MiddlewareFunc {
	h := m.http
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			h.inFlight.Inc()
			defer h.inFlight.Dec()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" || (c.Handler() != nil && reflect.ValueOf(c.Handler()).Pointer() == notFoundHandler) {
				route = UnmatchedRoute
			}
			method := methodLabel(c.Request().Method)
			code := c.Response().Status
			if code == 0 {
				code = http.StatusOK
			}
			h.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
			h.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}
