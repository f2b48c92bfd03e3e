package coordinator

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// Observer receives the engine's measurements; the metrics package implements it with
// Prometheus. Methods are called on the 2PC path and must not block.
type Observer interface {
	// Finished: a transaction reached a terminal status ("committed", "rolled_back" or
	// "failed") under this leader. phaseOne runs from its creation to the decision,
	// phaseTwo from the decision to the end; total is creation to end (wall clock, across
	// leaders).
	Finished(status string, total, phaseOne, phaseTwo time.Duration)
	// Call: one participant call ended. host is the URL's host:port, phase "prepare",
	// "commit" or "rollback", result "ack", "nack", or an error kind ("timeout",
	// "transport", "status", "reply", "canceled").
	Call(host, phase, result string, took time.Duration)
	// Retry: a phase-two call to host will be retried.
	Retry(host, phase string)
}

type nopObserver struct{}

func (nopObserver) Finished(string, time.Duration, time.Duration, time.Duration) {}
func (nopObserver) Call(string, string, string, time.Duration)                   {}
func (nopObserver) Retry(string, string)                                         {}

// observedCaller times every participant call for the Observer.
type observedCaller struct {
	Caller
	obs Observer
}

func (c observedCaller) Call(ctx context.Context, url string, p participant.Phase, req participant.Request) (participant.Reply, error) {
	start := time.Now()
	reply, err := c.Caller.Call(ctx, url, p, req)
	result := "ack"
	switch {
	case err != nil:
		result = "error"
		var ce *call.CallError
		if errors.As(err, &ce) {
			result = string(ce.Kind)
		}
	case reply.Status != participant.ACK:
		result = "nack"
	}
	c.obs.Call(hostOf(url), string(p), result, time.Since(start))
	return reply, err
}

// hostOf returns the host:port of a URL, the label participants are grouped by (a URL's
// path would give unbounded label values).
func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return "invalid"
}

// observeFinished reports a transaction that reached a terminal status.
func (e *Engine) observeFinished(t *fsm.Txn) {
	ms := func(a, b int64) time.Duration {
		if a == 0 || b == 0 || b < a {
			return 0
		}
		return time.Duration(b-a) * time.Millisecond
	}
	e.cfg.Observer.Finished(t.Status.String(), ms(t.CreatedAt, t.FinishedAt), ms(t.CreatedAt, t.DecidedAt), ms(t.DecidedAt, t.FinishedAt))
}
