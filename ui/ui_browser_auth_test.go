package ui_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestBrowserTokens runs the page against a cluster that requires bearer tokens: the page
// asks for one (and says when it is refused), reads the API with a client token, asks for
// the cluster token when an operator action is refused with 401, keeps both for the tab
// across a reload, and forgets them on request.
func TestBrowserTokens(t *testing.T) {
	bin := chromium(t)
	const clientTok, clusterTok = "client-token-0123456789", "cluster-token-0123456789"
	flaky := &failingCommit{}
	fs := httptest.NewServer(flaky)
	t.Cleanup(fs.Close)
	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		api, err := httpapi.NewTokenSet(clientTok)
		if err != nil {
			t.Error(err)
		}
		cl, err := httpapi.NewTokenSet(clusterTok)
		if err != nil {
			t.Error(err)
		}
		cfg.API.Auth = &httpapi.Auth{API: api, Cluster: cl}
		cfg.Engine.PhaseTwoMaxAttempts = 2
		cfg.Engine.RetryInitial = 5 * time.Millisecond
		cfg.Engine.RetryMax = 10 * time.Millisecond
	}})
	c.WaitLeader(10 * time.Second)
	base := c.Node(c.Follower()).URL()
	b := newBrowser(t, bin)

	b.do("loading the page", chromedp.Navigate(base+"/ui/"))
	b.wait("the page asks for a token", `!document.getElementById("signin").hidden &&
		document.activeElement.id === "signin-token" && document.getElementById("updated").textContent === "Token required"`)
	b.do("entering a wrong token",
		chromedp.SendKeys(chromedp.ID("signin-token"), "not-a-token-of-this-cluster"),
		chromedp.Click(chromedp.CSS("#signin-form button")))
	b.wait("the page says the token was refused", `!document.getElementById("signin").hidden &&
		document.getElementById("signin-error").textContent.includes("refused")`)
	b.do("entering the client token",
		chromedp.SendKeys(chromedp.ID("signin-token"), clientTok),
		chromedp.Click(chromedp.CSS("#signin-form button")))
	b.wait("the page shows the cluster", `document.getElementById("signin").hidden &&
		document.querySelectorAll("#members-body tr").length === 3 && !document.getElementById("signout").hidden`)

	// A failed transaction; retry with the client token is refused, the dialog asks for the
	// cluster token, and with it the retry goes through.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/transactions", strings.NewReader(`{"services":["`+fs.URL+`/ledger/prepare"],"timeout":2000}`))
	req.Header.Set("Authorization", "Bearer "+clientTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out outcome
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Status != "failed" {
		t.Fatalf("transaction with a failing commit: HTTP %d %+v, want failed", resp.StatusCode, out)
	}
	b.wait("the failed transaction is stuck", `document.querySelectorAll("#stuck-list article").length === 1`)
	flaky.healed.Store(true)
	b.do("clicking Retry now", chromedp.Click(chromedp.CSS("#stuck-list button[data-action=retry]")))
	b.wait("the retry dialog is open", `document.getElementById("action-dialog").open`)
	b.do("confirming the retry", chromedp.Click(chromedp.ID("action-submit")))
	b.wait("the dialog asks for the operator token", `document.getElementById("action-dialog").open &&
		!document.getElementById("action-token-field").hidden && document.activeElement.id === "action-token"`)
	b.do("entering the cluster token",
		chromedp.SendKeys(chromedp.ID("action-token"), clusterTok),
		chromedp.Click(chromedp.ID("action-submit")))
	b.wait("the retry went through", `!document.getElementById("action-dialog").open &&
		document.querySelectorAll("#stuck-list article").length === 0 &&
		sessionStorage.getItem("txcoord.operatorToken") !== null`)

	b.do("reloading", chromedp.Navigate(base+"/ui/"))
	b.wait("the tab keeps its token", `document.getElementById("signin").hidden && document.querySelectorAll("#members-body tr").length === 3`)
	b.do("forgetting the tokens", chromedp.Click(chromedp.ID("signout")))
	b.wait("the page asks for a token again", `!document.getElementById("signin").hidden && sessionStorage.length === 0`)

	// 401 answers are logged by the browser as failed loads; anything else is a fault.
	for _, e := range b.errors() {
		if !strings.Contains(e, "status of 401") {
			t.Errorf("the page reported: %s", e)
		}
	}
}
