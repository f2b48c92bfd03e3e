package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/txcoord/txcoord/fsm"
)

// ErrNoteRequired: Resolve needs a note that says how the operator settled the transaction.
var ErrNoteRequired = errors.New("a note is required")

// Retry drives phase two again now. For a failed transaction it logs a Retry entry (the
// operator action, with its note, is then in the log on every node) and starts a driver;
// for one in committing or rolling_back it cuts the current backoff wait short. Errors:
// ErrNotLeader, fsm.ErrNotFound, fsm.ErrBadTransition (preparing, or finished: also once
// every participant has acknowledged phase two, before the completion is logged), or an
// error from the log.
func (e *Engine) Retry(ctx context.Context, id, note string) (*fsm.Txn, error) {
	t, err := e.currentTerm()
	if err != nil {
		return nil, err
	}
	txn, ok := e.state.Get(id)
	if !ok {
		return nil, fsm.ErrNotFound
	}
	switch txn.Status {
	case fsm.StatusCommitting, fsm.StatusRollingBack:
		if e.isSettled(id) {
			// Every participant acknowledged and the client was told the outcome; only the
			// completion entry is on its way. Answering as for a running phase two would
			// contradict what the client already holds.
			return txn, fmt.Errorf("%w: finished (every participant acknowledged %s)", fsm.ErrBadTransition, txn.Decision)
		}
		e.nudge(id)
		return txn, nil
	case fsm.StatusFailed:
	default:
		return txn, fmt.Errorf("%w: %s", fsm.ErrBadTransition, txn.Status)
	}
	res, err := e.log.Apply(ctx, &fsm.Retry{ID: id, At: e.cfg.Now().UnixMilli(), Note: note})
	if err != nil {
		if isNotLeader(err) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, err
	}
	if res.Err != nil {
		return res.Txn, res.Err
	}
	e.lg.Info("operator retry", "txn", id, "term", t.term, "note", note)
	e.inflight.Add(1)
	e.startDriver(t, id, false, e.resumeSpan(res.Txn, t.term))
	return res.Txn, nil
}

// Resolve marks a failed transaction finished after an operator settled it by hand; its
// status becomes committed or rolled_back per its decision, and note is kept in the log.
// Errors: ErrNotLeader, ErrNoteRequired, fsm.ErrNotFound, fsm.ErrBadTransition (not failed).
func (e *Engine) Resolve(ctx context.Context, id, note string) (*fsm.Txn, error) {
	t, err := e.currentTerm()
	if err != nil {
		return nil, err
	}
	if note == "" {
		return nil, ErrNoteRequired
	}
	res, err := e.log.Apply(ctx, &fsm.Resolve{ID: id, At: e.cfg.Now().UnixMilli(), Note: note})
	if err != nil {
		if isNotLeader(err) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, err
	}
	if res.Err == nil {
		e.lg.Info("operator resolve", "txn", id, "term", t.term, "note", note)
	}
	return res.Txn, res.Err
}

// nudge wakes every phase-two wait of id at once.
func (e *Engine) nudge(id string) {
	e.mu.Lock()
	if ch, ok := e.nudges[id]; ok {
		close(ch)
		delete(e.nudges, id)
	}
	e.mu.Unlock()
}

// nudged returns a channel that is closed when an operator asks to retry id now.
func (e *Engine) nudged(id string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.nudges[id]
	if !ok {
		ch = make(chan struct{})
		e.nudges[id] = ch
	}
	return ch
}
