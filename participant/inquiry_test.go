package participant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/txcoord/txcoord/participant/protocol"
)

// fakeCluster is a coordinator that never sends phase two: it only answers inquiries, with
// what answer returns for the n-th inquiry (from 1) about a transaction.
type fakeCluster struct {
	srv    *httptest.Server
	answer func(id string, n int, w http.ResponseWriter)

	mu  sync.Mutex
	got []inquiry
}

type inquiry struct {
	id, deadline string
	at           time.Time
}

func newFakeCluster(t *testing.T, answer func(id string, n int, w http.ResponseWriter)) *fakeCluster {
	c := &fakeCluster{answer: answer}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/v1/transactions/")
		id, ok2 := strings.CutSuffix(id, "/outcome")
		if r.Method != http.MethodGet || !ok || !ok2 {
			http.Error(w, `{"error":"not_found","detail":"no such route"}`, http.StatusNotFound)
			return
		}
		c.mu.Lock()
		c.got = append(c.got, inquiry{id: id, deadline: r.URL.Query().Get("deadline"), at: time.Now()})
		n := 0
		for _, q := range c.got {
			if q.id == id {
				n++
			}
		}
		c.mu.Unlock()
		c.answer(id, n, w)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCluster) inquiries(id string) []inquiry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []inquiry
	for _, q := range c.got {
		if q.id == id {
			out = append(out, q)
		}
	}
	return out
}

func answerJSON(w http.ResponseWriter, id, outcome string) {
	w.Header().Set("Content-Type", "application/json")
	if outcome == protocol.OutcomePending {
		w.Header().Set("Retry-After", "0")
	}
	fmt.Fprintf(w, `{"transactionId":%q,"outcome":%q}`, id, outcome)
}

// inquiringHandler returns a Handler with short inquiry timings and its Run running until
// the test ends; Run must have returned by then (no goroutine left behind).
func inquiringHandler(t *testing.T, f *fakeService, store Store, opts ...Option) *Handler {
	t.Helper()
	h := NewHandler(f.callbacks(), store, append([]Option{WithInquiryGrace(20 * time.Millisecond),
		WithInquiryBackoff(10*time.Millisecond, 100*time.Millisecond)}, opts...)...)
	runHandler(t, h)
	return h
}

func runHandler(t *testing.T, h *Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30 s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// prepare sends a Prepare with an inquiry list and returns its deadline string.
func prepareWithInquiry(t *testing.T, h *Handler, id string, in time.Duration, urls ...string) string {
	t.Helper()
	dl := protocol.FormatDeadline(time.Now().Add(in))
	reply, err := h.Do(context.Background(), PhasePrepare, Request{TransactionID: id, Deadline: dl, Inquiry: urls})
	if err != nil || reply.Status != ACK {
		t.Fatalf("prepare %s: %+v, %v", id, reply, err)
	}
	return dl
}

// eventually polls cond until it holds, failing the test after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stateOf(t *testing.T, s Store, id string) State {
	t.Helper()
	rec, found, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		return ""
	}
	return rec.State
}

// A participant that holds an ACKed transaction past its deadline asks, keeps asking while
// the answer is pending, and applies committed exactly as a Commit: the callback runs once,
// and a Commit call that still arrives later is ACKed without running it again.
func TestInquiryPendingThenCommitted(t *testing.T) {
	c := newFakeCluster(t, func(id string, n int, w http.ResponseWriter) {
		if n < 3 {
			answerJSON(w, id, protocol.OutcomePending)
			return
		}
		answerJSON(w, id, protocol.OutcomeCommitted)
	})
	f, store := newFake(), NewMemStore()
	h := inquiringHandler(t, f, store)
	dl := prepareWithInquiry(t, h, "t1", 100*time.Millisecond, c.srv.URL)

	eventually(t, "the record is committed", func() bool { return stateOf(t, store, "t1") == StateCommitted })
	qs := c.inquiries("t1")
	if len(qs) < 3 {
		t.Fatalf("applied after %d inquiries; the first two answered pending", len(qs))
	}
	deadline, _ := time.Parse(time.RFC3339Nano, dl)
	for _, q := range qs {
		if q.deadline != dl {
			t.Errorf("inquiry sent deadline %q, want the Prepare's %q", q.deadline, dl)
		}
		if q.at.Before(deadline) {
			t.Errorf("inquiry at %v, before the deadline %v", q.at, deadline)
		}
	}
	mustReply(t, h, PhaseCommit, "t1", ACK, "")
	if n := f.count(PhaseCommit); n != 1 {
		t.Fatalf("commit callback ran %d times, want once", n)
	}
	if f.count(PhaseRollback) != 0 {
		t.Fatal("rollback callback ran")
	}
}

