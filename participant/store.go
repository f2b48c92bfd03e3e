// The participant library (Handler, Store, BoltStore) makes an HTTP service a correct
// participant in txcoord's two-phase commit with three callbacks and a few lines of Go:
//
//	store, _ := participant.OpenBoltStore("/var/lib/svc/participant.db")
//	h := participant.NewHandler(participant.Callbacks{
//		Prepare:  func(ctx context.Context, txID string, deadline time.Time) error { ... },
//		Commit:   func(ctx context.Context, txID string) error { ... },
//		Rollback: func(ctx context.Context, txID string) error { ... },
//	}, store)
//	mux.Handle("POST /tx/{phase}", h) // routes on the last path segment
//	go h.Run(ctx)                     // inquiry: asks for outcomes that do not come
//	// echo: e.POST("/tx/:phase", echo.WrapHandler(h))
//
// The Handler keeps a durable Record per transaction id in a Store and runs each callback
// under a per-transaction lock. It guarantees:
//
//   - A repeated Prepare gets the same vote as the first, without running the callback again.
//   - A repeated Commit or Rollback is acknowledged without running the callback again.
//   - A Rollback of a transaction never prepared here is acknowledged and remembered (a
//     tombstone), and a later Prepare for it is refused: NACK "already rolled back". This is
//     what stops a slow Prepare overtaken by its Rollback from holding resources forever.
//   - A Commit of a transaction never prepared here is refused (NACK "unknown transaction:
//     never prepared here"), never acknowledged as if it had been done.
//   - A Commit after a Rollback, a Rollback after a Commit, and a Commit after a NACK vote are
//     refused with NACK "conflict: ..." and logged at error level: they never happen under a
//     correct coordinator.
//   - Concurrent duplicate deliveries of one phase run its callback once.
//   - The prepare callback gets the request's deadline, and its ctx ends at that deadline.
//     A Prepare arriving after its deadline is refused without running the callback.
//   - A prepare callback error is a NACK vote whose reason is the error text; it is recorded,
//     so the coordinator's retries get the same NACK.
//   - A commit or rollback callback error is answered with HTTP 500 and nothing is recorded:
//     the coordinator retries, and the callback runs again.
//   - Crash safety: the record is written after the callback succeeds and before the reply.
//     With an atomic store (BoltStore, whose callbacks write through BoltTx(ctx), or a
//     service's own Store that honours the transaction hook) the callback's effects and the
//     record commit together, so every retry after a crash is answered from the record with
//     no second effect: exactly once. With a store that is not atomic with the callback's
//     effects, a crash between effect and record makes the retry run the callback again:
//     at least once, and the callback must be idempotent itself.
//   - Inquiry (Handler.Run): a transaction held past its deadline plus a grace period
//     without a Commit or Rollback is asked about at the Prepare's inquiry URLs until the
//     cluster answers committed or rolled_back, and the answer is applied exactly as that
//     call would be; invalid answers are never applied.
//
// One Handler must own a Store: two handlers (or processes) sharing one store lose the
// per-transaction lock. See docs/participant-library.md.
//
// This package is what a service author imports, and it imports nothing of the
// coordinator (a test, TestLibraryImportsNothingOfTheCoordinator, enforces it). The wire
// types it speaks (Request, Reply, Phase, Status, Endpoints, the headers) are defined in
// participant/protocol and re-exported here as aliases, so participant.Request and
// protocol.Request are the same type. The coordinator's HTTP client lives in
// coordinator/call; the demo services, the atomicity checker and the test fakes live under
// internal/.
package participant

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"
)

// State is where one transaction stands at this participant, as kept in its Record.
type State string

// The four states of a Record. A record only ever moves forward:
//
//	(none) -> prepared -> committed
//	(none) -> prepared -> rolled_back
//	(none) -> refused  -> rolled_back
//	(none) -> rolled_back            (a tombstone: rollback before any prepare)
const (
	// StatePrepared: the prepare callback succeeded and the vote was ACK; the service holds
	// the transaction's resources until the outcome arrives.
	StatePrepared State = "prepared"
	// StateRefused: the vote was NACK (the prepare callback failed, or the prepare came after
	// its deadline); nothing is held. Record.Reason says why.
	StateRefused State = "refused"
	// StateCommitted: the commit callback succeeded. Final.
	StateCommitted State = "committed"
	// StateRolledBack: rolled back, after a prepare or (Record.Tombstone) without one. Final.
	StateRolledBack State = "rolled_back"
)

