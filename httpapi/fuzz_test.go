package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// fuzzServer is a server with the default limits whose node leads and whose Submitter is
// never reached by parseRequest.
func fuzzServer() *Server {
	return New(Config{}, &fakeNode{id: "fuzz", leaderReady: true}, fsm.New(), &fakeSubmitter{})
}

// seedBodies are the C09 bodies small enough for a fuzz corpus.
func seedBodies() []string {
	var out []string
	for _, tc := range c09Cases() {
		if len(tc.body) <= 4<<10 {
			out = append(out, tc.body)
		}
	}
	return append(out, threeServices, `{"services":["http://[::1]:8080/prepare"]}`, `{"services":["HTTP://A/prepare","http://a/prepare"]}`)
}

// FuzzParseRequest: parseRequest never panics; what it accepts is valid JSON and a
// transaction the engine can run (1 to MaxServices participants with distinct prepare URLs, every URL valid, a
// timeout from 1 ms to MaxTimeout); what it refuses is a 400 with a reason.
func FuzzParseRequest(f *testing.F) {
	for _, b := range seedBodies() {
		f.Add([]byte(b))
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte) {
		parts, timeout, aerr := s.parseRequest(body)
		if aerr != nil {
			if aerr.Code != codeBadRequest || aerr.Detail == "" || parts != nil {
				t.Fatalf("refusal %+v with %d participants", aerr, len(parts))
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON: %q", body)
		}
		if timeout < time.Millisecond || timeout > s.cfg.MaxTimeout {
			t.Fatalf("accepted timeout %v", timeout)
		}
		if len(parts) < 1 || len(parts) > s.cfg.MaxServices {
			t.Fatalf("accepted %d participants", len(parts))
		}
		seen := map[string]bool{}
		for i, p := range parts {
			for _, u := range []string{p.Prepare, p.Commit, p.Rollback} {
				if _, err := protocol.ValidateURL(u); err != nil {
					t.Fatalf("participant %d: %v", i, err)
				}
			}
			if seen[p.Prepare] {
				t.Fatalf("duplicate prepare URL %q accepted", p.Prepare)
			}
			seen[p.Prepare] = true
		}
	})
}

// FuzzPostHandler runs bodies and keys through the whole POST handler (case C09: fuzz the
// handler): it never panics and answers 200 exactly when the Submitter was called, else
// 400 with the JSON error shape.
func FuzzPostHandler(f *testing.F) {
	for _, b := range seedBodies() {
		f.Add(b, "")
	}
	f.Add(threeServices, "order-1")
	f.Add(threeServices, "order 1")
	f.Fuzz(func(t *testing.T, body, key string) {
		e := newEnv(t, Config{})
		req := []string{}
		if key != "" {
			req = []string{participant.IdempotencyKeyHeader, key}
		}
		rec := e.post(body, req...)
		calls := len(e.sub.Calls())
		switch rec.Code {
		case http.StatusOK:
			if calls != 1 {
				t.Fatalf("200 with %d submits", calls)
			}
			var o Outcome
			if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil || o.Status != "committed" {
				t.Fatalf("answer %s", rec.Body)
			}
		case http.StatusBadRequest:
			if calls != 0 {
				t.Fatalf("400 after %d submits", calls)
			}
			checkRec(t, rec, http.StatusBadRequest, codeBadRequest)
		default:
			// Header values the client library would refuse (e.g. with a newline) never
			// reach a real server; httptest passes them through.
			if strings.ContainsAny(key, "\r\n") {
				return
			}
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	s := fuzzServer()
	body := []byte(`{"services":["http://flight.example/v1/prepare",{"prepare":"http://hotel.example/p","commit":"http://hotel.example/c","rollback":"http://hotel.example/r"},"https://pay.example/tx/prepare?tenant=7"],"timeout":1000}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, aerr := s.parseRequest(body); aerr != nil {
			b.Fatal(aerr)
		}
	}
}
