package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// event is one thing the harness did (a kill, a pause, a knob change) or saw.
type event struct {
	At     time.Time
	Kind   string
	Node   string
	Detail string
}

// eventLog records events and prints progress lines with the time since the start.
type eventLog struct {
	mu    sync.Mutex
	start time.Time
	out   io.Writer
	list  []event
}

func newEventLog(out io.Writer) *eventLog {
	return &eventLog{start: time.Now(), out: out}
}

func (l *eventLog) since(t time.Time) string {
	return fmt.Sprintf("%7.2fs", t.Sub(l.start).Seconds())
}

// add records an event at time at and prints it.
func (l *eventLog) add(at time.Time, kind, node, format string, args ...any) event {
	e := event{At: at, Kind: kind, Node: node, Detail: fmt.Sprintf(format, args...)}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, e)
	if l.out != nil {
		fmt.Fprintf(l.out, "[chaos %s] %-16s %-4s %s\n", l.since(at), kind, node, e.Detail)
	}
	return e
}

// printf prints a progress line that is not an event.
func (l *eventLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out != nil {
		fmt.Fprintf(l.out, "[chaos %s] %s\n", l.since(time.Now()), fmt.Sprintf(format, args...))
	}
}

func (l *eventLog) events() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event(nil), l.list...)
}

// txnView is the part of a coordinator's TransactionView the oracles compare. Every field
// comes from the replicated state, so converged nodes must agree on all of them.
type txnView struct {
	ID           string          `json:"transactionId"`
	Status       string          `json:"status"`
	Decision     string          `json:"decision"`
	Key          string          `json:"idempotencyKey"`
	TimeoutMs    int64           `json:"timeoutMs"`
	CreatedAt    string          `json:"createdAt"`
	Deadline     string          `json:"deadline"`
	DecidedAt    string          `json:"decidedAt"`
	FinishedAt   string          `json:"finishedAt"`
	Note         string          `json:"note"`
	Index        uint64          `json:"index"`
	Participants []participantVw `json:"participants"`
	Errors       []string        `json:"errors"`
}

type participantVw struct {
	Prepare      string `json:"prepare"`
	Commit       string `json:"commit"`
	Rollback     string `json:"rollback"`
	Vote         string `json:"vote"`
	Reason       string `json:"reason"`
	Acknowledged bool   `json:"acknowledged"`
	Attempts     uint32 `json:"attempts"`
	LastError    string `json:"lastError"`
}

func terminal(status string) bool {
	return status == "committed" || status == "rolled_back" || status == "failed"
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// decidedAt parses the view's decision time (zero if none).
func (t *txnView) decidedAt() time.Time {
	if t.DecidedAt == "" {
		return time.Time{}
	}
	at, _ := time.Parse(timeLayout, t.DecidedAt)
	return at
}

// fetchTxns reads every transaction of node base (all pages of GET /v1/transactions).
func fetchTxns(ctx context.Context, client *http.Client, base string) ([]txnView, error) {
	var out []txnView
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("%s: paging does not end", base)
		}
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Transactions []txnView `json:"transactions"`
			Next         string    `json:"next"`
		}
		if err := getJSON(ctx, client, base+"/v1/transactions?"+q.Encode(), 30*time.Second, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Transactions...)
		if page.Next == "" || page.Next == after {
			return out, nil
		}
		after = page.Next
	}
}

// getTxn reads one transaction from node base; ok is false on 404 or any error.
func getTxn(ctx context.Context, client *http.Client, base, id string, timeout time.Duration) (txnView, bool) {
	var t txnView
	err := getJSON(ctx, client, base+"/v1/transactions/"+url.PathEscape(id), timeout, &t)
	return t, err == nil
}
