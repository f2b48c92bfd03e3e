package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

const threeServices = `{"services":["` + flight + `","` + hotel + `","` + pay + `"],"timeout":1000}`

func TestPost_CommittedAnswers200(t *testing.T) {
	e := newEnv(t, Config{})
	rec := e.post(threeServices)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	checkJSONType(t, rec.Header())
	o := outcome(t, rec.Body.Bytes())
	if o.Status != "committed" || len(o.Errors) != 0 {
		t.Errorf("outcome = %+v, want committed without errors", o)
	}
	if !strings.Contains(rec.Body.String(), `"errors":[]`) {
		t.Errorf("errors is not an empty array: %s", rec.Body)
	}
	if ids := e.txnIDs(); len(ids) != 1 || ids[0] != o.TransactionID {
		t.Errorf("FSM ids = %v, answer id %q", ids, o.TransactionID)
	}
}

func TestPost_RolledBackListsReasons(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		txn, _ := e.begin(r)
		e.decide(txn, fsm.DecisionAbort,
			[]fsm.Vote{fsm.VoteYes, fsm.VoteNo, fsm.VoteNone},
			[]string{"", "no rooms", "no answer within 1000 ms"})
		e.complete(txn)
		return txn, nil
	})
	rec := e.post(threeServices)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	o := outcome(t, rec.Body.Bytes())
	want := []string{hotel + ": NACK: no rooms", pay + ": no answer within 1000 ms"}
	if o.Status != "rolled_back" || fmt.Sprint(o.Errors) != fmt.Sprint(want) {
		t.Errorf("outcome = %+v, want rolled_back with %q", o, want)
	}
}

func TestPost_FailedIsTerminal(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		txn, _ := e.begin(r)
		e.decide(txn, fsm.DecisionCommit, nil, nil)
		e.apply(&fsm.Fail{ID: txn.ID, At: time.Now().UnixMilli(), Reports: []fsm.Report{
			{Acked: true, Attempts: 1}, {Attempts: 30, Error: "HTTP 500"}, {Acked: true, Attempts: 2}}})
		return txn, nil
	})
	rec := e.post(threeServices)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	o := outcome(t, rec.Body.Bytes())
	if o.Status != "failed" || len(o.Errors) != 1 || o.Errors[0] != "http://hotel.example/commit: HTTP 500 (attempt 30)" {
		t.Errorf("outcome = %+v", o)
	}
}

// Phase two outlives the wait bound (deadline + PhaseTwoWait): 202 with the phase-two
// status; the transaction stays in the FSM for the cluster to finish.
func TestPost_PhaseTwoOutlivesBoundAnswers202(t *testing.T) {
	for _, tc := range []struct {
		d    fsm.Decision
		want string
	}{{fsm.DecisionCommit, "committing"}, {fsm.DecisionAbort, "rolling_back"}} {
		t.Run(tc.want, func(t *testing.T) {
			e := newEnv(t, Config{PhaseTwoWait: 20 * time.Millisecond})
			e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
				r.Timeout = 30 * time.Millisecond // the deadline is near
				txn, _ := e.begin(r)
				e.decide(txn, tc.d, nil, nil) // ...and phase two never completes
				return txn, nil
			})
			start := time.Now()
			rec := e.post(threeServices)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202: %s", rec.Code, rec.Body)
			}
			if o := outcome(t, rec.Body.Bytes()); o.Status != tc.want {
				t.Errorf("status = %q, want %q", o.Status, tc.want)
			}
			if el := time.Since(start); el < 40*time.Millisecond || el > 10*time.Second {
				t.Errorf("answered after %v; want about deadline (30ms) + PhaseTwoWait (20ms)", el)
			}
		})
	}
}

// The outcome arrives in the FSM while POST waits: the answer is the outcome, not 202.
func TestPost_WaitsForPhaseTwo(t *testing.T) {
	e := newEnv(t, Config{})
	decided := make(chan *fsm.Txn, 1)
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		txn, _ := e.begin(r)
		e.decide(txn, fsm.DecisionCommit, nil, nil)
		decided <- txn
		return txn, nil
	})
	go func() { e.complete(<-decided) }()
	rec := e.post(threeServices)
	if o := outcome(t, rec.Body.Bytes()); rec.Code != 200 || o.Status != "committed" {
		t.Errorf("%d %+v, want 200 committed", rec.Code, o)
	}
}

func TestPost_BusyIs503WithRetryAfter(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) { return nil, coordinator.ErrBusy })
	rec := e.post(threeServices)
	checkRec(t, rec, http.StatusServiceUnavailable, codeBusy)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

func TestPost_OtherSubmitErrorIs500(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) { return nil, errors.New("disk on fire") })
	rec := e.post(threeServices)
	if d := checkRec(t, rec, http.StatusInternalServerError, codeInternal)["detail"]; !strings.Contains(d, "disk on fire") {
		t.Errorf("detail = %q", d)
	}
}

