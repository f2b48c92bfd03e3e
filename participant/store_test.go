package participant

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	bolt "go.etcd.io/bbolt"
)

// testStoreContract checks the Store contract every implementation must keep.
func testStoreContract(t *testing.T, s Store) {
	ctx := context.Background()
	if _, found, err := s.Get(ctx, "none"); found || err != nil {
		t.Fatalf("Get of a missing record: found=%v err=%v", found, err)
	}
	rec := Record{TransactionID: "a", State: StatePrepared, Deadline: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Updated: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)}
	ran := 0
	if err := s.Put(ctx, rec, func(context.Context) error { ran++; return nil }); err != nil || ran != 1 {
		t.Fatalf("Put: err=%v, effect ran %d times", err, ran)
	}
	got, found, err := s.Get(ctx, "a")
	if err != nil || !found || !got.Deadline.Equal(rec.Deadline) || got.State != rec.State {
		t.Fatalf("Get after Put: %+v %v %v", got, found, err)
	}
	boom := errors.New("boom")
	rec2 := rec
	rec2.State = StateCommitted
	if err := s.Put(ctx, rec2, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Put with failing effect returned %v, want the effect's error", err)
	}
	if got, _, _ := s.Get(ctx, "a"); got.State != StatePrepared {
		t.Fatalf("failing effect still wrote the record: %+v", got)
	}
	if err := s.Put(ctx, rec2, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Get(ctx, "a"); got.State != StateCommitted {
		t.Fatalf("Put did not replace the record: %+v", got)
	}
}

func TestMemStoreContract(t *testing.T) { testStoreContract(t, NewMemStore()) }

func TestBoltStoreContract(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testStoreContract(t, s)
}

