package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/checker"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

var quiet = slog.New(slog.DiscardHandler)

type svc struct {
	*demo.Service
	srv *httptest.Server
}

func (s svc) prepareURL() string { return s.srv.URL + "/prepare" }

func start(t *testing.T, cfg demo.Config) svc {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.Exit == nil {
		cfg.Exit = func(code int) { t.Errorf("unexpected exit(%d)", code) }
	}
	s, err := demo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	return svc{s, srv}
}

// send POSTs one protocol call; err is a transport error (a dropped connection).
func send(base string, p participant.Phase, id string) (int, participant.Reply, error) {
	body, _ := json.Marshal(participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now().Add(time.Minute))})
	req, _ := http.NewRequest(http.MethodPost, base+"/"+string(p), bytes.NewReader(body))
	req.Header.Set(participant.IdempotencyKeyHeader, id+":"+string(p))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, participant.Reply{}, err
	}
	defer resp.Body.Close()
	var rep participant.Reply
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			return resp.StatusCode, rep, err
		}
	}
	return resp.StatusCode, rep, nil
}

func must(t *testing.T, s svc, p participant.Phase, id string, want participant.Status, reason string) {
	t.Helper()
	code, rep, err := send(s.srv.URL, p, id)
	if err != nil || code != 200 || rep.Status != want || !strings.Contains(rep.Reason, reason) {
		t.Fatalf("%s %s %s: %d %+v %v; want %s %q", s.Kind(), p, id, code, rep, err, want, reason)
	}
}

func state(t *testing.T, s svc) demo.State {
	t.Helper()
	st, err := checker.FetchState(context.Background(), nil, s.prepareURL())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustCheck(t *testing.T, txns []checker.Txn, ss ...svc) checker.Report {
	t.Helper()
	var urls []string
	for _, s := range ss {
		urls = append(urls, s.prepareURL())
	}
	parts, err := checker.FetchParticipants(context.Background(), nil, urls)
	if err != nil {
		t.Fatal(err)
	}
	r := checker.Check(txns, parts, checker.Options{})
	if !r.OK() {
		t.Fatalf("checker found violations:\n%s", r)
	}
	return r
}

func TestLifecycleAndConservation(t *testing.T) {
	for _, kind := range []string{demo.KindFlight, demo.KindHotel, demo.KindPayment} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, demo.Config{Kind: kind, Capacity: 1000, Unit: 10, Accounts: 2})
			for _, id := range []string{"t1", "t2", "t3"} {
				must(t, s, participant.PhasePrepare, id, participant.ACK, "")
			}
			must(t, s, participant.PhaseCommit, "t1", participant.ACK, "")
			must(t, s, participant.PhaseCommit, "t1", participant.ACK, "")
			must(t, s, participant.PhaseRollback, "t2", participant.ACK, "")
			must(t, s, participant.PhaseRollback, "t2", participant.ACK, "")

			st := state(t, s)
			var total demo.Inventory
			for _, inv := range st.Inventory {
				total.Capacity += inv.Capacity
				total.Free += inv.Free
				total.Held += inv.Held
				total.Sold += inv.Sold
			}
			wantCap := int64(1000 * len(st.Inventory))
			if total != (demo.Inventory{Capacity: wantCap, Free: wantCap - 20, Held: 10, Sold: 10}) {
				t.Fatalf("inventory %+v", st.Inventory)
			}
			if len(st.Holds) != 1 || st.Holds["t3"].Units != 10 {
				t.Fatalf("holds %+v, want t3 holding 10", st.Holds)
			}
			want := map[string]participant.State{"t1": participant.StateCommitted, "t2": participant.StateRolledBack, "t3": participant.StatePrepared}
			for id, s := range want {
				if st.Ledger[id] != s {
					t.Fatalf("ledger %v, want %v", st.Ledger, want)
				}
			}
			must(t, s, participant.PhaseRollback, "t3", participant.ACK, "")
			mustCheck(t, []checker.Txn{
				{ID: "t1", Status: "committed", Participants: []string{s.prepareURL()}},
				{ID: "t2", Status: "rolled_back", Participants: []string{s.prepareURL()}},
				{ID: "t3", Status: "rolled_back", Participants: []string{s.prepareURL()}},
			}, s)
		})
	}
}

