package httpapi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func doFrom(e *env, ip, path string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = ip + ":40000"
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func TestRateLimitPerClient(t *testing.T) {
	e := newEnv(t, Config{RateLimit: RateLimit{PerSecond: 0.5, Burst: 2}})
	for i := 0; i < 2; i++ {
		if rec := doFrom(e, "192.0.2.1", "/v1/transactions"); rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	rec := doFrom(e, "192.0.2.1", "/v1/transactions")
	checkRec(t, rec, http.StatusTooManyRequests, codeRateLimited)
	if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After = %q, want 1-2 s", rec.Header().Get("Retry-After"))
	}
	// X-Forwarded-For is not trusted to pick the bucket.
	checkRec(t, doFrom(e, "192.0.2.1", "/v1/transactions", "X-Forwarded-For", "198.51.100.9"), http.StatusTooManyRequests, codeRateLimited)
	// Another client has its own bucket; health checks are never limited.
	if rec := doFrom(e, "192.0.2.2", "/v1/transactions"); rec.Code != http.StatusOK {
		t.Fatalf("other client: %d", rec.Code)
	}
	for i := 0; i < 5; i++ {
		if rec := doFrom(e, "192.0.2.1", "/healthz"); rec.Code != http.StatusOK {
			t.Fatalf("healthz limited: %d", rec.Code)
		}
	}
	if e.srv.cfg.RateLimit.PerSecond == 0 {
		t.Fatal("unreachable")
	}
}

func TestRateLimitByTokenAndClusterExempt(t *testing.T) {
	e := newEnv(t, Config{RateLimit: RateLimit{PerSecond: 0.1, Burst: 1},
		Auth: &Auth{API: mustTokens(t, apiTok1, apiTok2), Cluster: mustTokens(t, clusterTok)}})
	ip := "192.0.2.5"
	for _, tok := range []string{apiTok1, apiTok2} { // one bucket per token, same IP
		if rec := doFrom(e, ip, "/v1/transactions", "Authorization", "Bearer "+tok); rec.Code != http.StatusOK {
			t.Fatalf("first request with a token: %d", rec.Code)
		}
	}
	checkRec(t, doFrom(e, ip, "/v1/transactions", "Authorization", "Bearer "+apiTok1), http.StatusTooManyRequests, codeRateLimited)
	for i := 0; i < 5; i++ { // other nodes are not limited
		if rec := doFrom(e, ip, "/v1/transactions", "Authorization", "Bearer "+clusterTok); rec.Code != http.StatusOK {
			t.Fatalf("cluster request limited: %d", rec.Code)
		}
	}
}

func TestRateLimiterRefillAndEviction(t *testing.T) {
	l := newLimiter(RateLimit{PerSecond: 10, Burst: 1, MaxClients: 2})
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	if ok, _ := l.take("a"); !ok {
		t.Fatal("first take refused")
	}
	if ok, wait := l.take("a"); ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("second take: ok=%v wait=%s", ok, wait)
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := l.take("a"); !ok {
		t.Fatal("not refilled after 100 ms")
	}
	l.take("b")
	l.take("c") // over MaxClients: idle buckets go
	if len(l.buckets) > 2 {
		t.Fatalf("%d buckets kept, limit 2", len(l.buckets))
	}
}

// The HTTP server has every timeout set; a client that sends its headers slowly
// (slowloris) is cut off by ReadHeaderTimeout, and oversized headers are refused.
func TestServerTimeoutsAndSlowloris(t *testing.T) {
	e := newEnv(t, Config{ReadHeaderTimeout: 200 * time.Millisecond})
	hs := e.srv.NewHTTPServer("127.0.0.1:0")
	if hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.WriteTimeout <= 0 || hs.IdleTimeout <= 0 || hs.MaxHeaderBytes <= 0 {
		t.Fatalf("a server limit is unset: %+v", hs)
	}
	if def := newEnv(t, Config{}).srv.NewHTTPServer(":0"); def.ReadHeaderTimeout != 10*time.Second {
		t.Errorf("default ReadHeaderTimeout = %s", def.ReadHeaderTimeout)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Keep trickling a header byte at a time; the server must hang up anyway.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			if _, err := io.WriteString(conn, "X"); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("slow client kept its connection %s", el)
	}
	if s := string(b); s != "" && !strings.Contains(s, " 408 ") && !strings.Contains(s, " 400 ") {
		t.Fatalf("slow client got an answer: %q", s)
	}
	<-done

	// Headers over MaxHeaderBytes: 431.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	big := strings.Repeat("a", 2*hs.MaxHeaderBytes)
	go io.WriteString(c2, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n")
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %d, want 431", resp.StatusCode)
	}
}