// rolled_back (a decision, or the cluster's presumed abort) is applied as a Rollback.
func TestInquiryRolledBack(t *testing.T) {
	c := newFakeCluster(t, func(id string, _ int, w http.ResponseWriter) { answerJSON(w, id, protocol.OutcomeRolledBack) })
	f, store := newFake(), NewMemStore()
	h := inquiringHandler(t, f, store)
	prepareWithInquiry(t, h, "t1", 50*time.Millisecond, c.srv.URL)
	eventually(t, "the record is rolled back", func() bool { return stateOf(t, store, "t1") == StateRolledBack })
	if f.holding() != 0 {
		t.Fatal("the service still holds the transaction")
	}
	mustReply(t, h, PhaseRollback, "t1", ACK, "")
	if n := f.count(PhaseRollback); n != 1 || f.count(PhaseCommit) != 0 {
		t.Fatalf("rollback ran %d times and commit %d, want 1 and 0", n, f.count(PhaseCommit))
	}
}

// A node that does not answer (connection refused) or answers 503 makes the participant
// ask the next node of the list.
func TestInquiryAsksTheNextNode(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	busy := newFakeCluster(t, func(_ string, _ int, w http.ResponseWriter) {
		w.Header().Set("Retry-After", "0")
		http.Error(w, `{"error":"no_leader","detail":"election"}`, http.StatusServiceUnavailable)
	})
	up := newFakeCluster(t, func(id string, _ int, w http.ResponseWriter) { answerJSON(w, id, protocol.OutcomeRolledBack) })
	f, store := newFake(), NewMemStore()
	h := inquiringHandler(t, f, store)
	prepareWithInquiry(t, h, "t1", 50*time.Millisecond, down.URL, busy.srv.URL, up.srv.URL)
	eventually(t, "the record is rolled back", func() bool { return stateOf(t, store, "t1") == StateRolledBack })
	if len(busy.inquiries("t1")) == 0 || len(up.inquiries("t1")) == 0 {
		t.Fatalf("inquiries: %d to the busy node, %d to the up node; want both asked", len(busy.inquiries("t1")), len(up.inquiries("t1")))
	}
}

// Answers that are not a valid decision about this transaction are never applied: the
// participant keeps holding and keeps asking until a valid one comes.
func TestInquiryGarbageAnswersAreNotApplied(t *testing.T) {
	garbage := []func(id string, w http.ResponseWriter){
		func(id string, w http.ResponseWriter) { io.WriteString(w, "committed") },
		func(id string, w http.ResponseWriter) { answerJSON(w, "other-"+id, protocol.OutcomeCommitted) },
		func(id string, w http.ResponseWriter) { answerJSON(w, id, "maybe") },
		func(id string, w http.ResponseWriter) {
			fmt.Fprintf(w, `{"transactionId":%q,"outcome":"committed"}{"x":1}`, id)
		},
		func(id string, w http.ResponseWriter) {
			fmt.Fprintf(w, `{"transactionId":%q,"outcome":"committed","pad":"%s"}`, id, strings.Repeat("x", protocol.MaxReplyBytes))
		},
		func(id string, w http.ResponseWriter) { w.WriteHeader(http.StatusOK) },
		func(id string, w http.ResponseWriter) {
			w.WriteHeader(http.StatusConflict)
			answerJSON(w, id, protocol.OutcomeCommitted)
		},
		func(id string, w http.ResponseWriter) { io.WriteString(w, "null") },
	}
	var mu sync.Mutex
	open := false
	c := newFakeCluster(t, func(id string, n int, w http.ResponseWriter) {
		mu.Lock()
		o := open
		mu.Unlock()
		if !o {
			garbage[(n-1)%len(garbage)](id, w)
			return
		}
		answerJSON(w, id, protocol.OutcomeRolledBack)
	})
	f, store := newFake(), NewMemStore()
	h := inquiringHandler(t, f, store, WithInquiryBackoff(time.Millisecond, 5*time.Millisecond))
	prepareWithInquiry(t, h, "t1", 20*time.Millisecond, c.srv.URL)
	eventually(t, "every garbage answer was given twice", func() bool { return len(c.inquiries("t1")) >= 2*len(garbage) })
	if f.count(PhaseCommit) != 0 || f.count(PhaseRollback) != 0 || stateOf(t, store, "t1") != StatePrepared {
		t.Fatalf("a garbage answer was applied: commit %d, rollback %d, record %q", f.count(PhaseCommit), f.count(PhaseRollback), stateOf(t, store, "t1"))
	}
	mu.Lock()
	open = true
	mu.Unlock()
	eventually(t, "the valid answer was applied", func() bool { return f.count(PhaseRollback) > 0 })
}

