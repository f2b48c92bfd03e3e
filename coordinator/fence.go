package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
)

// errFenced is returned by a step whose participant calls the fence held back: this node
// could not confirm that it still leads. Nothing was sent.
var errFenced = errors.New("leadership not confirmed; calls held back")

// verifyFlight is one VerifyLeader round that every waiting call shares.
type verifyFlight struct {
	done chan struct{}
	err  error
}

// markConfirmed records that leadership held at start (an entry proposed then has
// committed, or a VerifyLeader begun then succeeded): a quorum accepted this leader after it.
func (e *Engine) markConfirmed(start time.Time) {
	at := int64(start.Sub(e.epoch))
	for {
		cur := e.confirmed.Load()
		if at <= cur || e.confirmed.CompareAndSwap(cur, at) {
			return
		}
	}
}

// fence runs right before each participant call is written (call.WithFence). It
// returns nil when leadership was confirmed within FenceLease, else runs (or joins) one
// VerifyLeader round: a leader paused past the election timeout finds on resuming that its
// last confirmation is old, asks, learns it was deposed, and sends nothing.
func (e *Engine) fence(ctx context.Context) error {
	if e.cfg.VerifyLeader == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := e.cfg.Now()
	if c := e.confirmed.Load(); c > 0 && now.Sub(e.epoch)-time.Duration(c) < e.cfg.FenceLease {
		return nil
	}
	e.vmu.Lock()
	f := e.verifying
	if f == nil {
		f = &verifyFlight{done: make(chan struct{})}
		e.verifying = f
		go func() {
			err := e.cfg.VerifyLeader(context.WithoutCancel(ctx))
			if err == nil {
				e.markConfirmed(now)
			}
			e.vmu.Lock()
			f.err = err
			e.verifying = nil
			e.vmu.Unlock()
			close(f.done)
		}()
	}
	e.vmu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return fmt.Errorf("this node may no longer lead: %w", f.err)
	}
	return nil
}

// isFenced reports whether err is a call the fence held back.
func isFenced(err error) bool {
	var ce *call.CallError
	return errors.As(err, &ce) && ce.Kind == call.KindFenced
}
