package httpapi

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
)

// RateLimit bounds each client's request rate (issue 8): a token bucket per client,
// keyed by the bearer token when authentication identified one, else by the peer's IP
// (RemoteAddr: X-Forwarded-For is not trusted). Requests between nodes (the cluster
// token) and /healthz, /readyz are not limited. Over the limit the answer is 429
// {"error":"rate_limited"} with Retry-After. PerSecond 0 turns limiting off (the default).
type RateLimit struct {
	PerSecond float64 // sustained requests per second per client
	Burst     int     // bucket size [max(1, ceil(PerSecond))]
	// MaxClients bounds the number of buckets kept [10000]; idle ones are dropped first.
	MaxClients int
}

const codeRateLimited = api.CodeRateLimited

type bucket struct {
	tokens float64
	last   time.Time
}

type limiter struct {
	cfg     RateLimit
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

func newLimiter(cfg RateLimit) *limiter {
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(math.Ceil(cfg.PerSecond)))
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 10000
	}
	return &limiter{cfg: cfg, buckets: map[string]*bucket{}, now: time.Now}
}

// take spends one token of key's bucket; when none is left it returns how long until one
// is.
func (l *limiter) take(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.cfg.MaxClients {
			l.evict(now)
		}
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.cfg.PerSecond * float64(time.Second))
}

// evict drops buckets that have refilled (their client is idle); if none has, it drops
// them all rather than grow without bound.
func (l *limiter) evict(now time.Time) {
	full := time.Duration(float64(l.cfg.Burst) / l.cfg.PerSecond * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.cfg.MaxClients {
		clear(l.buckets)
	}
}

// rateLimitMiddleware builds the middleware once (echo applies middleware on every
// request, so the buckets live in this closure).
func (s *Server) rateLimitMiddleware() echo.MiddlewareFunc {
	if s.cfg.RateLimit.PerSecond <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	l := newLimiter(s.cfg.RateLimit)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error { return s.limit(l, c, next) }
	}
}

func (s *Server) limit(l *limiter, c echo.Context, next echo.HandlerFunc) error {
	if p := c.Path(); p == "/healthz" || p == "/readyz" {
		return next(c)
	}
	key, _ := c.Get(identityKey).(string)
	if key == "cluster" {
		return next(c)
	}
	if key == "" {
		key = "ip:" + clientIP(c.Request())
	}
	ok, wait := l.take(key)
	if ok {
		return next(c)
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return c.JSON(http.StatusTooManyRequests, &apiError{Code: codeRateLimited,
		Detail: "too many requests from this client; retry after " + strconv.Itoa(secs) + " s"})
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