// A Commit call that arrives while the inquiry's committed answer is being applied runs
// the commit callback once between them.
func TestInquiryRacingCommitRunsCallbackOnce(t *testing.T) {
	var h *Handler
	var calls sync.WaitGroup
	c := newFakeCluster(t, func(id string, _ int, w http.ResponseWriter) {
		calls.Add(1)
		go func() {
			defer calls.Done()
			if reply, err := h.Do(context.Background(), PhaseCommit, Request{TransactionID: id}); err != nil || reply.Status != ACK {
				t.Errorf("Commit call of %s: %+v, %v", id, reply, err)
			}
		}()
		answerJSON(w, id, protocol.OutcomeCommitted)
	})
	f, store := newFake(), NewMemStore()
	h = inquiringHandler(t, f, store)
	const n = 20
	for i := range n {
		prepareWithInquiry(t, h, fmt.Sprintf("t%d", i), 30*time.Millisecond, c.srv.URL)
	}
	eventually(t, "every transaction committed", func() bool {
		for i := range n {
			if stateOf(t, store, fmt.Sprintf("t%d", i)) != StateCommitted {
				return false
			}
		}
		return true
	})
	calls.Wait()
	if got := f.count(PhaseCommit); got != n {
		t.Fatalf("commit callback ran %d times for %d transactions, want once each", got, n)
	}
}

// A Handler restarted over the same BoltStore while it waits for an outcome resumes
// asking, and applies the answer with the new Handler's callbacks.
func TestInquiryResumesAfterRestart(t *testing.T) {
	c := newFakeCluster(t, func(id string, _ int, w http.ResponseWriter) { answerJSON(w, id, protocol.OutcomeCommitted) })
	path := filepath.Join(t.TempDir(), "p.db")
	store, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	f1 := newFake()
	h1 := NewHandler(f1.callbacks(), store, WithInquiryGrace(time.Hour)) // would ask much later
	stop := runHandler(t, h1)
	prepareWithInquiry(t, h1, "t1", 50*time.Millisecond, c.srv.URL)
	stop()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if len(c.inquiries("t1")) != 0 || f1.count(PhaseCommit) != 0 {
		t.Fatal("the first Handler asked; the test needs it not to")
	}

	store, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after Run has stopped (cleanups run last first)
	f2 := newFake()
	inquiringHandler(t, f2, store)
	eventually(t, "the restarted Handler committed", func() bool { return stateOf(t, store, "t1") == StateCommitted })
	if n := f2.count(PhaseCommit); n != 1 {
		t.Fatalf("the restarted Handler's commit callback ran %d times, want once", n)
	}
}

// Run ends when its context does, also with an inquiry in flight to a node that never
// answers, and a second concurrent Run is refused.
func TestRunStopsWithItsContext(t *testing.T) {
	entered := make(chan struct{}, 1)
	c := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-r.Context().Done() // never answers
	}))
	t.Cleanup(c.Close)
	f := newFake()
	h := NewHandler(f.callbacks(), NewMemStore(), WithInquiryGrace(time.Millisecond))
	stop := runHandler(t, h)
	eventually(t, "Run is running", func() bool {
		h.inq.mu.Lock()
		defer h.inq.mu.Unlock()
		return h.inq.running
	})
	if err := h.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run: %v, want ErrAlreadyRunning", err)
	}
	prepareWithInquiry(t, h, "t1", 10*time.Millisecond, c.URL)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no inquiry arrived")
	}
	stop() // fails the test if Run does not return
}

// A Prepare whose inquiry list is not a list of base URLs is a bad request: nothing runs.
func TestPrepareWithBadInquiryIsRefused(t *testing.T) {
	f := newFake()
	h := NewHandler(f.callbacks(), NewMemStore())
	for _, urls := range [][]string{{"ftp://node1"}, {"http://node1?x=1"}, {""}, make([]string, protocol.MaxInquiryURLs+1)} {
		_, err := h.Do(context.Background(), PhasePrepare, Request{TransactionID: "t1", Inquiry: urls})
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("inquiry %q: %v, want ErrBadRequest", urls, err)
		}
	}
	if f.count(PhasePrepare) != 0 {
		t.Fatal("the prepare callback ran")
	}
}

