package coordinator

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
)

// maxCompleteBatch bounds the completions folded into one Complete entry.
const maxCompleteBatch = 256

// completionReq asks the batcher to log one transaction's completion.
type completionReq struct {
	c    fsm.Completion
	done chan error
}

// completeLoop logs completions for one term. A batch closes when it is full or
// CompleteLinger after its first completion, so many transactions share one log entry (and
// one FSM apply and fsync); the client was answered before, so only the record waits.
//
// lg names the term in its lines.
func (e *Engine) completeLoop(ctx context.Context, lg hclog.Logger, ch chan completionReq) {
	batch := make([]completionReq, 0, maxCompleteBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-ch:
			batch = append(batch, r)
		}
		// Linger a little for company: completions are bookkeeping (every participant has
		// already acknowledged and the client has its answer), and at low load one entry per
		// transaction would cost a log entry and an fsync each.
		linger := time.NewTimer(e.cfg.CompleteLinger)
	fill:
		for len(batch) < maxCompleteBatch {
			select {
			case r := <-ch:
				batch = append(batch, r)
			case <-linger.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		linger.Stop()
		items := make([]fsm.Completion, len(batch))
		for i, r := range batch {
			items[i] = r.c
		}
		_, err := e.apply(ctx, &lazyLog{mk: func() hclog.Logger { return lg.With("txns", len(items), "first_txn", items[0].ID) }}, &fsm.Complete{At: e.cfg.Now().UnixMilli(), Items: items})
		for _, r := range batch {
			r.done <- err
		}
	}
}

// complete hands c to this term's batcher and waits until its entry is committed.
func (e *Engine) complete(ctx context.Context, c fsm.Completion) error {
	e.mu.Lock()
	var ch chan completionReq
	if e.lead != nil {
		ch = e.lead.completions
	}
	e.mu.Unlock()
	if ch == nil {
		return errStop
	}
	r := completionReq{c: c, done: make(chan error, 1)}
	select {
	case ch <- r:
	case <-ctx.Done():
		return errStop
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return errStop
	}
}

// Settled returns a channel that is closed once every participant of id has acknowledged
// phase two on this leader, before the completion is logged: the outcome is then final and
// known to every participant, so a client can be answered without waiting for the
// bookkeeping entry. It returns nil when this node is not driving id.
func (e *Engine) Settled(id string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.driving[id]; !ok {
		return nil
	}
	ch, ok := e.settled[id]
	if !ok {
		ch = make(chan struct{})
		e.settled[id] = ch
	}
	return ch
}

// isSettled reports whether every participant of id has acknowledged phase two on this
// leader (Settled's channel is closed).
func (e *Engine) isSettled(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.settled[id]
	if !ok {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// settle closes id's Settled channel.
func (e *Engine) settle(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.settled[id]
	if !ok {
		ch = make(chan struct{})
		e.settled[id] = ch
	}
	select {
	case <-ch:
	default:
		close(ch)
	}
}
