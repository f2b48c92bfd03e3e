package participant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeService counts callback runs and keeps a set of holds, like a service's inventory.
type fakeService struct {
	mu      sync.Mutex
	calls   map[Phase]int
	holds   map[string]bool
	sold    map[string]bool
	vote    error // returned by Prepare when not nil
	commitE error // returned by Commit (once) when not nil
	gotDL   time.Time
	ctxDL   time.Time
	block   chan struct{} // when not nil, each callback waits for it to be closed
	entered chan struct{} // when not nil, each callback sends on it first
}

func newFake() *fakeService {
	return &fakeService{calls: map[Phase]int{}, holds: map[string]bool{}, sold: map[string]bool{}}
}

func (f *fakeService) wait() {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
}

func (f *fakeService) callbacks() Callbacks {
	return Callbacks{
		Prepare: func(ctx context.Context, id string, dl time.Time) error {
			f.wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls[PhasePrepare]++
			f.gotDL = dl
			f.ctxDL, _ = ctx.Deadline()
			if f.vote != nil {
				return f.vote
			}
			f.holds[id] = true
			return nil
		},
		Commit: func(ctx context.Context, id string) error {
			f.wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls[PhaseCommit]++
			if err := f.commitE; err != nil {
				f.commitE = nil
				return err
			}
			delete(f.holds, id)
			f.sold[id] = true
			return nil
		},
		Rollback: func(ctx context.Context, id string) error {
			f.wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls[PhaseRollback]++
			delete(f.holds, id)
			return nil
		},
	}
}

func (f *fakeService) count(p Phase) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[p]
}

func (f *fakeService) holding() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.holds)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf *syncBuffer) Option {
	return WithLogger(slog.New(slog.NewTextHandler(buf, nil)))
}

// call POSTs phase p of txn id to h and returns the HTTP status and the decoded reply.
func call(t *testing.T, h http.Handler, p Phase, id string, deadline time.Time) (int, Reply) {
	t.Helper()
	req := Request{TransactionID: id}
	if !deadline.IsZero() {
		req.Deadline = FormatDeadline(deadline)
	}
	body, _ := json.Marshal(req)
	r := httptest.NewRequest(http.MethodPost, "/tx/"+string(p), bytes.NewReader(body))
	r.Header.Set(IdempotencyKeyHeader, id+":"+string(p))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var rep Reply
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
			t.Fatalf("%s %s: reply %q: %v", p, id, w.Body.String(), err)
		}
	}
	return w.Code, rep
}

func mustReply(t *testing.T, h http.Handler, p Phase, id string, want Status, wantReason string) {
	t.Helper()
	code, rep := call(t, h, p, id, time.Time{})
	if code != http.StatusOK || rep.Status != want || !strings.Contains(rep.Reason, wantReason) {
		t.Fatalf("%s %s: got %d %+v, want 200 %s containing %q", p, id, code, rep, want, wantReason)
	}
}

func TestRepeatedPrepareGetsSameVote(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vote   error
		status Status
	}{{"ACK", nil, ACK}, {"NACK", errors.New("no seats left"), NACK}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.vote = tc.vote
			h := NewHandler(f.callbacks(), NewMemStore())
			for range 3 {
				mustReply(t, h, PhasePrepare, "t1", tc.status, "")
			}
			if _, rep := call(t, h, PhasePrepare, "t1", time.Time{}); tc.vote != nil && rep.Reason != tc.vote.Error() {
				t.Fatalf("NACK reason %q, want the callback's error text %q", rep.Reason, tc.vote.Error())
			}
			if n := f.count(PhasePrepare); n != 1 {
				t.Fatalf("prepare callback ran %d times, want 1", n)
			}
		})
	}
}

