package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// request is one logical client request: one Idempotency-Key, retried until it gets a
// definite answer (200) or its retry budget runs out.
type request struct {
	Key      string
	TxnID    string // from the last answer that named one
	Status   string // status of the 200 answer: committed, rolled_back or failed; "" if none
	Pending  string // status of the last 202 answer (committing, rolling_back), if any
	Attempts int
	Start    time.Time
	End      time.Time
	GaveUp   bool
	// IDs every answer (200, 202, 503 indeterminate) named for this key.
	IDs []string
}

// loadGen runs Clients concurrent clients, each sending one logical request at a time to a
// random node, paced so that all together start about Rate requests a second.
type loadGen struct {
	c      *Cluster
	cfg    Config
	client *http.Client

	mu     sync.Mutex
	reqs   []*request
	errors map[string]int // per attempt that did not give a definite answer, by kind

	inflight atomic.Int64
}

func newLoadGen(c *Cluster, cfg Config) *loadGen {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.Clients,
		IdleConnTimeout:     30 * time.Second,
	}
	// A POST waits up to the timeout twice (phase one, then phase two) plus forwarding.
	timeout := 2*cfg.TxnTimeout + 5*time.Second
	return &loadGen{c: c, cfg: cfg, client: &http.Client{Transport: tr, Timeout: timeout}, errors: map[string]int{}}
}

// run starts the clients; they stop starting new requests when stop is closed, finish the
// one in progress (bounded by MaxRequestTime) and return. hard aborts everything.
func (g *loadGen) run(hard context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for i := range g.cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.client1(hard, stop, i)
		}()
	}
	wg.Wait()
}

func (g *loadGen) client1(hard context.Context, stop <-chan struct{}, idx int) {
	rng := rand.New(rand.NewPCG(g.cfg.Seed, uint64(idx)+1000))
	interval := time.Duration(float64(g.cfg.Clients) / g.cfg.Rate * float64(time.Second))
	next := time.Now().Add(time.Duration(rng.Int64N(int64(interval) + 1)))
	for n := 0; ; n++ {
		if d := time.Until(next); d > 0 {
			select {
			case <-stop:
				return
			case <-hard.Done():
				return
			case <-time.After(d):
			}
		}
		select {
		case <-stop:
			return
		case <-hard.Done():
			return
		default:
		}
		next = time.Now().Add(time.Duration(float64(interval) * (0.8 + 0.4*rng.Float64())))
		g.one(hard, rng, fmt.Sprintf("chaos-%d-c%d-%d", g.cfg.Seed, idx, n))
	}
}

// one runs a logical request to its end: a definite answer, or the retry budget spent.
func (g *loadGen) one(hard context.Context, rng *rand.Rand, key string) {
	g.inflight.Add(1)
	defer g.inflight.Add(-1)
	r := &request{Key: key, Start: time.Now()}
	g.mu.Lock()
	g.reqs = append(g.reqs, r)
	g.mu.Unlock()
	req := map[string]any{"services": g.c.PrepareURLs(), "timeout": g.cfg.TxnTimeout.Milliseconds()}
	if g.cfg.Mode != "" {
		req["mode"] = g.cfg.Mode
	}
	body, _ := json.Marshal(req)
	budget := time.Now().Add(g.cfg.MaxRequestTime)
	backoff := 50 * time.Millisecond
	for {
		node := g.c.Nodes[rng.IntN(len(g.c.Nodes))]
		code, out, kind := g.post(hard, node.URL, key, body)
		g.mu.Lock()
		r.Attempts++
		if out.TransactionID != "" {
			r.TxnID = out.TransactionID
			if len(r.IDs) == 0 || r.IDs[len(r.IDs)-1] != out.TransactionID {
				r.IDs = append(r.IDs, out.TransactionID)
			}
		}
		switch {
		case code == http.StatusOK:
			r.Status, r.End = out.Status, time.Now()
			g.mu.Unlock()
			return
		case code == http.StatusAccepted:
			r.Pending = out.Status
		}
		g.errors[kind]++
		g.mu.Unlock()
		if code >= 400 && code < 500 {
			// A client error is a bug in the harness or the API: retrying would not help.
			g.mu.Lock()
			r.GaveUp, r.End = true, time.Now()
			g.mu.Unlock()
			return
		}
		if hard.Err() != nil || time.Now().After(budget) {
			g.mu.Lock()
			r.GaveUp, r.End = true, time.Now()
			g.mu.Unlock()
			return
		}
		wait := time.Duration(float64(backoff) * (0.5 + rng.Float64()))
		backoff = min(2*backoff, time.Second)
		select {
		case <-hard.Done():
		case <-time.After(wait):
		}
	}
}

// answer is the body of a POST answer: an outcome or an error.
type answer struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
	Error         string   `json:"error"`
	Detail        string   `json:"detail"`
}

// post sends one attempt. kind names what happened, for the error counts.
func (g *loadGen) post(ctx context.Context, base, key string, body []byte) (int, answer, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/transactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, answer{}, netErrKind(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, answer{}, netErrKind(err)
	}
	var a answer
	_ = json.Unmarshal(b, &a)
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp.StatusCode, a, "ok"
	case resp.StatusCode == http.StatusAccepted:
		return resp.StatusCode, a, "http_202_" + a.Status
	case a.Error != "":
		return resp.StatusCode, a, fmt.Sprintf("http_%d_%s", resp.StatusCode, a.Error)
	default:
		return resp.StatusCode, a, fmt.Sprintf("http_%d", resp.StatusCode)
	}
}

func netErrKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_reset"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "conn_other"
	}
}

// snapshot returns copies of the requests and the error counts.
func (g *loadGen) snapshot() ([]request, map[string]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]request, len(g.reqs))
	for i, r := range g.reqs {
		out[i] = *r
		out[i].IDs = append([]string(nil), r.IDs...)
	}
	errs := make(map[string]int, len(g.errors))
	for k, v := range g.errors {
		errs[k] = v
	}
	return out, errs
}
