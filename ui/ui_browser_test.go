package ui_test

// The page in a real browser: headless Chromium, driven over the DevTools protocol by
// chromedp, against an in-process 3-node cluster with demo participants.
//
//	apt-get install -y chromium
//	TXCOORD_BROWSER=1 go test -run Browser -v ./ui/
//
// The test skips unless TXCOORD_BROWSER=1 and a Chromium binary is found (TXCOORD_CHROMIUM,
// or chromium, chromium-browser, google-chrome or headless-shell on PATH), so `make test`
// passes where no browser is installed. Screenshots go to a temp dir (kept, and logged) or
// to TXCOORD_UI_SCREENSHOTS; TXCOORD_UI_DOCS=path also writes the first one there (that is
// how docs/ui.png is made). TXCOORD_UI_COLOR_SCHEME=dark shoots the dark theme.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/demo"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// chromium returns the browser to drive, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("TXCOORD_BROWSER") == "" {
		t.Skip("browser test: set TXCOORD_BROWSER=1 (and install chromium) to run it")
	}
	if testing.Short() {
		t.Skip("browser test: skipped in -short mode")
	}
	if p := os.Getenv("TXCOORD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("browser test: no Chromium found (apt-get install -y chromium, or set TXCOORD_CHROMIUM)")
	return ""
}

// failingCommit ACKs prepare and rollback and answers commit with HTTP 500 until healed.
type failingCommit struct{ healed atomic.Bool }