func TestRepeatedCommitAndRollbackRunCallbackOnce(t *testing.T) {
	f := newFake()
	h := NewHandler(f.callbacks(), NewMemStore())
	mustReply(t, h, PhasePrepare, "c", ACK, "")
	mustReply(t, h, PhasePrepare, "r", ACK, "")
	for range 3 {
		mustReply(t, h, PhaseCommit, "c", ACK, "")
		mustReply(t, h, PhaseRollback, "r", ACK, "")
	}
	if c, r := f.count(PhaseCommit), f.count(PhaseRollback); c != 1 || r != 1 {
		t.Fatalf("commit ran %d times, rollback %d times; want 1 and 1", c, r)
	}
	// A Prepare repeated after the outcome keeps its answer for commit, refuses for rollback.
	mustReply(t, h, PhasePrepare, "c", ACK, "")
	mustReply(t, h, PhasePrepare, "r", NACK, ReasonAlreadyRolledBack)
	if n := f.count(PhasePrepare); n != 2 {
		t.Fatalf("prepare ran %d times, want 2", n)
	}
}

func TestRollbackOfNeverPreparedIsRememberedAsTombstone(t *testing.T) {
	f := newFake()
	store := NewMemStore()
	h := NewHandler(f.callbacks(), store)
	mustReply(t, h, PhaseRollback, "t", ACK, "")
	rec := store.Records()["t"]
	if rec.State != StateRolledBack || !rec.Tombstone {
		t.Fatalf("record after rollback of unknown txn: %+v, want rolled_back tombstone", rec)
	}
	mustReply(t, h, PhasePrepare, "t", NACK, ReasonAlreadyRolledBack)
	mustReply(t, h, PhaseRollback, "t", ACK, "")
	if f.count(PhasePrepare)+f.count(PhaseRollback) != 0 || f.holding() != 0 {
		t.Fatalf("callbacks ran (%v) or holds left (%d) for a tombstoned txn", f.calls, f.holding())
	}
}

// TestC01_RollbackOfNeverSeenTxnIsACKedAndBounded plays C01: FP-A votes ACK, FP-B votes NACK,
// FP-C never sees the Prepare. The coordinator's rollback loop (retry until ACK, with a cap)
// must finish on the first call to each participant, and FP-C must refuse a Prepare that
// shows up afterwards.
func TestC01_RollbackOfNeverSeenTxnIsACKedAndBounded(t *testing.T) {
	fa, fb, fc := newFake(), newFake(), newFake()
	fb.vote = errors.New("no rooms")
	var logs syncBuffer
	a := NewHandler(fa.callbacks(), NewMemStore(), testLogger(&logs))
	b := NewHandler(fb.callbacks(), NewMemStore(), testLogger(&logs))
	c := NewHandler(fc.callbacks(), NewMemStore(), testLogger(&logs))
	mustReply(t, a, PhasePrepare, "tx", ACK, "")
	mustReply(t, b, PhasePrepare, "tx", NACK, "no rooms")
	// FP-C drops the Prepare: it is never delivered.

	const maxCalls = 5
	calls := 0
	for _, h := range []http.Handler{a, b, c} {
		for try := 1; ; try++ {
			calls++
			if code, rep := call(t, h, PhaseRollback, "tx", time.Time{}); code == http.StatusOK && rep.Status == ACK {
				break
			}
			if try == maxCalls {
				t.Fatalf("rollback not acknowledged after %d calls", maxCalls)
			}
		}
	}
	if calls != 3 {
		t.Fatalf("rollback took %d calls for 3 participants, want 3", calls)
	}
	if fa.count(PhaseRollback) != 1 || fb.count(PhaseRollback) != 0 || fc.count(PhaseRollback) != 0 {
		t.Fatalf("rollback callbacks A=%d B=%d C=%d, want 1 0 0 (only A held anything)",
			fa.count(PhaseRollback), fb.count(PhaseRollback), fc.count(PhaseRollback))
	}
	mustReply(t, c, PhasePrepare, "tx", NACK, ReasonAlreadyRolledBack)
	if fa.holding()+fb.holding()+fc.holding() != 0 {
		t.Fatal("a participant still holds resources")
	}
	if strings.Contains(logs.String(), "CONFLICT") {
		t.Fatalf("C01 is no conflict, but the log says so:\n%s", logs.String())
	}
}