func TestSoldOutVotesNACK(t *testing.T) {
	s := start(t, demo.Config{Kind: demo.KindHotel, Capacity: 1})
	must(t, s, participant.PhasePrepare, "a", participant.ACK, "")
	must(t, s, participant.PhasePrepare, "b", participant.NACK, "no rooms left")
	must(t, s, participant.PhasePrepare, "b", participant.NACK, "no rooms left")
	must(t, s, participant.PhaseRollback, "a", participant.ACK, "")
	must(t, s, participant.PhasePrepare, "c", participant.ACK, "")
	if inv := state(t, s).Inventory["rooms"]; inv != (demo.Inventory{Capacity: 1, Held: 1}) {
		t.Fatalf("rooms %+v", inv)
	}
}

// TestRandomTrafficWithFaultsKeepsAtomicity drives the three services like a coordinator
// (prepare all; commit if all ACK, else roll back; retry phase two until ACK) under random
// NACKs, HTTP 500s and dropped connections, then runs the checker.
func TestRandomTrafficWithFaultsKeepsAtomicity(t *testing.T) {
	faults := demo.Faults{NackRate: 0.1, ErrorRate: 0.1, DropRate: 0.1}
	ss := []svc{
		start(t, demo.Config{Kind: demo.KindFlight, Seed: 1, Faults: faults}),
		start(t, demo.Config{Kind: demo.KindHotel, Seed: 2, Faults: faults}),
		start(t, demo.Config{Kind: demo.KindPayment, Seed: 3, Faults: faults}),
	}
	const n = 150
	txns := make([]checker.Txn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("tx-%03d", i)
			txn := checker.Txn{ID: id, Status: "committed"}
			for _, s := range ss {
				txn.Participants = append(txn.Participants, s.prepareURL())
				if code, rep, err := send(s.srv.URL, participant.PhasePrepare, id); err != nil || code != 200 || rep.Status != participant.ACK {
					txn.Status = "rolled_back" // presumed abort; keep asking the others
				}
			}
			phase := participant.PhaseCommit
			if txn.Status != "committed" {
				phase = participant.PhaseRollback
			}
			for _, s := range ss {
				for try := 0; ; try++ {
					if try == 50 {
						t.Errorf("%s %s at %s: no ACK after 50 tries", phase, id, s.Kind())
						txn.Status = "rolling_back"
						break
					}
					if code, rep, err := send(s.srv.URL, phase, id); err == nil && code == 200 {
						if rep.Status != participant.ACK {
							t.Errorf("%s %s at %s: %+v", phase, id, s.Kind(), rep)
						}
						break
					}
				}
			}
			txns[i] = txn
		}()
	}
	wg.Wait()
	r := mustCheck(t, txns, ss...)
	if r.ByStatus["committed"] == 0 || r.ByStatus["rolled_back"] == 0 {
		t.Fatalf("want both outcomes: %v", r.ByStatus)
	}
	results := map[string]int{}
	for _, s := range ss {
		for _, e := range s.Requests() {
			results[e.Result]++
		}
	}
	for _, want := range []string{"ACK", "NACK", "http 500", "dropped"} {
		if results[want] == 0 {
			t.Fatalf("no %q in the request logs: %v", want, results)
		}
	}
}

