package client

import (
	"context"
	"iter"
	"net/url"
	"strconv"
	"time"

	"github.com/txcoord/txcoord/api"
)

// ReadOptions tune a read.
type ReadOptions struct {
	// Consistency is api.ConsistencyDefault (read your writes), api.ConsistencyStale or
	// api.ConsistencyLinearizable ["": the server's default] (docs/reads.md).
	Consistency string
}

// Get returns transaction id. A transaction the cluster does not know is an *api.Error
// matching ErrNotFound. Reads retry across nodes while they answer 503 or cannot be
// reached, until ctx ends.
func (c *Client) Get(ctx context.Context, id string, o ReadOptions) (*api.TransactionView, error) {
	q := url.Values{}
	if o.Consistency != "" {
		q.Set("consistency", o.Consistency)
	}
	var v api.TransactionView
	if err := c.call(ctx, true, "GET", "/v1/transactions/"+url.PathEscape(id), q, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// ListOptions filter and order GET /v1/transactions. Zero values do not filter.
type ListOptions struct {
	Status      string    // one of api.Statuses
	Participant string    // a participant's host, host:port or URL
	Key         string    // the Idempotency-Key
	CreatedFrom time.Time // created at or after (ms precision)
	CreatedTo   time.Time // created before
	Ascending   bool      // oldest first [newest first]
	PageSize    int       // 1 to 1000 [the server's, 100]
	After       string    // start after this cursor (a page's Next)
	Consistency string    // as in ReadOptions
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("status", o.Status)
	set("participant", o.Participant)
	set("key", o.Key)
	if !o.CreatedFrom.IsZero() {
		q.Set("createdFrom", strconv.FormatInt(o.CreatedFrom.UnixMilli(), 10))
	}
	if !o.CreatedTo.IsZero() {
		q.Set("createdTo", strconv.FormatInt(o.CreatedTo.UnixMilli(), 10))
	}
	if o.Ascending {
		q.Set("order", "asc")
	}
	if o.PageSize > 0 {
		q.Set("limit", strconv.Itoa(o.PageSize))
	}
	set("after", o.After)
	set("consistency", o.Consistency)
	return q
}

// ListPage returns one page; pass its Next as o.After for the following one ("" on the
// last page).
func (c *Client) ListPage(ctx context.Context, o ListOptions) (*api.TransactionList, error) {
	var l api.TransactionList
	if err := c.call(ctx, true, "GET", "/v1/transactions", o.query(), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// List iterates over every matching transaction, page by page, until the last page, an
// error (yielded once, then the iteration stops) or the loop breaks.
//
//	for t, err := range c.List(ctx, client.ListOptions{Status: api.StatusFailed}) {
//		if err != nil { return err }
//		fmt.Println(t.TransactionID)
//	}
func (c *Client) List(ctx context.Context, o ListOptions) iter.Seq2[api.TransactionView, error] {
	return func(yield func(api.TransactionView, error) bool) {
		for {
			p, err := c.ListPage(ctx, o)
			if err != nil {
				yield(api.TransactionView{}, err)
				return
			}
			for _, t := range p.Transactions {
				if !yield(t, nil) {
					return
				}
			}
			if p.Next == "" || p.Next == o.After {
				return
			}
			o.After = p.Next
		}
	}
}

// Stuck returns the transactions that need attention: failed ones, and those unfinished
// for longer than olderThan (0: the server's default, 30 s; ms precision).
func (c *Client) Stuck(ctx context.Context, olderThan time.Duration) ([]api.TransactionView, error) {
	q := url.Values{}
	if olderThan > 0 {
		q.Set("olderThan", strconv.FormatInt(olderThan.Milliseconds(), 10))
	}
	var l api.StuckList
	if err := c.call(ctx, true, "GET", "/v1/stuck", q, nil, &l); err != nil {
		return nil, err
	}
	return l.Transactions, nil
}

// Retry asks the cluster to resume phase two of a failed transaction, with an operator's
// note (at most 1024 bytes). It returns the transaction as changed; ErrConflict when retry
// does not apply to its status, ErrNotFound for an unknown id. A request that may have
// reached a node is not resent (a repeat would be refused with 409).
func (c *Client) Retry(ctx context.Context, id, note string) (*api.TransactionView, error) {
	return c.operator(ctx, id, "retry", note)
}

// Resolve marks a failed transaction settled by hand; note (required, at most 1024
// bytes) says how. Errors as for Retry; a missing note is ErrBadRequest.
func (c *Client) Resolve(ctx context.Context, id, note string) (*api.TransactionView, error) {
	return c.operator(ctx, id, "resolve", note)
}

func (c *Client) operator(ctx context.Context, id, action, note string) (*api.TransactionView, error) {
	var v api.TransactionView
	if err := c.call(ctx, false, "POST", "/v1/transactions/"+url.PathEscape(id)+"/"+action, nil, api.OperatorRequest{Note: note}, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Cluster returns the answering node's view of the cluster (members, leader, versions).
func (c *Client) Cluster(ctx context.Context) (*api.ClusterStatus, error) {
	var st api.ClusterStatus
	if err := c.call(ctx, true, "GET", "/v1/cluster", nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