func TestCommitOfNeverPreparedIsRefused(t *testing.T) {
	f := newFake()
	store := NewMemStore()
	var logs syncBuffer
	h := NewHandler(f.callbacks(), store, testLogger(&logs))
	mustReply(t, h, PhaseCommit, "ghost", NACK, ReasonNeverPrepared)
	if f.count(PhaseCommit) != 0 || len(store.Records()) != 0 {
		t.Fatalf("commit of unknown txn ran the callback (%d) or wrote a record (%v)", f.count(PhaseCommit), store.Records())
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("commit of unknown txn was not logged as an error:\n%s", logs.String())
	}
}

func TestConflictingOutcomesAreRefusedAndLogged(t *testing.T) {
	f := newFake()
	f.vote = nil
	var logs syncBuffer
	h := NewHandler(f.callbacks(), NewMemStore(), testLogger(&logs))

	mustReply(t, h, PhasePrepare, "rolled", ACK, "")
	mustReply(t, h, PhaseRollback, "rolled", ACK, "")
	mustReply(t, h, PhaseCommit, "rolled", NACK, "conflict")

	mustReply(t, h, PhaseRollback, "tomb", ACK, "")
	mustReply(t, h, PhaseCommit, "tomb", NACK, "conflict")

	mustReply(t, h, PhasePrepare, "done", ACK, "")
	mustReply(t, h, PhaseCommit, "done", ACK, "")
	mustReply(t, h, PhaseRollback, "done", NACK, "conflict")

	f.vote = errors.New("sold out")
	mustReply(t, h, PhasePrepare, "no", NACK, "sold out")
	mustReply(t, h, PhaseCommit, "no", NACK, "conflict")
	mustReply(t, h, PhaseRollback, "no", ACK, "") // a NACK voter is rolled back without its callback

	if c, r := f.count(PhaseCommit), f.count(PhaseRollback); c != 1 || r != 1 {
		t.Fatalf("commit ran %d, rollback %d times; want 1 and 1", c, r)
	}
	if n := strings.Count(logs.String(), "2PC CONFLICT"); n != 4 {
		t.Fatalf("%d conflicts logged, want 4:\n%s", n, logs.String())
	}
}

func TestConcurrentDuplicatesRunCallbackOnce(t *testing.T) {
	const n = 32
	for _, p := range []Phase{PhasePrepare, PhaseCommit, PhaseRollback} {
		t.Run(string(p), func(t *testing.T) {
			f := newFake()
			h := NewHandler(f.callbacks(), NewMemStore())
			if p != PhasePrepare {
				mustReply(t, h, PhasePrepare, "dup", ACK, "")
			}
			f.mu.Lock()
			f.entered, f.block = make(chan struct{}, n), make(chan struct{})
			f.mu.Unlock()

			// Every request passes `arrived` before entering the handler; the first
			// callback holds the lock until all n have arrived.
			arrived := make(chan struct{}, n)
			wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				h.ServeHTTP(w, r)
			})
			replies := make(chan Reply, n)
			for range n {
				go func() {
					_, rep := call(t, wrapped, p, "dup", time.Time{})
					replies <- rep
				}()
			}
			<-f.entered // one callback is running, holding the txn lock
			for range n {
				<-arrived
			}
			close(f.block)
			for range n {
				if rep := <-replies; rep.Status != ACK {
					t.Fatalf("duplicate %s got %+v, want ACK", p, rep)
				}
			}
			if c := f.count(p); c != 1 {
				t.Fatalf("%s callback ran %d times for %d concurrent duplicates, want 1", p, c, n)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.locks) != 0 {
				t.Fatalf("%d per-transaction locks left after all calls returned", len(h.locks))
			}
		})
	}
}

