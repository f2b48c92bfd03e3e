// Package openapitest checks real HTTP exchanges against an OpenAPI 3.1 document (the
// coordinator's api.OpenAPI, the participant protocol's protocol.OpenAPI) with
// libopenapi-validator, and lists the routes a document describes so that tests can
// compare them with the routes a server registers. It is for tests only.
package openapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
)

// Route is one operation of a document: a method and a path template
// ("/v1/transactions/{id}").
type Route struct{ Method, Path string }

func (r Route) String() string { return r.Method + " " + r.Path }

// Doc is a parsed, validated document. Its methods are safe for concurrent use.
type Doc struct {
	raw    map[string]any
	routes []Route
	match  []*regexp.Regexp // per route
	mu     sync.Mutex       // the validators' caches are not documented as concurrency-safe
	v      validator.Validator
	loose  validator.Validator // without strict mode, for the routes in lax
	lax    []int               // indexes into routes: operations marked x-openapitest-lax
	codes  []string            // components.schemas.ErrorCode.enum, when the document has one
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Doc{}
)

// Load parses doc and checks it against the OpenAPI specification's own schema; it fails
// the test on any error. Documents are parsed once per process.
func Load(tb testing.TB, doc []byte) *Doc {
	tb.Helper()
	d, err := load(doc)
	if err != nil {
		tb.Fatalf("openapi: %v", err)
	}
	return d
}

func load(doc []byte) (*Doc, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if d, ok := cache[string(doc)]; ok {
		return d, nil
	}
	d := &Doc{}
	if err := json.Unmarshal(doc, &d.raw); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if v, _ := d.raw["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		return nil, fmt.Errorf("openapi = %q, want 3.1.x", v)
	}
	ld, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("libopenapi: %w", err)
	}
	// Payloads are any JSON value the client chose: strict mode stops at them.
	v, errs := validator.NewValidator(ld, config.WithStrictMode(), config.WithStrictIgnorePaths("$.body.**.payload.**"), config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("building the validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("the document does not validate against the OpenAPI schema: %s", describe(verrs))
	}
	d.v = v
	if d.loose, errs = validator.NewValidator(ld, config.WithFormatAssertions()); len(errs) > 0 {
		return nil, fmt.Errorf("building the validator: %v", errs)
	}
	paths, _ := d.raw["paths"].(map[string]any)
	for p, item := range paths {
		ops, _ := item.(map[string]any)
		for m := range ops {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				d.routes = append(d.routes, Route{strings.ToUpper(m), p})
			}
		}
	}
	sort.Slice(d.routes, func(i, j int) bool { return d.routes[i].String() < d.routes[j].String() })
	for i, r := range d.routes {
		op := paths[r.Path].(map[string]any)[strings.ToLower(r.Method)].(map[string]any)
		if lax, _ := op["x-openapitest-lax"].(bool); lax {
			d.lax = append(d.lax, i)
		}
		re := regexp.QuoteMeta(r.Path)
		re = regexp.MustCompile(`\\\{[^/]+\\\}`).ReplaceAllString(re, `[^/]+`)
		d.match = append(d.match, regexp.MustCompile("^"+re+"$"))
	}
	if ec, ok := d.Schema("ErrorCode"); ok {
		for _, c := range ec["enum"].([]any) {
			d.codes = append(d.codes, c.(string))
		}
	}
	cache[string(doc)] = d
	return d, nil
}

// Routes returns the operations the document describes, sorted.
func (d *Doc) Routes() []Route { return slices.Clone(d.routes) }

// Raw returns the document as decoded JSON.
func (d *Doc) Raw() map[string]any { return d.raw }

// Schema returns components.schemas[name] as decoded JSON.
func (d *Doc) Schema(name string) (map[string]any, bool) {
	c, _ := d.raw["components"].(map[string]any)
	s, _ := c["schemas"].(map[string]any)
	m, ok := s[name].(map[string]any)
	return m, ok
}

// Describes reports whether the document has an operation for method and path.
func (d *Doc) Describes(method, path string) bool { return d.find(method, path) >= 0 }

func (d *Doc) find(method, path string) int {
	for i, r := range d.routes {
		if r.Method == method && d.match[i].MatchString(path) {
			return i
		}
	}
	return -1
}