// ErrIndeterminate: the Begin may still commit under the next leader. The API waits on
// its own FSM; here the entry commits and the transaction completes after Submit returned.
func TestPost_IndeterminateThenCompletes(t *testing.T) {
	e := newEnv(t, Config{})
	id := uuid.Must(uuid.NewV7()).String()
	returned := make(chan coordinator.Request, 1)
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		defer func() { returned <- r }()
		return &fsm.Txn{ID: id, Key: r.Key}, fmt.Errorf("%w: leadership lost", coordinator.ErrIndeterminate)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := <-returned
		now := time.Now()
		res := e.apply(&fsm.Begin{ID: id, Key: r.Key, CreatedAt: now.UnixMilli(), Deadline: now.Add(r.Timeout).UnixMilli(), Participants: r.Participants})
		e.decide(res.Txn, fsm.DecisionCommit, nil, nil)
		e.complete(res.Txn)
	}()
	rec := e.post(threeServices, participant.IdempotencyKeyHeader, "order-1")
	<-done
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", rec.Code, rec.Body)
	}
	if o := outcome(t, rec.Body.Bytes()); o.TransactionID != id || o.Status != "committed" {
		t.Errorf("outcome = %+v, want %s committed", o, id)
	}
}

// ErrIndeterminate and the transaction never shows up within the bound: 503 indeterminate
// with the id, Retry-After, and a detail that tells the client how to find out.
func TestPost_IndeterminateUnresolvedIs503(t *testing.T) {
	e := newEnv(t, Config{PhaseTwoWait: 10 * time.Millisecond})
	id := uuid.Must(uuid.NewV7()).String()
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		return &fsm.Txn{ID: id, Key: r.Key}, fmt.Errorf("%w: leadership lost", coordinator.ErrIndeterminate)
	})
	rec := e.post(`{"services":["`+flight+`"],"timeout":20}`, participant.IdempotencyKeyHeader, "order-2")
	got := checkRec(t, rec, http.StatusServiceUnavailable, codeIndeterminate)
	if got["transactionId"] != id {
		t.Errorf("transactionId = %q, want %q", got["transactionId"], id)
	}
	for _, s := range []string{"/v1/transactions/" + id, "order-2"} {
		if !strings.Contains(got["detail"], s) {
			t.Errorf("detail %q does not mention %q", got["detail"], s)
		}
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

// A fast transaction that was never logged and then presumed aborted (its participants
// asked) has a record without the request's key: it must not answer the request
// rolled_back, since the key is free and a retry with it may still commit (seen in the
// fast-mode chaos run: "answered with txn X, which has key \"\""). 503 indeterminate, with
// the id, as when nothing shows up.
func TestPost_IndeterminateNotAnsweredByAnUnkeyedRecord(t *testing.T) {
	e := newEnv(t, Config{PhaseTwoWait: 10 * time.Millisecond})
	e.apply(&fsm.SetFeatures{Level: 3, At: time.Now().Add(-time.Hour).UnixMilli()})
	id := uuid.Must(uuid.NewV7()).String()
	e.apply(&fsm.PresumeAbort{ID: id, At: time.Now().UnixMilli(), Deadline: time.Now().Add(-time.Second).UnixMilli()})
	e.sub.setFn(func(_ context.Context, r coordinator.Request) (*fsm.Txn, error) {
		return &fsm.Txn{ID: id, Key: r.Key}, fmt.Errorf("%w: leadership ended in phase one", coordinator.ErrIndeterminate)
	})
	rec := e.post(`{"services":["`+flight+`"],"timeout":20}`, participant.IdempotencyKeyHeader, "order-3")
	if got := checkRec(t, rec, http.StatusServiceUnavailable, codeIndeterminate); got["transactionId"] != id {
		t.Errorf("transactionId = %q, want %q", got["transactionId"], id)
	}
}

// A Submitter that reports ErrIndeterminate without a record must not crash the handler.
func TestPost_IndeterminateWithoutRecord(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) {
		return nil, coordinator.ErrIndeterminate
	})
	rec := e.post(threeServices)
	checkRec(t, rec, http.StatusServiceUnavailable, codeIndeterminate)
}

// A repeated POST with the same Idempotency-Key answers the same transaction.
func TestPost_SameKeySameTransaction(t *testing.T) {
	e := newEnv(t, Config{})
	a := outcome(t, e.post(threeServices, participant.IdempotencyKeyHeader, "k-1").Body.Bytes())
	b := outcome(t, e.post(threeServices, participant.IdempotencyKeyHeader, "k-1").Body.Bytes())
	if a.TransactionID != b.TransactionID || len(e.txnIDs()) != 1 {
		t.Errorf("ids %s, %s; FSM holds %v", a.TransactionID, b.TransactionID, e.txnIDs())
	}
}

// A key whose transaction was pruned cannot be honoured: 409 conflict, nothing started.
func TestPost_KeyReusedIs409(t *testing.T) {
	e := newEnv(t, Config{})
	e.sub.setFn(func(context.Context, coordinator.Request) (*fsm.Txn, error) {
		return nil, fmt.Errorf("%w: order-1", coordinator.ErrKeyReused)
	})
	rec := e.post(threeServices, participant.IdempotencyKeyHeader, "order-1")
	checkRec(t, rec, http.StatusConflict, codeConflict)
	if len(e.txnIDs()) != 0 {
		t.Error("transactions written")
	}
}
