package coordinator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// TestIdempotencyKeyWithAnotherRequest: a key bound to one request and reused for another
// (other participants, another order, another timeout) is refused with ErrKeyReused and
// starts nothing, instead of answering with the first request's outcome.
func TestIdempotencyKeyWithAnotherRequest(t *testing.T) {
	fps := newFPs(t, 3)
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	ps := parts(fps...)
	first, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps[:2], Timeout: roomy, Key: "k-1"})
	if err != nil {
		t.Fatal(err)
	}
	// The first transaction's own entries (decision, completion) must not count: wait until
	// it is finished, so that any entry from here on comes from the refused requests.
	r.waitTerminal(t, first.ID)
	before := r.log.len()
	for name, req := range map[string]coordinator.Request{
		"other participants": {Participants: ps[2:], Timeout: roomy, Key: "k-1"},
		"more participants":  {Participants: ps, Timeout: roomy, Key: "k-1"},
		"another order":      {Participants: []fsm.Participant{ps[1], ps[0]}, Timeout: roomy, Key: "k-1"},
		"another timeout":    {Participants: ps[:2], Timeout: roomy + time.Second, Key: "k-1"},
	} {
		if txn, err := l.eng.Submit(context.Background(), req); !errors.Is(err, coordinator.ErrKeyReused) {
			t.Errorf("%s: Submit = %v, %v; want ErrKeyReused", name, txn, err)
		}
	}
	if got := r.log.len(); got != before {
		t.Fatalf("refused requests wrote %d log entries", got-before)
	}
	if again, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps[:2], Timeout: roomy, Key: "k-1"}); err != nil || again.ID != first.ID {
		t.Fatalf("the same request again: %v, %v; want %s", again, err, first.ID)
	}
}
