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

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
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
	return sendKeyed(t, base, services, timeoutMs, "")
}

// sendKeyed posts a transaction with an Idempotency-Key (none when key is "").
func sendKeyed(t *testing.T, base string, services []string, timeoutMs int, key string) outcome {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/transactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(participant.IdempotencyKeyHeader, key)
	}
	resp, err := http.DefaultClient.Do(req)
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
	// On a loaded machine an election may follow WaitLeader: the page must name whichever
	// node leads now, consistently in the summary, the members table and the top bar.
	b.wait("the members table shows 3 nodes, one leader, named in the summary", fmt.Sprintf(`(() => {
		const rows = document.querySelectorAll("#members-body tr");
		const leaders = [...document.querySelectorAll("#members-body tr .role.r-leader")];
		const self = document.getElementById("node-id").textContent;
		const selfRole = document.querySelector("#members-body tr[data-key=" + JSON.stringify(self) + "] .role");
		return rows.length === 3 && leaders.length === 1 &&
			leaders[0].closest("tr").dataset.key === document.getElementById("sum-leader").textContent &&
			self === %s && !!selfRole && selfRole.textContent === document.getElementById("node-role").textContent;
	})()`, js(followerID)))
	if err := c.Eventually(20*time.Second, func() error {
		got := b.eval(`document.getElementById("sum-leader").textContent`)
		if l := c.Leader(); l < 0 || got != c.Node(l).Node.ID() {
			return fmt.Errorf("the page names leader %q; the cluster's is node %d (first %s)", got, l, leaderID)
		}
		return nil
	}); err != nil {
		b.fail("the page names the cluster's leader", err)
	}

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

	// An idempotency key, and enough transactions for two pages of ten: 17 in all.
	keyed := sendKeyed(t, base, urls, 2000, "order-4711")
	if keyed.Status != "committed" {
		t.Fatalf("keyed transaction: %+v, want committed", keyed)
	}
	for i := 0; i < 11; i++ {
		if o := send(t, base, urls[:2], 2000); o.Status != "committed" {
			t.Fatalf("transaction %d: %+v, want committed", i, o)
		}
	}
	all := listAll(t, c, base, 17)

	checkCharts(t, b, all)
	b.screenshot("charts")

	// Search by id, by key, by participant host and by participant URL.
	search := func(by, text string) {
		b.t.Helper()
		b.do("searching by "+by+" for "+text,
			chromedp.SetValue(chromedp.ID("search-by"), by),
			chromedp.SetValue(chromedp.ID("search-text"), text),
			chromedp.Click(chromedp.ID("search-submit")))
	}
	found := func(what string, ids ...string) {
		b.t.Helper()
		b.wait(what, fmt.Sprintf(`(() => {
			const got = [...document.querySelectorAll("#history-body tr")].map((r) => r.dataset.key);
			return !document.getElementById("history-table").hidden && JSON.stringify(got) === %s &&
				document.getElementById("search-error").hidden;
		})()`, js(jsonOf(ids))))
	}
	search("id", failedA.TransactionID)
	found("the search by id finds the failed transaction", failedA.TransactionID)
	b.wait("the result says so", fmt.Sprintf(`document.getElementById("search-result").textContent.includes("Transaction " + %s + " found") &&
		document.querySelector("#history-body tr .badge").dataset.status === "failed"`, js(failedA.TransactionID)))
	search("id", "no-such-transaction")
	b.wait("the search by an unknown id finds nothing", `document.getElementById("history-table").hidden &&
		document.getElementById("search-result").textContent.includes("No transaction with id")`)
	search("key", "order-4711")
	found("the search by idempotency key finds its transaction", keyed.TransactionID)
	b.wait("the key is shown", `document.querySelector("#history-body tr").innerText.includes("order-4711")`)
	flakyHost := strings.TrimPrefix(fs.URL, "http://")
	search("participant", flakyHost) // newest first
	found("the search by participant host finds its two transactions", failedB.TransactionID, failedA.TransactionID)
	search("participant", heldURL)
	found("the search by participant URL finds its transaction", held.TransactionID)

	// Paging through the whole history, ten per page, newest first: exactly the API's order.
	b.do("listing everything, ten per page",
		chromedp.Click(chromedp.ID("search-clear")),
		chromedp.SetValue(chromedp.ID("search-limit"), "10"),
		chromedp.Click(chromedp.ID("search-submit")))
	ids := make([]string, len(all))
	for i, v := range all {
		ids[i] = v.TransactionID
	}
	found("page 1 shows the 10 newest", ids[:10]...)
	b.wait("page 1 can go older, not newer", `document.getElementById("page-info").dataset.page === "1" &&
		document.getElementById("page-prev").disabled && !document.getElementById("page-next").disabled &&
		document.getElementById("page-next").textContent.includes("Older")`)
	b.do("going to the older page", chromedp.Click(chromedp.ID("page-next")))
	found("page 2 shows the 7 oldest", ids[10:]...)
	b.wait("page 2 is the last", `document.getElementById("page-info").dataset.page === "2" &&
		!document.getElementById("page-prev").disabled && document.getElementById("page-next").disabled &&
		document.getElementById("search-result").textContent.includes("7 transactions; no more")`)
	b.screenshot("history-page-2")
	b.do("going back to the newer page", chromedp.Click(chromedp.ID("page-prev")))
	found("page 1 again", ids[:10]...)
	b.do("listing oldest first", chromedp.SetValue(chromedp.ID("search-order"), "asc"), chromedp.Click(chromedp.ID("search-submit")))
	found("oldest first, page 1", reversed(ids)[:10]...)

	// A result opens the detail: the failed transaction's timeline shows phase two giving up.
	search("id", failedA.TransactionID)
	found("the failed transaction again", failedA.TransactionID)
	b.do("opening it from the result", chromedp.Click(chromedp.CSS("#history-body .txn-link")))
	b.wait("its timeline shows the HTTP 500 and the failure", `document.getElementById("txn-dialog").open && (() => {
		const tl = document.getElementById("txn-timeline");
		if (!tl) return false;
		const bad = [...tl.querySelectorAll('li[data-kind="phase-two"].bad')];
		return bad.length === 1 && bad[0].innerText.includes("HTTP 500") && bad[0].innerText.includes("3 attempts") &&
			bad[0].innerText.includes("not acknowledged") && !!tl.querySelector('li[data-kind="failed"][data-t]') &&
			!tl.querySelector('li[data-kind="finished"]');
	})()`)
	b.do("closing the detail dialog", chromedp.Click(chromedp.ID("txn-close")))
	b.wait("the detail dialog is closed", `!document.getElementById("txn-dialog").open`)

	// The detail dialog of a transaction lists its participants.
	b.do("opening a transaction", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#recent-body tr[data-key=%s] .txn-link`, js(ok.TransactionID)))))
	b.wait("the detail dialog shows 3 participants", `document.getElementById("txn-dialog").open &&
		document.querySelectorAll("#txn-body tbody tr").length === 3`)
	checkDetail(t, b, "committed", "commit", "ACK", "")
	checkTimeline(t, b, get(t, base, ok.TransactionID))
	b.do("closing the detail dialog", chromedp.Click(chromedp.ID("txn-close")))
	b.wait("the detail dialog is closed", `!document.getElementById("txn-dialog").open`)
	b.do("opening the rolled-back transaction", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#recent-body tr[data-key=%s] .txn-link`, js(nack.TransactionID)))))
	b.wait("the detail dialog shows the rolled-back transaction", `document.getElementById("txn-dialog").open &&
		document.querySelectorAll("#txn-body tbody tr").length === 3 && document.getElementById("txn-body").innerText.includes("abort")`)
	checkDetail(t, b, "rolled_back", "abort", "NACK", "NACK")
	checkTimeline(t, b, get(t, base, nack.TransactionID))
	b.screenshot("detail-rolled-back")
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
	// The search for an unknown id is a 404 the browser logs as a failed load; anything
	// else is a fault.
	var errs []string
	for _, e := range b.errors() {
		if !(strings.Contains(e, "status of 404") && strings.Contains(e, "no-such-transaction")) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
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

// view is the part of GET /v1/transactions/{id} the checks below compare with the page.
type view struct {
	TransactionID string `json:"transactionId"`
	Status        string `json:"status"`
	Decision      string `json:"decision"`
	CreatedAt     string `json:"createdAt"`
	DecidedAt     string `json:"decidedAt"`
	FinishedAt    string `json:"finishedAt"`
	Participants  []struct {
		Prepare      string `json:"prepare"`
		Vote         string `json:"vote"`
		Reason       string `json:"reason"`
		Acknowledged bool   `json:"acknowledged"`
		Attempts     int    `json:"attempts"`
	} `json:"participants"`
}

func ms(t *testing.T, iso string) int64 {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, iso)
	if err != nil {
		t.Fatalf("time %q: %v", iso, err)
	}
	return v.UnixMilli()
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func get(t *testing.T, base, id string) view {
	t.Helper()
	var v view
	getJSON(t, base+"/v1/transactions/"+id, &v)
	return v
}

// listAll returns every transaction, newest first, once there are n and each has its
// finish time (a leader serves a settled outcome before its completion entry).
func listAll(t *testing.T, c *servertest.Cluster, base string, n int) []view {
	t.Helper()
	var all []view
	err := c.Eventually(10*time.Second, func() error {
		var page struct{ Transactions []view }
		getJSON(t, base+"/v1/transactions?limit=1000", &page)
		all = page.Transactions
		if len(all) != n {
			return fmt.Errorf("%d transactions, want %d", len(all), n)
		}
		for _, v := range all {
			if v.FinishedAt == "" {
				return fmt.Errorf("%s is %s without a finish time", v.TransactionID, v.Status)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// checkCharts waits until the outcome chart counts what the cluster holds (per status, in
// its bars), then checks the bars stack within the y axis, the axis labels, and that the
// latency chart's slowest point is the slowest transaction and its median points are the
// buckets' medians as far as the totals go.
func checkCharts(t *testing.T, b *browser, all []view) {
	t.Helper()
	want := map[string]int{}
	var slowest int64
	finished := 0
	for _, v := range all {
		want[v.Status]++
		if v.Status == "committed" || v.Status == "rolled_back" {
			finished++
			slowest = max(slowest, ms(t, v.FinishedAt)-ms(t, v.CreatedAt))
		}
	}
	b.wait(fmt.Sprintf("the outcome chart counts %v", want), fmt.Sprintf(`(() => {
		const sum = (k) => [...document.querySelectorAll('#chart-outcomes-svg rect.bar[data-status="' + k + '"]')].reduce((a, r) => a + Number(r.dataset.count), 0);
		return sum("committed") === %d && sum("rolled_back") === %d && sum("failed") === %d;
	})()`, want["committed"], want["rolled_back"], want["failed"]))
	raw := b.eval(`JSON.stringify((() => {
		const q = (sel) => [...document.querySelectorAll(sel)];
		const plot = document.querySelector("#chart-outcomes-svg svg");
		const bars = q("#chart-outcomes-svg rect.bar");
		const byT = {};
		for (const r of bars) byT[r.dataset.t] = (byT[r.dataset.t] || 0) + Number(r.dataset.count);
		return {
			html: document.getElementById("charts").innerHTML,
			viewBox: plot ? plot.getAttribute("viewBox") : "",
			bars: bars.length, bucketMax: Math.max(0, ...Object.values(byT)),
			barsInside: bars.every((r) => Number(r.getAttribute("height")) > 0 && Number(r.getAttribute("y")) >= 0),
			titles: bars.map((r) => r.querySelector("title") ? r.querySelector("title").textContent : ""),
			outY: q("#chart-outcomes-svg text[data-axis=y]").map((e) => e.textContent),
			outYTop: Math.max(...q("#chart-outcomes-svg text[data-axis=y]").map((e) => Number(e.dataset.value))),
			outX: q("#chart-outcomes-svg text[data-axis=x]").map((e) => e.textContent),
			outSum: document.getElementById("chart-outcomes-sum").textContent,
			maxPts: q("#chart-latency-svg circle.pt-max").map((c) => Number(c.dataset.ms)),
			medPts: q("#chart-latency-svg circle.pt-median").map((c) => Number(c.dataset.ms)),
			lines: q("#chart-latency-svg path.line").map((p) => p.dataset.series + ":" + p.getAttribute("d").split(/[ML]/).filter((s) => s.trim()).length),
			latY: q("#chart-latency-svg text[data-axis=y]").map((e) => e.textContent),
			latYTop: Math.max(...q("#chart-latency-svg text[data-axis=y]").map((e) => Number(e.dataset.value))),
			latSum: document.getElementById("chart-latency-sum").textContent,
		};
	})())`)
	var d struct {
		HTML, ViewBox      string
		Bars, BucketMax    int
		BarsInside         bool
		Titles, OutY, OutX []string
		OutYTop, LatYTop   float64
		OutSum, LatSum     string
		MaxPts, MedPts     []int64
		Lines, LatY        []string
	}
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("charts: %v: %s", err, raw)
	}
	if strings.Contains(d.HTML, "NaN") || strings.Contains(d.HTML, "undefined") || d.ViewBox != "0 0 640 190" {
		t.Errorf("charts: viewBox %q, markup with NaN or undefined:\n%s", d.ViewBox, d.HTML)
	}
	if d.Bars < 3 || !d.BarsInside || d.BucketMax < 1 || d.OutYTop < float64(d.BucketMax) {
		t.Errorf("outcome bars: %d bars, inside %v, fullest bucket %d, y axis up to %v", d.Bars, d.BarsInside, d.BucketMax, d.OutYTop)
	}
	for _, tt := range d.Titles {
		if !strings.Contains(tt, "committed") && !strings.Contains(tt, "rolled back") && !strings.Contains(tt, "failed") {
			t.Errorf("outcome bar title %q names no outcome", tt)
		}
	}
	if len(d.OutY) < 2 || d.OutY[0] != "0" || strings.Join(d.OutX, "|") != "−5 min|−2.5 min|now" {
		t.Errorf("outcome axes: y %q, x %q", d.OutY, d.OutX)
	}
	if wantSum := fmt.Sprintf("%d committed, %d rolled back, %d failed in the last 5 min", want["committed"], want["rolled_back"], want["failed"]); !strings.HasPrefix(d.OutSum, wantSum) {
		t.Errorf("outcome summary %q, want %q…", d.OutSum, wantSum)
	}
	top := int64(0)
	for _, v := range d.MaxPts {
		top = max(top, v)
	}
	if len(d.MaxPts) == 0 || len(d.MaxPts) != len(d.MedPts) || top != slowest {
		t.Errorf("latency points: slowest %v, median %v; want the slowest to be %d ms", d.MaxPts, d.MedPts, slowest)
	}
	for i := range d.MedPts {
		if d.MedPts[i] < 0 || d.MedPts[i] > d.MaxPts[i] {
			t.Errorf("latency bucket %d: median %d ms above its slowest %d ms", i, d.MedPts[i], d.MaxPts[i])
		}
	}
	if len(d.Lines) != 3 || d.LatYTop < float64(slowest) || len(d.LatY) < 2 || d.LatY[0] != "0 ms" {
		t.Errorf("latency chart: lines %q, y labels %q (top %v), slowest %d ms", d.Lines, d.LatY, d.LatYTop, slowest)
	}
	if wantSum := fmt.Sprintf("%d finished: median ", finished); !strings.HasPrefix(d.LatSum, wantSum) {
		t.Errorf("latency summary %q, want %q…", d.LatSum, wantSum)
	}
}

// checkTimeline asserts the open detail's timeline against the transaction's record: the
// created, decided and finished entries with their times (in that order), one vote per
// participant at the decision with its vote, the NACK reason where one was given, and one
// phase-two entry per participant, acknowledged.
func checkTimeline(t *testing.T, b *browser, v view) {
	t.Helper()
	raw := b.eval(`JSON.stringify([...document.querySelectorAll("#txn-timeline li")].map((li) => ({
		kind: li.dataset.kind, t: li.dataset.t ? Number(li.dataset.t) : 0, vote: li.dataset.vote || "",
		p: li.dataset.participant === undefined ? -1 : Number(li.dataset.participant), text: li.innerText,
	})))`)
	var items []struct {
		Kind, Vote, Text string
		T                int64
		P                int
	}
	if err := json.Unmarshal([]byte(raw), &items); err != nil {
		t.Fatalf("timeline: %v: %s", err, raw)
	}
	at := map[string]int64{}
	var kinds []string
	votes, acks := 0, 0
	for _, it := range items {
		kinds = append(kinds, it.Kind)
		switch it.Kind {
		case "created", "decided", "finished":
			at[it.Kind] = it.T
		case "vote":
			votes++
			p := v.Participants[it.P]
			wantVote := p.Vote
			if wantVote == "" {
				wantVote = "none"
			}
			if it.Vote != wantVote || it.T != ms(t, v.DecidedAt) || !strings.Contains(it.Text, "by ") {
				t.Errorf("timeline vote of %s: %q (vote %q at %d), want %s at the decision %d", p.Prepare, it.Text, it.Vote, it.T, wantVote, ms(t, v.DecidedAt))
			}
			if p.Reason != "" && !strings.Contains(it.Text, p.Reason) {
				t.Errorf("timeline vote of %s: %q lacks the reason %q", p.Prepare, it.Text, p.Reason)
			}
			if p.Vote == "NACK" && !strings.Contains(it.Text, "Voted NACK") {
				t.Errorf("timeline vote of %s: %q, want it to say NACK", p.Prepare, it.Text)
			}
		case "phase-two":
			if strings.Contains(it.Text, "acknowledged by") && !strings.Contains(it.Text, "not acknowledged") {
				acks++
			}
		}
	}
	if at["created"] != ms(t, v.CreatedAt) || at["decided"] != ms(t, v.DecidedAt) || at["finished"] != ms(t, v.FinishedAt) ||
		!(at["created"] <= at["decided"] && at["decided"] <= at["finished"]) {
		t.Errorf("timeline times %v, want created %s, decided %s, finished %s", at, v.CreatedAt, v.DecidedAt, v.FinishedAt)
	}
	n := len(v.Participants)
	if votes != n || acks != n || len(kinds) == 0 || kinds[0] != "created" || kinds[len(kinds)-1] != "finished" {
		t.Errorf("timeline %q: %d votes and %d acknowledgements, want %d each, from created to finished", kinds, votes, acks, n)
	}
	if v.Status == "rolled_back" {
		nacked := false
		for _, p := range v.Participants {
			nacked = nacked || (p.Vote == "NACK" && p.Reason != "")
		}
		if !nacked {
			t.Errorf("rolled-back transaction %s has no NACK with a reason in its record: %+v", v.TransactionID, v.Participants)
		}
		if !strings.Contains(items[len(items)-1].Text, "Rolled back") {
			t.Errorf("timeline ends with %q, want Rolled back", items[len(items)-1].Text)
		}
	}
}