// EchoPath turns an echo route pattern ("/v1/transactions/:id") into an OpenAPI path
// template ("/v1/transactions/{id}").
func EchoPath(p string) string {
	return regexp.MustCompile(`:([A-Za-z0-9_]+)`).ReplaceAllString(p, `{$1}`)
}

// Check validates one exchange, in strict mode (a property the document does not declare
// is an error) except for operations marked "x-openapitest-lax": true: req as sent (its body, if any, is read and restored) and
// the answer's status, headers and body. When checkRequest is set the request is checked
// too. An exchange on a route the document does not describe (an unknown path, a method
// the route lacks) must answer 404 or 405 with the error body.
func (d *Doc) Check(req *http.Request, status int, header http.Header, body []byte, checkRequest bool) error {
	i := d.find(req.Method, req.URL.Path)
	if status == http.StatusMethodNotAllowed {
		// Any path may answer 405 (a server without an optional route, a method the
		// route lacks): the error body is all there is to check.
		return d.checkErrorBody(body)
	}
	if i < 0 {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return fmt.Errorf("%s %s is not described and answered %d (want 404 or 405)", req.Method, req.URL.Path, status)
		}
		return d.checkErrorBody(body)
	}
	resp := &http.Response{StatusCode: status, Header: header.Clone(), Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []*verrors.ValidationError
	restore(req) // a sent request's body was read by the transport or the handler
	if checkRequest {
		if ok, verrs := d.v.ValidateHttpRequestSync(req); !ok {
			errs = append(errs, verrs...)
		}
		restore(req)
	}
	v := d.v
	if slices.Contains(d.lax, i) {
		// An answer whose schema is deliberately open (the document itself): strict mode
		// would flag every property below the declared ones.
		v = d.loose
	}
	if ok, verrs := v.ValidateHttpResponse(req, resp); !ok {
		errs = append(errs, verrs...)
	}
	restore(req)
	if len(errs) > 0 {
		return fmt.Errorf("%s %s answered %d %s: %s", req.Method, req.URL.Path, status, truncate(body), describe(errs))
	}
	return nil
}

// checkErrorBody checks body is the error shape with a known code (the fallback for
// exchanges the document has no operation for).
func (d *Doc) checkErrorBody(body []byte) error {
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("error body is not JSON: %q", truncate(body))
	}
	code, _ := e["error"].(string)
	if _, ok := e["detail"].(string); !ok || code == "" {
		return fmt.Errorf("error body lacks error or detail: %s", truncate(body))
	}
	if d.codes != nil && !slices.Contains(d.codes, code) {
		return fmt.Errorf("error code %q is not in the document's ErrorCode", code)
	}
	return nil
}

// bodies keeps request bodies so that Check can read them after the server did.
var bodies sync.Map // *http.Request -> []byte

// Request returns an httptest request whose body Check can read after the handler did.
func Request(method, target string, body []byte) *http.Request {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if body != nil {
		bodies.Store(r, body)
	}
	return r
}

// KeepBody records r's body (reading it) so that Check can read it again.
func KeepBody(r *http.Request) {
	if r.Body == nil {
		return
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	bodies.Store(r, b)
	r.Body = io.NopCloser(bytes.NewReader(b))
}

func restore(r *http.Request) {
	if b, ok := bodies.Load(r); ok {
		r.Body = io.NopCloser(bytes.NewReader(b.([]byte)))
	}
}

// Forget drops the body kept for r.
func Forget(r *http.Request) { bodies.Delete(r) }

// Middleware wraps h so that every exchange through it is checked; failures go to fail
// (typically t.Errorf).
func (d *Doc) Middleware(h http.Handler, checkRequest bool, fail func(format string, args ...any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		KeepBody(r)
		defer Forget(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		restore(r)
		if err := d.Check(r, rec.Code, rec.Header(), rec.Body.Bytes(), checkRequest); err != nil {
			fail("openapi: %v", err)
		}
	})
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n  - %s: %s", e.Message, e.Reason)
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s at %s", s.Reason, s.FieldPath)
		}
	}
	return b.String()
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}