func TestPrepareCallbackGetsDeadline(t *testing.T) {
	f := newFake()
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 678e6, time.UTC)
	now := deadline.Add(-time.Second)
	h := NewHandler(f.callbacks(), NewMemStore(), WithClock(func() time.Time { return now }))
	if code, rep := call(t, h, PhasePrepare, "t", deadline); code != 200 || rep.Status != ACK {
		t.Fatalf("prepare: %d %+v", code, rep)
	}
	if !f.gotDL.Equal(deadline) || !f.ctxDL.Equal(deadline) {
		t.Fatalf("callback got deadline %v and ctx deadline %v, want %v", f.gotDL, f.ctxDL, deadline)
	}
}

func TestPrepareAfterDeadlineIsRefusedWithoutCallback(t *testing.T) {
	f := newFake()
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	h := NewHandler(f.callbacks(), NewMemStore(), WithClock(func() time.Time { return deadline }))
	for range 2 {
		if _, rep := call(t, h, PhasePrepare, "late", deadline); rep.Status != NACK || rep.Reason != ReasonDeadlinePassed {
			t.Fatalf("late prepare: %+v, want NACK %q", rep, ReasonDeadlinePassed)
		}
	}
	if f.count(PhasePrepare) != 0 {
		t.Fatal("prepare callback ran after the deadline")
	}
	mustReply(t, h, PhaseRollback, "late", ACK, "")
}

func TestCommitCallbackErrorIs500AndRetried(t *testing.T) {
	f := newFake()
	h := NewHandler(f.callbacks(), NewMemStore())
	mustReply(t, h, PhasePrepare, "t", ACK, "")
	f.commitE = errors.New("disk full")
	if code, _ := call(t, h, PhaseCommit, "t", time.Time{}); code != http.StatusInternalServerError {
		t.Fatalf("failing commit callback answered %d, want 500", code)
	}
	mustReply(t, h, PhaseCommit, "t", ACK, "")
	mustReply(t, h, PhaseCommit, "t", ACK, "")
	if n := f.count(PhaseCommit); n != 2 {
		t.Fatalf("commit callback ran %d times, want 2 (one failure, one success)", n)
	}
}

// TestC02_LatePrepareAfterRollbackIsNACKed plays C02 at one participant: its Prepare is held
// (in the network, or in the service's own slow callback) while the coordinator times out and
// sends Rollback. Nothing may stay held.
func TestC02_LatePrepareAfterRollbackIsNACKed(t *testing.T) {
	t.Run("held before the handler", func(t *testing.T) {
		f := newFake()
		h := NewHandler(f.callbacks(), NewMemStore())
		arrived, release := make(chan struct{}), make(chan struct{})
		slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-release
			h.ServeHTTP(w, r)
		})
		late := make(chan Reply, 1)
		go func() {
			_, rep := call(t, slow, PhasePrepare, "tx", time.Now().Add(time.Hour))
			late <- rep
		}()
		<-arrived
		mustReply(t, h, PhaseRollback, "tx", ACK, "")
		close(release)
		if rep := <-late; rep.Status != NACK || rep.Reason != ReasonAlreadyRolledBack {
			t.Fatalf("late prepare got %+v, want NACK %q", rep, ReasonAlreadyRolledBack)
		}
		if f.holding() != 0 || f.count(PhasePrepare) != 0 {
			t.Fatalf("late prepare reserved: holds=%d prepare calls=%d", f.holding(), f.count(PhasePrepare))
		}
	})
	t.Run("slow prepare callback", func(t *testing.T) {
		f := newFake()
		f.entered, f.block = make(chan struct{}, 2), make(chan struct{})
		h := NewHandler(f.callbacks(), NewMemStore())
		prep := make(chan Reply, 1)
		go func() {
			_, rep := call(t, h, PhasePrepare, "tx", time.Now().Add(time.Hour))
			prep <- rep
		}()
		<-f.entered // the prepare callback runs and holds the txn lock
		rb := make(chan Reply, 1)
		go func() {
			_, rep := call(t, h, PhaseRollback, "tx", time.Time{})
			rb <- rep
		}()
		close(f.block)
		if rep := <-prep; rep.Status != ACK {
			t.Fatalf("prepare: %+v", rep)
		}
		if rep := <-rb; rep.Status != ACK {
			t.Fatalf("rollback: %+v", rep)
		}
		if f.holding() != 0 || f.count(PhaseRollback) != 1 {
			t.Fatalf("after rollback: holds=%d rollback calls=%d, want 0 and 1", f.holding(), f.count(PhaseRollback))
		}
	})
}

