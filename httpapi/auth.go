package httpapi

// Authentication (issue 8). Two credentials:
//
//   - client tokens (Auth.API): bearer tokens for the client API (POST/GET transactions,
//     GET /v1/cluster, /v1/stuck, /metrics unless Auth.OpenMetrics);
//   - the cluster token (Auth.Cluster): what nodes send each other when they forward a
//     request, and what operator and membership actions require (retry, resolve, join,
//     remove, transfer-leadership). It is accepted on every client route too.
//
// Each is a TokenSet: several tokens may be valid at once (rotation), the first one is what
// this node sends. Tokens are compared in constant time over their SHA-256 digests, and
// are never logged nor echoed back.
//
// Defaults: with no token configured at all, authentication is off (every route is open,
// as before issue 8) and server.Start logs a warning. With only client tokens, the
// operator and membership routes accept client tokens. With only a cluster token, client
// routes are open and operator/membership routes require the cluster token.
// /healthz and /readyz are always open; so are the static UI files (no data: the page's
// own API calls go through the checks like any client).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
)

// MinTokenLen is the shortest token accepted (bytes).
const MinTokenLen = 16

const codeUnauthorized = api.CodeUnauthorized

// TokenSet is a set of accepted bearer tokens that can be replaced at run time (Set,
// Reload). The zero value (and nil) holds no token. Safe for concurrent use.
type TokenSet struct {
	digests atomic.Pointer[tokenList]
	path    string // file it was loaded from, "" for literal tokens
	mu      sync.Mutex
	modTime time.Time
	size    int64
}

type tokenList struct {
	sums  [][sha256.Size]byte
	first string
}

// NewTokenSet returns a set holding tokens (each at least MinTokenLen bytes).
func NewTokenSet(tokens ...string) (*TokenSet, error) {
	ts := &TokenSet{}
	return ts, ts.Set(tokens)
}

// LoadTokenFile reads a token file: one token per line; blank lines and lines starting
// with '#' are skipped. Reload (or Watch) re-reads it.
func LoadTokenFile(path string) (*TokenSet, error) {
	ts := &TokenSet{path: path}
	if err := ts.Reload(); err != nil {
		return nil, err
	}
	return ts, nil
}

// ParseTokenList splits a comma-separated list (TXCOORD_API_TOKENS) into tokens.
func ParseTokenList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// Set replaces the accepted tokens. An empty list is refused (it would switch
// authentication off at run time); a token shorter than MinTokenLen is refused.
func (ts *TokenSet) Set(tokens []string) error {
	if len(tokens) == 0 {
		return errors.New("no token given")
	}
	l := &tokenList{first: tokens[0]}
	for i, t := range tokens {
		if len(t) < MinTokenLen {
			// Never print the token itself.
			return fmt.Errorf("token %d is %d bytes; at least %d are required", i+1, len(t), MinTokenLen)
		}
		if strings.ContainsAny(t, " \t\r\n") {
			return fmt.Errorf("token %d contains white space", i+1)
		}
		l.sums = append(l.sums, sha256.Sum256([]byte(t)))
	}
	ts.digests.Store(l)
	return nil
}

// Reload re-reads the file the set was loaded from; on error the old tokens stay.
func (ts *TokenSet) Reload() error {
	if ts == nil || ts.path == "" {
		return nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	fi, err := os.Stat(ts.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	b, err := os.ReadFile(ts.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	var tokens []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tokens = append(tokens, line)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("token file %s: %w", ts.path, err)
	}
	if err := ts.Set(tokens); err != nil {
		return fmt.Errorf("token file %s: %w", ts.path, err)
	}
	ts.modTime, ts.size = fi.ModTime(), fi.Size()
	return nil
}

// changed reports whether the file looks different from when it was last read.
func (ts *TokenSet) changed() bool {
	fi, err := os.Stat(ts.path)
	if err != nil {
		return false
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return !fi.ModTime().Equal(ts.modTime) || fi.Size() != ts.size
}

// Watch re-reads the file whenever its modification time or size changes, polling every
// interval, until stop is closed. Errors are logged (without the file's content) and the
// old tokens stay in force.
func (ts *TokenSet) Watch(interval time.Duration, lg hclog.Logger, stop <-chan struct{}) {
	if ts == nil || ts.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if !ts.changed() {
				continue
			}
			if err := ts.Reload(); err != nil {
				lg.Error("token file reload failed; keeping the previous tokens", "error", err)
			} else {
				lg.Info("token file reloaded", "path", ts.path, "tokens", ts.Len())
			}
		}
	}
}

// Len is the number of accepted tokens.
func (ts *TokenSet) Len() int {
	if ts == nil {
		return 0
	}
	l := ts.digests.Load()
	if l == nil {
		return 0
	}
	return len(l.sums)
}

// First is the token this node sends (the first of the list), "" when none.
func (ts *TokenSet) First() string {
	if ts == nil {
		return ""
	}
	if l := ts.digests.Load(); l != nil {
		return l.first
	}
	return ""
}

// Match reports whether tok is one of the tokens. It compares SHA-256 digests with
// crypto/subtle against every token, so the time taken does not depend on which token
// matched or on how much of a guess is right.
func (ts *TokenSet) Match(tok string) bool {
	if ts == nil || tok == "" {
		return false
	}
	l := ts.digests.Load()
	if l == nil {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	ok := 0
	for i := range l.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], l.sums[i][:])
	}
	return ok == 1
}