func TestFaultKnobs(t *testing.T) {
	t.Run("nack", func(t *testing.T) {
		s := start(t, demo.Config{Kind: demo.KindFlight, Faults: demo.Faults{NackRate: 1}})
		must(t, s, participant.PhasePrepare, "x", participant.NACK, "injected NACK")
		s.SetFaults(demo.Faults{})
		must(t, s, participant.PhasePrepare, "x", participant.NACK, "injected NACK") // the vote stands
		if st := state(t, s); st.Ledger["x"] != participant.StateRefused || len(st.Holds) != 0 {
			t.Fatalf("after injected NACK: %+v", st)
		}
	})
	t.Run("http 500", func(t *testing.T) {
		s := start(t, demo.Config{Kind: demo.KindFlight, Faults: demo.Faults{ErrorRate: 1}})
		if code, _, err := send(s.srv.URL, participant.PhasePrepare, "x"); err != nil || code != 500 {
			t.Fatalf("got %d %v, want 500", code, err)
		}
		if st := state(t, s); len(st.Ledger) != 0 {
			t.Fatalf("an injected 500 did work: %+v", st.Ledger)
		}
	})
	t.Run("drop after work", func(t *testing.T) {
		s := start(t, demo.Config{Kind: demo.KindFlight, Faults: demo.Faults{DropRate: 1}})
		if _, _, err := send(s.srv.URL, participant.PhasePrepare, "x"); err == nil {
			t.Fatal("dropped request got a reply")
		}
		if st := state(t, s); st.Ledger["x"] != participant.StatePrepared || st.Holds["x"].Units != 1 {
			t.Fatalf("dropped prepare was not processed: %+v", st)
		}
		s.SetFaults(demo.Faults{})
		must(t, s, participant.PhasePrepare, "x", participant.ACK, "") // the retry gets the vote
		if log := s.Requests(); len(log) != 2 || log[0].Result != "dropped" || log[1].Result != "ACK" {
			t.Fatalf("request log %+v", log)
		}
	})
	t.Run("exit after work", func(t *testing.T) {
		exited := make(chan int, 1)
		s := start(t, demo.Config{Kind: demo.KindPayment, Faults: demo.Faults{ExitRate: 1}, Exit: func(c int) { exited <- c }})
		if _, _, err := send(s.srv.URL, participant.PhasePrepare, "x"); err == nil {
			t.Fatal("request that made the service exit got a reply")
		}
		if c := <-exited; c != 1 {
			t.Fatalf("exit code %d", c)
		}
		if st := state(t, s); st.Ledger["x"] != participant.StatePrepared {
			t.Fatalf("prepare before exit not processed: %v", st.Ledger)
		}
	})
	t.Run("delay", func(t *testing.T) {
		s := start(t, demo.Config{Kind: demo.KindHotel, Faults: demo.Faults{DelayMS: 40}})
		begin := time.Now()
		must(t, s, participant.PhasePrepare, "x", participant.ACK, "")
		if d := time.Since(begin); d < 40*time.Millisecond {
			t.Fatalf("prepare answered after %v, want >= 40ms", d)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		if _, err := demo.New(demo.Config{Kind: demo.KindFlight, DataDir: t.TempDir(), Faults: demo.Faults{DropRate: 1.5}}); err == nil {
			t.Fatal("drop rate 1.5 accepted")
		}
		if _, err := demo.New(demo.Config{Kind: "train", DataDir: t.TempDir()}); err == nil {
			t.Fatal("kind train accepted")
		}
	})
}

func TestSeedMakesFaultsReproducible(t *testing.T) {
	votes := func(seed uint64) string {
		s := start(t, demo.Config{Kind: demo.KindFlight, Seed: seed, Faults: demo.Faults{NackRate: 0.5}})
		var b strings.Builder
		for i := range 40 {
			_, rep, _ := send(s.srv.URL, participant.PhasePrepare, fmt.Sprint(i))
			b.WriteString(string(rep.Status)[:1])
		}
		return b.String()
	}
	a, b, c := votes(7), votes(7), votes(8)
	if a != b {
		t.Fatalf("same seed, different votes:\n%s\n%s", a, b)
	}
	if a == c {
		t.Fatalf("different seeds, same 40 votes: %s", a)
	}
}

func TestControlEndpoint(t *testing.T) {
	exited := make(chan int, 1)
	s := start(t, demo.Config{Kind: demo.KindFlight, Seed: 5, Faults: demo.Faults{DelayMS: 1}, Exit: func(c int) { exited <- c }})
	post := func(body string) (int, demo.Control) {
		resp, err := http.Post(s.srv.URL+"/control", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c demo.Control
		_ = json.NewDecoder(resp.Body).Decode(&c)
		return resp.StatusCode, c
	}
	if code, c := post(`{"nackRate":1}`); code != 200 || c.NackRate != 1 || c.DelayMS != 1 || c.Seed != 5 {
		t.Fatalf("partial update: %d %+v", code, c)
	}
	must(t, s, participant.PhasePrepare, "x", participant.NACK, "injected")
	for _, bad := range []string{`{"dropRate":2}`, `{"errorRate":-0.1}`, `{"delayMs":-5}`, `{"nackRate":"x"}`, `nope`} {
		if code, _ := post(bad); code != 400 {
			t.Fatalf("POST /control %s: %d, want 400", bad, code)
		}
	}
	if got := s.Faults(); got != (demo.Faults{NackRate: 1, DelayMS: 1}) {
		t.Fatalf("a rejected update changed the knobs: %+v", got)
	}
	if code, c := post(`{"seed":9,"nackRate":0}`); code != 200 || c.Seed != 9 || c.NackRate != 0 {
		t.Fatalf("reseed: %d %+v", code, c)
	}
	resp, err := http.Get(s.srv.URL + "/control")
	if err != nil {
		t.Fatal(err)
	}
	var c demo.Control
	_ = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if c.Seed != 9 || c.DelayMS != 1 {
		t.Fatalf("GET /control: %+v", c)
	}
	if code, _ := post(`{"exit":true}`); code != 200 {
		t.Fatalf("exit: %d", code)
	}
	if c := <-exited; c != 1 {
		t.Fatalf("exit code %d", c)
	}
}

func TestRestartKeepsInventoryAndRecords(t *testing.T) {
	dir := t.TempDir()
	s1, err := demo.New(demo.Config{Kind: demo.KindFlight, DataDir: dir, Capacity: 10, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := s1.Handler()
	do := func(h http.Handler, p participant.Phase, id string) string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/"+string(p), strings.NewReader(`{"transactionId":"`+id+`"}`)))
		return w.Body.String()
	}
	do(h, participant.PhasePrepare, "a")
	do(h, participant.PhasePrepare, "b")
	do(h, participant.PhaseCommit, "a")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := demo.New(demo.Config{Kind: demo.KindFlight, DataDir: dir, Capacity: 99, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if out := do(s2.Handler(), participant.PhaseCommit, "a"); !strings.Contains(out, `"ACK"`) {
		t.Fatalf("repeated commit after restart: %s", out)
	}
	if out := do(s2.Handler(), participant.PhaseCommit, "b"); !strings.Contains(out, `"ACK"`) {
		t.Fatalf("commit of a txn prepared before restart: %s", out)
	}
	st, err := s2.State()
	if err != nil {
		t.Fatal(err)
	}
	if inv := st.Inventory["seats"]; inv != (demo.Inventory{Capacity: 10, Free: 8, Sold: 2}) {
		t.Fatalf("seats after restart %+v, want capacity 10 kept, 2 sold", inv)
	}
}

// TestC02_DemoLatePrepareLeavesNoHold plays C02 against a demo service: its Prepare is held
// in flight while the coordinator rolls back; when it lands it must be refused and hold
// nothing.
func TestC02_DemoLatePrepareLeavesNoHold(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	fast := start(t, demo.Config{Kind: demo.KindFlight})
	slow := start(t, demo.Config{Kind: demo.KindHotel, Gate: func(_ context.Context, p participant.Phase, _ string) {
		if p == participant.PhasePrepare {
			close(arrived)
			<-release
		}
	}})
	must(t, fast, participant.PhasePrepare, "tx", participant.ACK, "")
	late := make(chan participant.Reply, 1)
	go func() {
		_, rep, _ := send(slow.srv.URL, participant.PhasePrepare, "tx")
		late <- rep
	}()
	<-arrived
	// The coordinator's deadline passes: it decides rollback and tells every participant.
	must(t, fast, participant.PhaseRollback, "tx", participant.ACK, "")
	must(t, slow, participant.PhaseRollback, "tx", participant.ACK, "")
	close(release)
	if rep := <-late; rep.Status != participant.NACK || rep.Reason != participant.ReasonAlreadyRolledBack {
		t.Fatalf("late prepare: %+v", rep)
	}
	st := state(t, slow)
	if len(st.Holds) != 0 || st.Inventory["rooms"].Held != 0 || st.Ledger["tx"] != participant.StateRolledBack {
		t.Fatalf("late prepare left %+v", st)
	}
	mustCheck(t, []checker.Txn{{ID: "tx", Status: "rolled_back", Participants: []string{fast.prepareURL(), slow.prepareURL()}}}, fast, slow)
}

func TestRequestLogAndMethods(t *testing.T) {
	s := start(t, demo.Config{Kind: demo.KindPayment})
	must(t, s, participant.PhasePrepare, "a", participant.ACK, "")
	must(t, s, participant.PhaseCommit, "a", participant.ACK, "")
	must(t, s, participant.PhaseRollback, "b", participant.ACK, "")
	resp, err := http.Get(s.srv.URL + "/requests?transactionId=a")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Requests []demo.LoggedRequest `json:"requests"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if len(doc.Requests) != 2 || doc.Requests[0].Phase != participant.PhasePrepare || doc.Requests[1].Phase != participant.PhaseCommit ||
		doc.Requests[0].Received.IsZero() || doc.Requests[1].Result != "ACK" {
		t.Fatalf("requests for a: %+v", doc.Requests)
	}
	resp, err = http.Post(s.srv.URL+"/prepare", "application/json", strings.NewReader(strings.Repeat(" ", participant.DefaultMaxBodyBytes+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d, want 413", resp.StatusCode)
	}
	resp, err = http.Get(s.srv.URL + "/prepare")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("GET /prepare: %d %s", resp.StatusCode, body)
	}
}
