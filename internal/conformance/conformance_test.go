package conformance_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/conformance"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

func run(t *testing.T, prepareURL string, opts ...func(*conformance.Config)) []conformance.Result {
	t.Helper()
	ep, err := participant.Derive(prepareURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cfg := conformance.Config{Endpoints: ep}
	for _, o := range opts {
		o(&cfg)
	}
	rs, err := conformance.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// failures returns the checks that did not pass, warnings included, by name.
func failures(rs []conformance.Result) map[string]string {
	out := map[string]string{}
	for _, r := range rs {
		if !r.Pass {
			out[r.Name] = r.Saw
		}
	}
	return out
}

// quickInquiry bounds the inquiry checks for participants that are known not to ask, so
// that their tests do not wait the default bound.
func quickInquiry(c *conformance.Config) { c.InquiryWithin = 300 * time.Millisecond }

// notInquiring checks what a participant that never asks gets: "inquires" not passed, a
// warning unless fast, and "inquiry-applied" skipped.
func notInquiring(t *testing.T, rs []conformance.Result, fast bool) {
	t.Helper()
	for _, r := range rs {
		switch r.Name {
		case "inquires":
			if r.Pass || r.Warning == fast || !strings.HasPrefix(r.Saw, conformance.NotInquiring) {
				t.Errorf("inquires: %+v; want not passed, warning=%v, saw %q", r, !fast, conformance.NotInquiring)
			}
		case "inquiry-applied":
			if !r.Skipped {
				t.Errorf("inquiry-applied: %+v, want skipped", r)
			}
		}
	}
}

// The demo services (built on the participant library) pass every check.
func TestDemoServicesPass(t *testing.T) {
	for _, kind := range []string{demo.KindFlight, demo.KindHotel, demo.KindPayment} {
		t.Run(kind, func(t *testing.T) {
			svc, err := demo.New(demo.Config{Kind: kind, DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			srv := httptest.NewServer(svc.Handler())
			defer srv.Close()
			rs := run(t, srv.URL+"/prepare")
			if len(failures(rs)) != 0 || len(rs) != 11 {
				t.Fatalf("failed or skipped: %v (%d checks, want 11)", failures(rs), len(rs))
			}
		})
	}
}

// The Python example in examples/ passes every check (skipped without python3).
func TestPythonExamplePasses(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	cmd := exec.Command(py, filepath.Join("..", "..", "examples", "python-participant", "participant.py"),
		"--listen", "127.0.0.1:0", "--state", filepath.Join(t.TempDir(), "seats.json"))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n') // "listening; prepare URL: http://..."
	if err != nil {
		t.Fatalf("reading the example's first line: %v", err)
	}
	i := strings.Index(line, "http://")
	if i < 0 {
		t.Fatalf("no URL in %q", line)
	}
	if rs := run(t, strings.TrimSpace(line[i:]), func(c *conformance.Config) { c.FastMode = true }); len(failures(rs)) != 0 || len(rs) != 11 {
		t.Fatalf("failed or skipped: %v", failures(rs))
	}
}

// forgetful is a participant that is right in everything but tombstones: a Rollback of a
// transaction it never prepared is ACKed and forgotten.
type forgetful struct {
	mu    sync.Mutex
	state map[string]string // "prepared", "committed", "rolled_back"
	tombs bool
}

func (f *forgetful) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req participant.Request
	_ = json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	defer f.mu.Unlock()
	st, known := f.state[req.TransactionID]
	reply := participant.Reply{Status: participant.ACK}
	switch path.Base(r.URL.Path) {
	case "prepare":
		if st == "rolled_back" {
			reply = participant.Reply{Status: participant.NACK, Reason: "rolled back"}
		} else {
			f.state[req.TransactionID] = "prepared"
		}
	case "commit":
		if !known || st == "rolled_back" {
			reply = participant.Reply{Status: participant.NACK, Reason: "never prepared"}
		} else {
			f.state[req.TransactionID] = "committed"
		}
	case "rollback":
		if known || f.tombs {
			f.state[req.TransactionID] = "rolled_back"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

// A participant that forgets its tombstones fails the tombstone check, and only that one;
// the same participant keeping them passes.
func TestForgottenTombstoneFails(t *testing.T) {
	bad := httptest.NewServer(&forgetful{state: map[string]string{}})
	defer bad.Close()
	rs := run(t, bad.URL+"/prepare", quickInquiry)
	notInquiring(t, rs, false)
	f := failures(rs)
	delete(f, "inquires")
	delete(f, "inquiry-applied")
	if _, ok := f["tombstone"]; !ok || len(f) != 1 {
		t.Fatalf("failures %v, want only tombstone (and the inquiry warning)", f)
	}
	if !strings.Contains(f["tombstone"], `"ACK"`) {
		t.Errorf("tombstone saw %q, want the ACK it got", f["tombstone"])
	}
	good := httptest.NewServer(&forgetful{state: map[string]string{}, tombs: true})
	defer good.Close()
	rs = run(t, good.URL+"/prepare", quickInquiry)
	notInquiring(t, rs, false)
	if !conformance.Passed(rs) {
		t.Fatalf("with tombstones: failures %v, want only the inquiry warning", failures(rs))
	}
	rs = run(t, good.URL+"/prepare", quickInquiry, func(c *conformance.Config) { c.FastMode = true })
	notInquiring(t, rs, true)
	if conformance.Passed(rs) {
		t.Fatalf("a participant that does not inquire passed with FastMode: %v", failures(rs))
	}
}

// A participant that ACKs a Commit it never prepared, and one that answers garbage.
func TestOtherViolations(t *testing.T) {
	yes := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ACK"}`))
	}))
	defer yes.Close()
	f := failures(run(t, yes.URL+"/prepare", quickInquiry))
	if _, ok := f["commit-unprepared"]; !ok {
		t.Errorf("always-ACK participant: failures %v, want commit-unprepared among them", f)
	}
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`<html>ok</html>`))
	}))
	defer html.Close()
	f = failures(run(t, html.URL+"/prepare", quickInquiry))
	if _, ok := f["reply-format"]; !ok {
		t.Errorf("HTML participant: failures %v, want reply-format", f)
	}
}