// BoltStore reads the records that the build before record versions wrote (golden file
// testdata/records-v1.db, written by testdata/genrecords at 21435f8), resumes nothing for
// a prepared one without an inquiry list, and writes version 2 beside them.
func TestBoltStoreReadsVersion1(t *testing.T) {
	raw, err := os.ReadFile("testdata/records-v1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "v1.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 12, 2, 6, 30, 0, 0, time.UTC)
	want := map[string]Record{
		"t-prepared":  {TransactionID: "t-prepared", State: StatePrepared, Deadline: at.Add(500 * time.Millisecond), Updated: at, Payload: []byte(`{"sku":"widget-7","qty":2}`), Term: 3},
		"t-committed": {TransactionID: "t-committed", State: StateCommitted, Deadline: at.Add(500 * time.Millisecond), Updated: at, Term: 3},
		"t-refused":   {TransactionID: "t-refused", State: StateRefused, Reason: "no rooms", Deadline: at.Add(500 * time.Millisecond), Updated: at, Term: 2},
		"t-tombstone": {TransactionID: "t-tombstone", State: StateRolledBack, Tombstone: true, Updated: at, Term: 4},
	}
	for id, w := range want {
		got, found, err := s.Get(context.Background(), id)
		if err != nil || !found {
			t.Fatalf("%s: found=%v err=%v", id, found, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s: read %+v, want %+v", id, got, w)
		}
	}
	prep, err := s.Prepared(context.Background())
	if err != nil || len(prep) != 1 || prep[0].TransactionID != "t-prepared" {
		t.Fatalf("Prepared: %v, %v; want t-prepared only", prep, err)
	}
	rec := Record{TransactionID: "t-new", State: StatePrepared, Updated: at, Inquiry: []string{"http://node1:8081"}}
	if err := s.Put(context.Background(), rec, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Get(context.Background(), "t-new")
	if err != nil || len(got.Inquiry) != 1 || got.Inquiry[0] != "http://node1:8081" {
		t.Fatalf("version 2 record read back as %+v, %v", got, err)
	}
	// A record from a later build is refused, not read without what it added.
	err = s.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(RecordsBucket)).Put([]byte("t-future"), []byte(`{"v":3,"transactionId":"t-future","state":"prepared"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(context.Background(), "t-future"); err == nil || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("record of version 3: %v, want an error naming the version", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "junk": 0, "-1": 0, "999999": maxRetryAfter,
		now.Add(10 * time.Second).Format(http.TimeFormat): 10 * time.Second,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

// A pending answer's Retry-After holds the next inquiry back at least that long, even
// when the backoff alone would ask sooner; the token option is sent as a bearer token.
func TestInquiryHonoursRetryAfterAndSendsToken(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	c := newFakeCluster(t, func(id string, n int, w http.ResponseWriter) {
		mu.Lock()
		auth = append(auth, w.Header().Get("X-Auth"))
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			fmt.Fprintf(w, `{"transactionId":%q,"outcome":"pending"}`, id)
			return
		}
		answerJSON(w, id, protocol.OutcomeCommitted)
	})
	inner := c.srv.Config.Handler
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth", r.Header.Get("Authorization")) // read back by answer
		inner.ServeHTTP(w, r)
	})
	f, store := newFake(), NewMemStore()
	h := inquiringHandler(t, f, store, WithInquiryBackoff(time.Millisecond, 5*time.Millisecond), WithInquiryToken("s3cret"))
	prepareWithInquiry(t, h, "t1", 20*time.Millisecond, c.srv.URL)
	eventually(t, "the record is committed", func() bool { return stateOf(t, store, "t1") == StateCommitted })
	qs := c.inquiries("t1")
	if len(qs) < 2 {
		t.Fatalf("%d inquiries, want at least 2", len(qs))
	}
	if gap := qs[1].at.Sub(qs[0].at); gap < time.Second {
		t.Fatalf("asked again %v after a pending answer with Retry-After: 1", gap)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range auth {
		if a != "Bearer s3cret" {
			t.Fatalf("Authorization %q, want the bearer token", a)
		}
	}
}
