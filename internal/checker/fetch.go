package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/txcoord/txcoord/internal/demo"
)

// maxDocumentBytes bounds a /state or transactions page read by the fetch helpers (bytes).
const maxDocumentBytes = 256 << 20

// PageLimit is the page size FetchTransactions asks for.
const PageLimit = 1000

// FetchState GETs the /state document of the participant at participantURL (its base URL or
// its prepare URL: "/prepare" is replaced by "/state"). It fails on a transport error, a
// status other than 200, or a body that is not a State.
func FetchState(ctx context.Context, c *http.Client, participantURL string) (demo.State, error) {
	var st demo.State
	err := getJSON(ctx, c, Key(participantURL)+"/state", &st)
	return st, err
}

// FetchParticipants fetches the state of every participant in urls, in order.
func FetchParticipants(ctx context.Context, c *http.Client, urls []string) ([]Participant, error) {
	parts := make([]Participant, 0, len(urls))
	for _, u := range urls {
		st, err := FetchState(ctx, c, u)
		if err != nil {
			return nil, err
		}
		parts = append(parts, Participant{URL: u, State: st})
	}
	return parts, nil
}

// txnPage is one page of GET {node}/v1/transactions.
type txnPage struct {
	Transactions []struct {
		ID           string          `json:"transactionId"`
		Status       string          `json:"status"`
		Participants []participantID `json:"participants"`
	} `json:"transactions"`
	Next string `json:"next"`
}

// participantID is a participant as the coordinator lists it: an object with at least
// "prepare", or (tolerated) a bare prepare URL string.
type participantID string

// UnmarshalJSON accepts {"prepare": URL, ...} or "URL".
func (p *participantID) UnmarshalJSON(b []byte) error {
	var obj struct {
		Prepare string `json:"prepare"`
	}
	if err := json.Unmarshal(b, &obj); err == nil {
		*p = participantID(obj.Prepare)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("participant is neither an object with \"prepare\" nor a string: %s", b)
	}
	*p = participantID(s)
	return nil
}

// FetchTransactions reads every transaction from the coordinator node at nodeURL, following
// GET {nodeURL}/v1/transactions?limit=PageLimit&after=<id> until "next" is empty. It fails on
// a transport error, a status other than 200, a malformed page, or a "next" that does not
// move forward.
func FetchTransactions(ctx context.Context, c *http.Client, nodeURL string) ([]Txn, error) {
	base := strings.TrimSuffix(nodeURL, "/") + "/v1/transactions"
	var out []Txn
	seen := map[string]bool{}
	after := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(PageLimit)}}
		if after != "" {
			q.Set("after", after)
		}
		var page txnPage
		if err := getJSON(ctx, c, base+"?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		for _, t := range page.Transactions {
			urls := make([]string, len(t.Participants))
			for i, p := range t.Participants {
				urls[i] = string(p)
			}
			out = append(out, Txn{ID: t.ID, Status: t.Status, Participants: urls})
		}
		if page.Next == "" {
			return out, nil
		}
		if seen[page.Next] {
			return nil, fmt.Errorf("checker: %s: paging does not advance (next %q came twice)", base, page.Next)
		}
		seen[page.Next], after = true, page.Next
	}
}

// Run fetches the transactions from nodeURL and the state of each participant, then checks
// them (see Check). An error means the data could not be fetched; violations are in the
// report.
func Run(ctx context.Context, c *http.Client, nodeURL string, participantURLs []string, opts Options) (Report, error) {
	txns, err := FetchTransactions(ctx, c, nodeURL)
	if err != nil {
		return Report{}, err
	}
	parts, err := FetchParticipants(ctx, c, participantURLs)
	if err != nil {
		return Report{}, err
	}
	return Check(txns, parts, opts), nil
}

func getJSON(ctx context.Context, c *http.Client, u string, v any) error {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("checker: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("checker: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("checker: GET %s: %w", u, err)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("checker: GET %s: body larger than %d bytes", u, maxDocumentBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("checker: GET %s: HTTP %d: %s", u, resp.StatusCode, strings.TrimSpace(string(body[:min(len(body), 300)])))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("checker: GET %s: %w", u, err)
	}
	return nil
}