// Auth configures authentication; see the comment at the top of this file.
type Auth struct {
	API     *TokenSet // client tokens; nil or empty: client routes are open
	Cluster *TokenSet // cluster token; nil or empty: see the defaults above
	// OpenMetrics leaves GET /metrics open (for a scraper without a token).
	OpenMetrics bool
}

// Enabled reports whether any token is configured.
func (a *Auth) Enabled() bool {
	return a != nil && (a.API.Len() > 0 || a.Cluster.Len() > 0)
}

// routeClass says which credential a route needs.
type routeClass int

const (
	classOpen    routeClass = iota // no credential
	classClient                    // a client token or the cluster token
	classCluster                   // the cluster token (or a client token when no cluster token is set)
)

// clusterRoutes are the operator and membership actions, by echo route pattern.
var clusterRoutes = map[string]bool{
	"/v1/transactions/:id/retry":      true,
	"/v1/transactions/:id/resolve":    true,
	"/v1/cluster/join":                true,
	"/v1/cluster/remove":              true,
	"/v1/cluster/transfer-leadership": true,
	SnapshotPath:                      true, // history.go: a backup holds every transaction
}

// openRoutes need no credential. Every other route, including ones added later and
// unknown paths, needs one: the list is deny-by-default.
var openRoutes = map[string]bool{
	"/healthz":         true,
	"/readyz":          true,
	"/v1/openapi.json": true, // the API's description: no data
	"/":                true, // redirect to /ui/
	"/ui":              true, // redirect to /ui/
	"/ui/*":            true, // static files of the operations page
}

func (s *Server) classify(c echo.Context) routeClass {
	p := c.Path()
	switch {
	case openRoutes[p]:
		return classOpen
	case p == "/metrics" && s.cfg.Auth != nil && s.cfg.Auth.OpenMetrics:
		return classOpen
	case p == readIndexPath && (s.cfg.Auth == nil || s.cfg.Auth.Cluster.Len() == 0):
		// Node to node, and nothing /readyz does not show: open when there is no cluster
		// token (nodes would have no credential to send); else like any client route, so
		// nodes send the cluster token.
		return classOpen
	case clusterRoutes[p]:
		return classCluster
	case c.Request().Header.Get(forwardedHeader) != "":
		// Only nodes forward: a request that says it was forwarded must prove it.
		return classCluster
	}
	return classClient
}

// bearer returns the token of an "Authorization: Bearer <token>" header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):])
	}
	return ""
}

// identityKey is the echo context key under which authMiddleware stores who called:
// "cluster", "token:<8 hex digits of the token's SHA-256>", or "" when auth is off.
const identityKey = "txcoord.identity"

func unauthorized(c echo.Context, realm, detail string) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
	return c.JSON(http.StatusUnauthorized, &apiError{Code: codeUnauthorized, Detail: detail})
}

// authMiddleware enforces Config.Auth. It runs before any handler reads the body and never
// logs the Authorization header.
func (s *Server) authMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		a := s.cfg.Auth
		if !a.Enabled() {
			return next(c)
		}
		class := s.classify(c)
		if class == classOpen {
			return next(c)
		}
		tok := bearer(c.Request())
		if a.Cluster.Match(tok) {
			return pass(c, next, "cluster")
		}
		switch class {
		case classCluster:
			if a.Cluster.Len() == 0 && a.API.Match(tok) {
				return pass(c, next, tokenID(tok))
			}
			if a.Cluster.Len() == 0 {
				return unauthorized(c, "txcoord", missingOrWrong(tok, "a client token"))
			}
			return unauthorized(c, "txcoord-cluster", missingOrWrong(tok, "the cluster token")+"; operator, membership and forwarded requests need the cluster token")
		default:
			if a.API.Len() == 0 {
				return next(c) // client routes are open when only a cluster token is set
			}
			if a.API.Match(tok) {
				return pass(c, next, tokenID(tok))
			}
			return unauthorized(c, "txcoord", missingOrWrong(tok, "a client token"))
		}
	}
}

func missingOrWrong(tok, want string) string {
	if tok == "" {
		return "missing bearer token: send Authorization: Bearer <token> with " + want
	}
	return "the bearer token is not " + want
}

func tokenID(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return fmt.Sprintf("token:%x", sum[:4])
}

type clientAuthKey struct{}

// authorizeForward sets the credential a forwarded request carries: the cluster token
// when one is configured, else the client's own Authorization header, which
// authMiddleware put in ctx (so that with only client tokens the leader accepts what the
// follower accepted).
func (s *Server) authorizeForward(ctx context.Context, dst http.Header) {
	a := s.cfg.Auth
	if !a.Enabled() {
		return
	}
	if t := a.Cluster.First(); t != "" {
		dst.Set("Authorization", "Bearer "+t)
	} else if h, _ := ctx.Value(clientAuthKey{}).(string); h != "" {
		dst.Set("Authorization", h)
	}
}

// pass lets an authenticated request through, remembering its credential for forwarding.
func pass(c echo.Context, next echo.HandlerFunc, id string) error {
	c.Set(identityKey, id)
	r := c.Request()
	c.SetRequest(r.WithContext(context.WithValue(r.Context(), clientAuthKey{}, r.Header.Get("Authorization"))))
	return next(c)
}