func (f *failingCommit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/commit") && !f.healed.Load() {
		http.Error(w, "ledger offline", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"ACK"}`)
}

type outcome struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
}

func send(t *testing.T, base string, services []string, timeoutMs int) outcome {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
	resp, err := http.Post(base+"/v1/transactions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return outcome{}
	}
	defer resp.Body.Close()
	var out outcome
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Errorf("POST /v1/transactions: %v", err)
	}
	return out
}

func demoService(t *testing.T, kind, dir string, gate func(context.Context, participant.Phase, string)) (*demo.Service, string) {
	t.Helper()
	svc, err := demo.New(demo.Config{Kind: kind, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Exit: func(int) {}, Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(svc.Handler())
	t.Cleanup(func() { ts.Close(); _ = svc.Close() })
	return svc, ts.URL + "/prepare"
}

// browser is one headless Chromium tab and what the page reported while the test ran.
type browser struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	mu   sync.Mutex
	errs []string // uncaught exceptions, console.error calls, CSP violations, failed loads
	n    int      // screenshots taken
}

func newBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // root in containers and CI
		chromedp.WindowSize(1366, 900),
		chromedp.Flag("lang", "en-US"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	if b.dir = os.Getenv("TXCOORD_UI_SCREENSHOTS"); b.dir != "" {
		if err := os.MkdirAll(b.dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		var err error
		if b.dir, err = os.MkdirTemp("", "txcoord-ui-"); err != nil {
			t.Fatal(err)
		}
	}
	scheme := os.Getenv("TXCOORD_UI_COLOR_SCHEME") // light (default) or dark
	if scheme == "" {
		scheme = "light"
	}
	// The first call starts the browser; it must not run under a timeout (chromedp.Run).
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-reduced-motion", Value: "reduce"}, {Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return b
}

func (b *browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console.error: " + strings.Join(parts, " ")
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			msg = fmt.Sprintf("log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	}
	if msg != "" {
		b.mu.Lock()
		b.errs = append(b.errs, msg)
		b.mu.Unlock()
	}
}

// errors returns what the page reported so far and forgets it.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.errs
	b.errs = nil
	return out
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// wait polls a JavaScript condition in the page until it holds (the page refreshes itself
// every 1.5 s, so 20 s is many refreshes).
func (b *browser) wait(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 25*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		b.fail("waiting until "+what, err)
	}
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.fail("evaluating "+expr, err)
	}
	return s
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	path := b.screenshot("failure")
	text := b.evalQuiet(`document.querySelector("main") ? document.querySelector("main").innerText : document.documentElement.outerHTML`)
	b.t.Fatalf("%s: %v\npage errors: %q\nscreenshot: %s\npage text:\n%s", what, err, b.errors(), path, text)
}

func (b *browser) evalQuiet(expr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	return s
}

// screenshot saves the whole page as a PNG and returns its path.
func (b *browser) screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.n++
	path := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// TestBrowserOperationsPage loads the page from a follower of a 3-node cluster and checks
// what an operator sees and does: the members and the leader, a committed and a rolled back
// transaction among the recent outcomes, one held in phase one among those in flight, two
// failed ones in the stuck list with their HTTP 500 and attempt counts, then retry (the
// failed one commits) and resolve (refused without a note, then committed with it), each
// seen on the page and in the cluster's state. The page must report no script error.
func TestBrowserOperationsPage(t *testing.T) {
	bin := chromium(t)

	dir := t.TempDir()
	var urls []string
	svcs := map[string]*demo.Service{}
	for _, k := range []string{demo.KindFlight, demo.KindHotel, demo.KindPayment} {
		svc, u := demoService(t, k, dir, nil)
		svcs[k] = svc
		urls = append(urls, u)
	}
	// A hotel that holds every prepare until released: its transactions stay in flight.
	release := make(chan struct{})
	var releaseOnce sync.Once
	_, heldURL := demoService(t, demo.KindHotel, t.TempDir(), func(ctx context.Context, p participant.Phase, _ string) {
		if p == participant.PhasePrepare {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	})
	flaky := &failingCommit{}
	fs := httptest.NewServer(flaky)
	t.Cleanup(fs.Close)

	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		cfg.Engine.PhaseTwoMaxAttempts = 3
		cfg.Engine.RetryInitial = 5 * time.Millisecond
		cfg.Engine.RetryMax = 10 * time.Millisecond
	}})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the cluster stops
	leader := c.WaitLeader(10 * time.Second)
	follower := c.Follower()
	base := c.Node(follower).URL()
	leaderID := c.Node(leader).Node.ID()
	followerID := c.Node(follower).Node.ID()

	b := newBrowser(t, bin)

	// GET / redirects to the page; the members table shows three nodes and the leader.
	b.do("loading "+base+"/", chromedp.Navigate(base+"/"))
	if u := b.eval(`location.pathname`); u != "/ui/" {
		t.Fatalf("GET / landed on %q, want /ui/", u)
	}
	b.wait("the members table shows 3 nodes and the leader", fmt.Sprintf(`(() => {
		const rows = document.querySelectorAll("#members-body tr");
		const leader = document.querySelector("#members-body tr[data-key=" + %s + "] .role");
		return rows.length === 3 && leader && leader.textContent === "leader" &&
			document.getElementById("node-id").textContent === %s &&
			document.getElementById("node-role").textContent === "follower" &&
			document.getElementById("sum-leader").textContent === %s;
	})()`, js(js(leaderID)), js(followerID), js(leaderID)))

	// A transaction sent through the follower appears as committed.
	ok := send(t, base, urls, 2000)
	if ok.Status != "committed" {
		t.Fatalf("first transaction: %+v, want committed", ok)
	}
	row := func(section, id string) string {
		return fmt.Sprintf(`document.querySelector("#%s tr[data-key=" + %s + "]")`, section, js(js(id)))
	}
	b.wait("the committed transaction is among the recent outcomes", fmt.Sprintf(
		`(() => { const r = %s; return !!r && r.querySelector(".badge").dataset.status === "committed"; })()`, row("recent-body", ok.TransactionID)))

	// One a participant refuses: rolled back, with the NACK as its reason.
	_ = svcs[demo.KindPayment].SetFaults(demo.Faults{NackRate: 1})
	nack := send(t, base, urls, 2000)
	_ = svcs[demo.KindPayment].SetFaults(demo.Faults{})
	if nack.Status != "rolled_back" {
		t.Fatalf("NACK transaction: %+v, want rolled_back", nack)
	}
	b.wait("the rolled back transaction shows its NACK", fmt.Sprintf(
		`(() => { const r = %s; return !!r && r.querySelector(".badge").dataset.status === "rolled_back" && r.innerText.includes("NACK"); })()`,
		row("recent-body", nack.TransactionID)))

	// One held in phase one: in flight, as preparing.
	heldDone := make(chan outcome, 1)
	go func() { heldDone <- send(t, base, []string{urls[0], heldURL}, 60000) }()
	b.wait("a transaction in flight, preparing", `(() => {
		const rows = document.querySelectorAll("#inflight-body tr");
		return rows.length === 1 && rows[0].querySelector(".badge").dataset.status === "preparing" &&
			document.getElementById("sum-inflight").textContent === "1";
	})()`)

	// Two whose participant answers commit with HTTP 500: failed, in the stuck list.
	failedA := send(t, base, []string{urls[1], fs.URL + "/ledger/prepare"}, 2000)
	failedB := send(t, base, []string{fs.URL + "/ledger/prepare"}, 2000)
	if failedA.Status != "failed" || failedB.Status != "failed" {
		t.Fatalf("transactions with a failing commit: %+v, %+v; want failed", failedA, failedB)
	}
	card := func(id string) string {
		return fmt.Sprintf(`document.querySelector("#stuck-list article[data-key=" + %s + "]")`, js(js(id)))
	}
	for _, id := range []string{failedA.TransactionID, failedB.TransactionID} {
		b.wait("failed transaction "+id+" is stuck, with its HTTP 500 and 3 attempts", fmt.Sprintf(`(() => {
			const c = %s;
			return !!c && c.querySelector(".badge").dataset.status === "failed" &&
				c.querySelector("[data-attempts]").dataset.attempts === "3" &&
				c.innerText.includes("HTTP 500") &&
				!!c.querySelector("button[data-action=retry]") && !!c.querySelector("button[data-action=resolve]");
		})()`, card(id)))
	}
	b.wait("the summary counts 2 stuck", `document.getElementById("sum-stuck").textContent === "2" &&
		document.getElementById("tile-stuck").classList.contains("active")`)
	b.screenshot("overview")
	if docs := os.Getenv("TXCOORD_UI_DOCS"); docs != "" {
		shot := filepath.Join(b.dir, fmt.Sprintf("%02d-overview.png", b.n))
		if data, err := os.ReadFile(shot); err == nil {
			if err := os.WriteFile(docs, data, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("docs screenshot: %s", docs)
		}
	}

	// The held transaction, released, commits and leaves the in-flight list.
	releaseOnce.Do(func() { close(release) })
	held := <-heldDone
	if held.Status != "committed" {
		t.Fatalf("held transaction: %+v, want committed", held)
	}
	b.wait("the released transaction moves from in flight to committed", fmt.Sprintf(`(() => {
		const r = %s;
		return document.querySelectorAll("#inflight-body tr").length === 0 && !document.getElementById("inflight-empty").hidden &&
			!!r && r.querySelector(".badge").dataset.status === "committed";
	})()`, row("recent-body", held.TransactionID)))

	// The detail dialog of a transaction lists its participants.
	b.do("opening a transaction", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#recent-body tr[data-key=%s] .txn-link`, js(ok.TransactionID)))))
	b.wait("the detail dialog shows 3 participants", `document.getElementById("txn-dialog").open &&
		document.querySelectorAll("#txn-body tbody tr").length === 3`)
	checkDetail(t, b, "committed", "commit", "ACK", "")
	b.do("closing the detail dialog", chromedp.Click(chromedp.ID("txn-close")))
	b.wait("the detail dialog is closed", `!document.getElementById("txn-dialog").open`)
	b.do("opening the rolled-back transaction", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#recent-body tr[data-key=%s] .txn-link`, js(nack.TransactionID)))))
	b.wait("the detail dialog shows the rolled-back transaction", `document.getElementById("txn-dialog").open &&
		document.querySelectorAll("#txn-body tbody tr").length === 3 && document.getElementById("txn-body").innerText.includes("abort")`)
	checkDetail(t, b, "rolled_back", "abort", "NACK", "NACK")
	b.do("closing the detail dialog", chromedp.Click(chromedp.ID("txn-close")))
	b.wait("the detail dialog is closed", `!document.getElementById("txn-dialog").open`)

	// Retry: the participant is healed, the operator retries from the page, the transaction
	// commits and leaves the stuck list, with the note in the log on every node.
	flaky.healed.Store(true)
	b.do("clicking Retry now",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#stuck-list article[data-key=%s] button[data-action=retry]`, js(failedA.TransactionID)))))
	b.wait("the retry dialog is open", `document.getElementById("action-dialog").open &&
		document.activeElement === document.getElementById("action-note")`)
	b.do("confirming the retry",
		chromedp.SendKeys(chromedp.ID("action-note"), "ledger back online"),
		chromedp.Click(chromedp.ID("action-submit")))
	b.wait("the retried transaction leaves the stuck list and shows as committed", fmt.Sprintf(`(() => {
		const r = %s;
		return !document.getElementById("action-dialog").open && !%s &&
			!!r && r.querySelector(".badge").dataset.status === "committed" && r.innerText.includes("ledger back online") &&
			document.getElementById("toast").textContent.includes("Retry accepted");
	})()`, row("recent-body", failedA.TransactionID), card(failedA.TransactionID)))

	// Resolve: refused on the page without a note, then accepted with one.
	b.do("clicking Resolve",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#stuck-list article[data-key=%s] button[data-action=resolve]`, js(failedB.TransactionID)))))
	b.wait("the resolve dialog is open", `document.getElementById("action-dialog").open`)
	b.do("confirming the resolve without a note", chromedp.Click(chromedp.ID("action-submit")))
	b.wait("the dialog asks for a note", `(() => {
		const e = document.getElementById("action-error");
		return document.getElementById("action-dialog").open && !e.hidden && e.textContent.includes("note is required") &&
			document.getElementById("action-note").getAttribute("aria-invalid") === "true";
	})()`)
	if txn, _ := c.Node(leader).Node.FSM.Get(failedB.TransactionID); txn.Status.String() != "failed" {
		t.Fatalf("after a resolve without a note the transaction is %s, want still failed", txn.Status)
	}
	b.screenshot("resolve-dialog")
	note := "committed by hand in the ledger, ticket OPS-7"
	b.do("confirming the resolve with a note",
		chromedp.SendKeys(chromedp.ID("action-note"), note),
		chromedp.Click(chromedp.ID("action-submit")))
	b.wait("the resolved transaction leaves the stuck list and shows as committed with its note", fmt.Sprintf(`(() => {
		const r = %s;
		return !document.getElementById("action-dialog").open && !%s && !document.getElementById("stuck-empty").hidden &&
			document.getElementById("sum-stuck").textContent === "0" &&
			!!r && r.querySelector(".badge").dataset.status === "committed" && r.innerText.includes(%s);
	})()`, row("recent-body", failedB.TransactionID), card(failedB.TransactionID), js(note)))
	b.screenshot("after-actions")

	c.WaitConverged(10 * time.Second)
	for i := 0; i < c.Len(); i++ {
		for id, want := range map[string]string{failedA.TransactionID: "ledger back online", failedB.TransactionID: note} {
			txn, found := c.Node(i).Node.FSM.Get(id)
			if !found || txn.Status.String() != "committed" || txn.Note != want {
				t.Fatalf("node %d holds %+v for %s, want committed with note %q", i, txn, id, want)
			}
		}
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("screenshots in %s", b.dir)
}

// checkDetail asserts what the open detail dialog shows: the status badge, the decision,
// every participant's vote (want among them), phase two acknowledged by each with its
// attempts, the created, decided and finished times, and, when errWant is set, an error
// line containing it; and nothing rendered as "[object ...]".
func checkDetail(t *testing.T, b *browser, status, decision, vote, errWant string) {
	t.Helper()
	raw := b.eval(`JSON.stringify((() => {
		const body = document.getElementById("txn-body");
		const row = (k) => { const dt = body.querySelector('dt[data-row="' + k + '"]'); return dt ? dt.nextElementSibling.innerText : null; };
		const badge = body.querySelector("dd .badge");
		return {
			text: body.innerText,
			status: badge ? badge.dataset.status : "",
			decision: row("Decision"), created: row("Created"), decided: row("Decided"), finished: row("Finished"),
			rows: [...body.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((td) => td.innerText)),
			errors: [...body.querySelectorAll(".txn-errors li")].map((li) => li.innerText),
		};
	})())`)
	var d struct {
		Text, Status, Decision, Created, Decided, Finished string
		Rows                                               [][]string
		Errors                                             []string
	}
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("detail: %v: %s", err, raw)
	}
	if strings.Contains(d.Text, "[object") {
		t.Errorf("the detail shows an unrendered object: %q", d.Text)
	}
	if d.Status != status || d.Decision != decision {
		t.Errorf("detail status %q decision %q, want %q %q", d.Status, d.Decision, status, decision)
	}
	for name, v := range map[string]string{"Created": d.Created, "Decided": d.Decided, "Finished": d.Finished} {
		if v == "" || v == "–" {
			t.Errorf("detail %s = %q, want a time", name, v)
		}
	}
	sawVote := false
	for i, r := range d.Rows {
		// Prepare, Commit, Rollback, Vote, Phase two, Attempts, Last error or reason.
		if len(r) != 7 || !strings.HasPrefix(r[0], "http") || r[3] == "" || r[4] != "acknowledged" || r[5] == "" || r[5] == "0" {
			t.Errorf("participant row %d = %q", i, r)
			continue
		}
		sawVote = sawVote || r[3] == vote
	}
	if !sawVote {
		t.Errorf("no participant with vote %s: %q", vote, d.Rows)
	}
	if errWant != "" && !strings.Contains(strings.Join(d.Errors, "\n"), errWant) {
		t.Errorf("errors %q, want one with %q", d.Errors, errWant)
	}
}