func TestBoltStorePrune(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	old, cutoff, fresh := time.Unix(100, 0), time.Unix(200, 0), time.Unix(300, 0)
	for _, r := range []Record{
		{TransactionID: "old-committed", State: StateCommitted, Updated: old},
		{TransactionID: "old-tombstone", State: StateRolledBack, Tombstone: true, Updated: old},
		{TransactionID: "old-prepared", State: StatePrepared, Updated: old},
		{TransactionID: "old-refused", State: StateRefused, Updated: old},
		{TransactionID: "new-committed", State: StateCommitted, Updated: fresh},
	} {
		if err := s.Put(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Prune(cutoff)
	if err != nil || n != 2 {
		t.Fatalf("Prune: %d %v, want 2 deleted", n, err)
	}
	var left []string
	if err := s.ForEach(nil, func(r Record) error { left = append(left, r.TransactionID); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(left, ","); got != "new-committed,old-prepared,old-refused" {
		t.Fatalf("left after prune: %s", got)
	}
}

// effectCount reads the counter that boltEffects writes for txn id and phase p.
func effectCount(t *testing.T, db *bolt.DB, id string, p Phase) uint64 {
	t.Helper()
	var n uint64
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("effects")); b != nil {
			if v := b.Get([]byte(id + ":" + string(p))); v != nil {
				n = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// boltEffects are callbacks that count their effects in the store's own database, through
// the transaction hook; runs counts every callback run, panicAfterWrite makes the next
// callback crash after writing its effect.
type boltEffects struct {
	runs            int
	panicAfterWrite bool
}

func (e *boltEffects) bump(ctx context.Context, id string, p Phase) error {
	e.runs++
	tx := BoltTx(ctx)
	if tx == nil {
		return errors.New("no bolt transaction in ctx")
	}
	b, err := tx.CreateBucketIfNotExists([]byte("effects"))
	if err != nil {
		return err
	}
	key := []byte(id + ":" + string(p))
	var n uint64
	if v := b.Get(key); v != nil {
		n = binary.BigEndian.Uint64(v)
	}
	if err := b.Put(key, binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
		return err
	}
	if e.panicAfterWrite {
		e.panicAfterWrite = false
		panic("crash after writing the effect")
	}
	return nil
}

func (e *boltEffects) callbacks() Callbacks {
	return Callbacks{
		Prepare:  func(ctx context.Context, id string, _ time.Time) error { return e.bump(ctx, id, PhasePrepare) },
		Commit:   func(ctx context.Context, id string) error { return e.bump(ctx, id, PhaseCommit) },
		Rollback: func(ctx context.Context, id string) error { return e.bump(ctx, id, PhaseRollback) },
	}
}

// TestCrashBetweenCommitAndReply: the participant commits locally and dies before its reply
// leaves. After restart the coordinator's retry must be acknowledged with no second effect.
func TestCrashBetweenCommitAndReply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	eff := &boltEffects{}
	h := NewHandler(eff.callbacks(), s)
	mustReply(t, h, PhasePrepare, "t", ACK, "")
	// The commit runs to the end, but its reply is lost with the process.
	if _, err := h.Do(context.Background(), PhaseCommit, Request{TransactionID: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eff = &boltEffects{}
	h = NewHandler(eff.callbacks(), s)
	for range 3 {
		mustReply(t, h, PhaseCommit, "t", ACK, "")
	}
	if eff.runs != 0 {
		t.Fatalf("retried commit after restart ran the callback %d times, want 0", eff.runs)
	}
	if n := effectCount(t, s.DB(), "t", PhaseCommit); n != 1 {
		t.Fatalf("commit effect applied %d times, want 1", n)
	}
}

// TestCrashInsideCallbackLeavesNoEffect: with BoltStore's transaction hook, a crash after
// the callback wrote its effect but before the record was written leaves neither, and the
// retry applies the effect exactly once.
func TestCrashInsideCallbackLeavesNoEffect(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eff := &boltEffects{}
	h := NewHandler(eff.callbacks(), s)
	mustReply(t, h, PhasePrepare, "t", ACK, "")
	eff.panicAfterWrite = true
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("callback did not crash")
			}
		}()
		_, _ = h.Do(context.Background(), PhaseCommit, Request{TransactionID: "t"})
	}()
	if n := effectCount(t, s.DB(), "t", PhaseCommit); n != 0 {
		t.Fatalf("crashed commit left %d effects, want 0", n)
	}
	if rec, _, _ := s.Get(context.Background(), "t"); rec.State != StatePrepared {
		t.Fatalf("crashed commit left record %+v, want prepared", rec)
	}
	mustReply(t, h, PhaseCommit, "t", ACK, "")
	mustReply(t, h, PhaseCommit, "t", ACK, "")
	if n := effectCount(t, s.DB(), "t", PhaseCommit); n != 1 {
		t.Fatalf("commit effect applied %d times, want 1", n)
	}
}

// TestPrepareErrorDiscardsItsWrites: a prepare callback that writes and then votes NACK
// leaves nothing behind in an atomic store.
func TestPrepareErrorDiscardsItsWrites(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eff := &boltEffects{}
	h := NewHandler(Callbacks{Prepare: func(ctx context.Context, id string, _ time.Time) error {
		if err := eff.bump(ctx, id, PhasePrepare); err != nil {
			return err
		}
		return errors.New("over budget")
	}}, s)
	mustReply(t, h, PhasePrepare, "t", NACK, "over budget")
	if n := effectCount(t, s.DB(), "t", PhasePrepare); n != 0 {
		t.Fatalf("NACKed prepare left %d effects", n)
	}
	if rec, _, _ := s.Get(context.Background(), "t"); rec.State != StateRefused || rec.Reason != "over budget" {
		t.Fatalf("record %+v, want refused with reason", rec)
	}
}

func TestMountOnEchoAndServeMux(t *testing.T) {
	f := newFake()
	h := NewHandler(f.callbacks(), NewMemStore())
	e := echo.New()
	e.POST("/tx/:phase", echo.WrapHandler(h))
	mux := http.NewServeMux()
	mux.Handle("POST /svc/{phase}", h)
	for _, tc := range []struct {
		name, prepare string
		srv           http.Handler
	}{{"echo", "/tx/prepare", e}, {"ServeMux", "/svc/prepare", mux}} {
		ts := httptest.NewServer(tc.srv)
		defer ts.Close()
		eps, err := Derive(ts.URL + tc.prepare)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []Phase{PhasePrepare, PhaseCommit} {
			resp, err := http.Post(eps.URL(p), "application/json", strings.NewReader(`{"transactionId":"`+tc.name+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ACK"`) {
				t.Fatalf("%s %s: %d %s", tc.name, eps.URL(p), resp.StatusCode, body)
			}
		}
	}
	if f.count(PhasePrepare) != 2 || f.count(PhaseCommit) != 2 {
		t.Fatalf("callbacks: %v", f.calls)
	}
}
