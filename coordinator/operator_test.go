package coordinator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
)

// Once every participant has acknowledged phase two the client is told the outcome, while
// the completion entry may still be on its way. An operator's Retry in that window must
// answer as for a finished transaction (a conflict), not as for a running phase two: the
// latter contradicts what the client already holds (found by the client SDK's test, which
// failed intermittently on a loaded machine).
func TestRetryAfterEveryAckIsRefusedBeforeCompletionIsLogged(t *testing.T) {
	a, b := participanttest.New(t), participanttest.New(t)
	r := newRig(t)
	release := make(chan struct{})
	r.log.setGate(func(c fsm.Command) {
		if _, ok := c.(*fsm.Complete); ok {
			<-release
		}
	})
	defer close(release)
	l := r.lead(fastCfg(), nil)
	txn := l.submit(t, roomy, a, b)
	settled := l.eng.Settled(txn.ID)
	if settled == nil {
		t.Fatal("Settled: nil for a transaction this leader drives")
	}
	select {
	case <-settled:
	case <-time.After(waitBound):
		t.Fatalf("not settled within %v", waitBound)
	}
	if got, _ := r.fsm.Get(txn.ID); got.Status != fsm.StatusCommitting {
		t.Fatalf("status %s before the completion entry, want committing (the gate holds it)", got.Status)
	}
	if _, err := l.eng.Retry(context.Background(), txn.ID, "why"); !errors.Is(err, fsm.ErrBadTransition) {
		t.Fatalf("Retry after every participant acknowledged: %v, want ErrBadTransition", err)
	}
}