func TestBadRequests(t *testing.T) {
	h := NewHandler(Callbacks{}, NewMemStore(), WithMaxBodyBytes(1024))
	for _, tc := range []struct {
		name, method, path, body, key string
		code                          int
		allow                         bool
	}{
		{"GET", http.MethodGet, "/prepare", "", "", 405, true},
		{"PUT", http.MethodPut, "/commit", `{"transactionId":"t"}`, "", 405, true},
		{"bad JSON", http.MethodPost, "/prepare", `{"transactionId":`, "", 400, false},
		{"not an object", http.MethodPost, "/prepare", `[1]`, "", 400, false},
		{"trailing garbage", http.MethodPost, "/prepare", `{"transactionId":"t"} x`, "", 400, false},
		{"missing id", http.MethodPost, "/commit", `{"deadline":"2030-01-01T00:00:00.000Z"}`, "", 400, false},
		{"long id", http.MethodPost, "/rollback", fmt.Sprintf(`{"transactionId":%q}`, strings.Repeat("x", MaxTransactionIDBytes+1)), "", 400, false},
		{"bad deadline", http.MethodPost, "/prepare", `{"transactionId":"t","deadline":"tomorrow"}`, "", 400, false},
		{"key mismatch", http.MethodPost, "/prepare", `{"transactionId":"t"}`, "t:commit", 400, false},
		{"too large", http.MethodPost, "/prepare", `{"transactionId":"` + strings.Repeat("x", 2000) + `"}`, "", 413, false},
		{"unknown phase", http.MethodPost, "/abort", `{"transactionId":"t"}`, "", 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.key != "" {
				r.Header.Set(IdempotencyKeyHeader, tc.key)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d (body %s)", w.Code, tc.code, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var eb ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Detail == "" {
				t.Fatalf("error body %q: %+v %v", w.Body, eb, err)
			}
			if tc.allow && w.Header().Get("Allow") != http.MethodPost {
				t.Fatalf("405 without Allow: POST")
			}
		})
	}
}

func TestPhaseHandlerIgnoresPath(t *testing.T) {
	h := NewHandler(Callbacks{}, NewMemStore())
	mux := http.NewServeMux()
	mux.Handle("POST /v2/reserve", h.Phase(PhasePrepare))
	mux.Handle("POST /v2/confirm", h.Phase(PhaseCommit))
	for _, path := range []string{"/v2/reserve", "/v2/confirm"} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"transactionId":"x"}`)))
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"ACK"`) {
			t.Fatalf("POST %s: %d %s", path, w.Code, w.Body)
		}
	}
}

func TestWaitingForLockEndsWithContext(t *testing.T) {
	f := newFake()
	f.entered, f.block = make(chan struct{}, 1), make(chan struct{})
	h := NewHandler(f.callbacks(), NewMemStore())
	done := make(chan error, 1)
	go func() {
		_, err := h.Do(context.Background(), PhasePrepare, Request{TransactionID: "t"})
		done <- err
	}()
	<-f.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Do(ctx, PhasePrepare, Request{TransactionID: "t"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with ended ctx while the txn is locked: %v, want context.Canceled", err)
	}
	close(f.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
