package chaos

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ProxyMode is what a faultProxy does with one protocol phase.
type ProxyMode int

const (
	// ProxyPass forwards the call and its answer.
	ProxyPass ProxyMode = iota
	// ProxyRefuse answers HTTP 500 without forwarding: the participant never sees the call.
	ProxyRefuse
	// ProxyHold forwards the call (the participant processes it) and holds the answer until
	// Release or until the caller goes away: the coordinator does not learn the result.
	ProxyHold
)

// faultProxy sits between the coordinator and one participant on loopback and injects
// faults per phase that the demo's /control knobs cannot express (they act on every phase
// alike): C04 uses it to keep Commit or Rollback unacknowledged after the decision is
// logged. Every other path (/state, /requests, /control) is passed through, so the proxy's
// URL can stand in for the participant's everywhere.
type faultProxy struct {
	target string
	rp     *httputil.ReverseProxy
	client *http.Client
	srv    *http.Server
	ln     net.Listener

	mu      sync.Mutex
	modes   map[string]ProxyMode
	release chan struct{}
	refused map[string]int // phase -> calls refused
}

func newFaultProxy(target string) (*faultProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &faultProxy{target: strings.TrimSuffix(target, "/"), rp: httputil.NewSingleHostReverseProxy(u),
		client: &http.Client{Timeout: 30 * time.Second}, ln: ln,
		modes: map[string]ProxyMode{}, release: make(chan struct{}), refused: map[string]int{}}
	p.rp.ErrorLog = log.New(io.Discard, "", 0) // a caller that went away (a killed leader) is expected
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's base URL.
func (p *faultProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *faultProxy) Close() { p.Release(); p.srv.Close() }

// Set sets the mode of one phase ("prepare", "commit", "rollback").
func (p *faultProxy) Set(phase string, m ProxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.modes[phase] = m
}

// Release passes every phase again and lets held answers go.
func (p *faultProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.modes = map[string]ProxyMode{}
	close(p.release)
	p.release = make(chan struct{})
}

func (p *faultProxy) Refused(phase string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused[phase]
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	phase := strings.TrimPrefix(r.URL.Path, "/")
	p.mu.Lock()
	mode, release := p.modes[phase], p.release
	if mode == ProxyRefuse {
		p.refused[phase]++
	}
	p.mu.Unlock()
	switch {
	case r.Method != http.MethodPost || mode == ProxyPass:
		p.rp.ServeHTTP(w, r)
	case mode == ProxyRefuse:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":"proxy_fault","detail":"refused by the chaos proxy"}`)
	case mode == ProxyHold:
		body, _ := io.ReadAll(r.Body)
		out, _ := http.NewRequest(http.MethodPost, p.target+r.URL.Path, bytes.NewReader(body))
		out.Header = r.Header.Clone()
		resp, err := p.client.Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
	}
}