// Record is the durable memory a participant keeps for one transaction id. The Handler
// writes it; a Store only persists it. Its JSON form is the one BoltStore writes.
type Record struct {
	// TransactionID is the coordinator's transaction id, the record's key.
	TransactionID string `json:"transactionId"`
	// State is the record's state.
	State State `json:"state"`
	// Reason is the NACK reason repeated to every later Prepare when State is StateRefused.
	Reason string `json:"reason,omitempty"`
	// Tombstone is true when the transaction was rolled back before this participant ever
	// saw its Prepare: a later Prepare is refused with "already rolled back".
	Tombstone bool `json:"tombstone,omitempty"`
	// Deadline is the prepare deadline the coordinator sent (zero if none was sent).
	Deadline time.Time `json:"deadline,omitzero"`
	// Updated is when the record was last written (the handler's clock).
	Updated time.Time `json:"updated"`
	// Payload is the "payload" the Prepare carried (absent when none), kept with the vote
	// so that the commit and rollback callbacks get it too (Payload(ctx)).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Term is the highest coordinator term (the Txcoord-Term header) seen for this
	// transaction; a call from a lower term is refused (ErrStaleTerm), so a deposed leader
	// that resumes after a pause cannot act after its successor did.
	Term uint64 `json:"term,omitempty"`
	// Inquiry is the Prepare's "inquiry" list (absent when none): the coordinator nodes the
	// Handler asks for the outcome when no Commit or Rollback comes (Handler.Run). Kept
	// while prepared; a final record drops it.
	Inquiry []string `json:"inquiry,omitempty"`
}

// Final reports whether the record is in a state that no later call can change.
func (r Record) Final() bool { return r.State == StateCommitted || r.State == StateRolledBack }

// Store keeps one Record per transaction id. The Handler serialises all calls for one
// transaction id (it never calls Get or Put for the same id concurrently), so a Store needs no
// locking of its own beyond what its database gives; calls for different ids may be concurrent.
//
// Contract:
//   - Get returns the last record Put for txID, with found=false (and a nil error) if there is
//     none. An error means the store could not be read; the handler then answers HTTP 500.
//   - Put persists rec durably before it returns nil: after a crash, Get returns it.
//   - If effect is non-nil, Put calls it exactly once, before writing, and writes rec only if
//     effect returns nil; the error from effect is returned unchanged (errors.Is works).
//   - Atomic stores (the transaction hook): Put runs effect and the write of rec in one
//     database transaction, and passes effect a context that carries that transaction (see
//     BoltTx), so the service's own writes made through it commit or vanish together with rec.
//     A store without transactions (MemStore, or a service's store that ignores the hook) runs
//     effect and then writes rec; a crash between the two leaves the effect without the record,
//     so the callback runs again on the coordinator's retry: the service must then make its
//     callbacks idempotent itself.
type Store interface {
	Get(ctx context.Context, txID string) (rec Record, found bool, err error)
	Put(ctx context.Context, rec Record, effect func(ctx context.Context) error) error
}

// MemStore is a Store in memory: not durable, not atomic with effects. It suits tests and
// services that keep no state across restarts. The zero value is not usable; call NewMemStore.
type MemStore struct {
	mu   sync.Mutex
	recs map[string]Record
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{recs: make(map[string]Record)} }

// Get implements Store.
func (s *MemStore) Get(_ context.Context, txID string) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.recs[txID]
	return rec, ok, nil
}

// Put implements Store: it runs effect (outside any lock) and then keeps rec.
func (s *MemStore) Put(ctx context.Context, rec Record, effect func(ctx context.Context) error) error {
	if effect != nil {
		if err := effect(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[rec.TransactionID] = rec
	return nil
}

// Prepared implements PreparedLister.
func (s *MemStore) Prepared(context.Context) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.recs {
		if r.State == StatePrepared {
			out = append(out, r)
		}
	}
	return out, nil
}

// Records returns a copy of every record, keyed by transaction id.
func (s *MemStore) Records() map[string]Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.recs)
}
