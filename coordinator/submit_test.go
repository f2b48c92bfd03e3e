package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
)

// TestMaxInFlight: beyond MaxInFlight, Submit returns ErrBusy and writes nothing to the
// log; once transactions finish, Submit accepts again.
func TestMaxInFlight(t *testing.T) {
	fps := newFPs(t, 1)
	fps[0].Set(prepare, participanttest.Hang())
	cfg := fastCfg()
	cfg.MaxInFlight = 2
	r := newRig(t)
	l := r.lead(cfg, nil)
	a := l.submit(t, roomy, fps...)
	b := l.submit(t, roomy, fps...)
	waitFP(t, fps[0], "both prepares held", func() bool { return fps[0].Count(prepare) == 2 })

	entries := r.log.len()
	for _, key := range []string{"", "busy-key"} {
		txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy, Key: key})
		if !errors.Is(err, coordinator.ErrBusy) || txn != nil {
			t.Fatalf("Submit beyond the limit (key %q): %v, %v; want ErrBusy", key, txn, err)
		}
	}
	if r.log.len() != entries {
		t.Fatalf("a refused Submit wrote %d log entries", r.log.len()-entries)
	}
	if _, ok := r.fsm.ByKey("busy-key"); ok {
		t.Fatal("a refused Submit bound its idempotency key")
	}
	if n := l.eng.InFlight(); n != 2 {
		t.Fatalf("in flight %d, want 2", n)
	}

	fps[0].Set(prepare, participanttest.ACK())
	fps[0].Release(prepare)
	for _, id := range []string{a.ID, b.ID} {
		if got := r.waitTerminal(t, id); got.Status != fsm.StatusCommitted {
			t.Fatalf("%s", describe(got))
		}
	}
	eventually(t, "in flight back to 0", func() bool { return l.eng.InFlight() == 0 })
	c := l.submit(t, roomy, fps...)
	if got := r.waitTerminal(t, c.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("%s", describe(got))
	}
	checkFPs(t, fps...)
}

// TestIdempotencyKey: a second Submit with the same key returns the first transaction and
// starts nothing, before, during and after the first one runs, and when many race.
func TestIdempotencyKey(t *testing.T) {
	fps := newFPs(t, 2)
	r := newRig(t)
	l := r.lead(fastCfg(), nil)
	submitKey := func(key string) *fsm.Txn {
		t.Helper()
		txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy, Key: key})
		if err != nil {
			t.Fatalf("Submit(%q): %v", key, err)
		}
		return txn
	}
	first := submitKey("order-42")
	if again := submitKey("order-42"); again.ID != first.ID {
		t.Fatalf("same key, new transaction: %s then %s", first.ID, again.ID)
	}
	if got := r.waitTerminal(t, first.ID); got.Status != fsm.StatusCommitted {
		t.Fatalf("%s", describe(got))
	}
	after := submitKey("order-42")
	if after.ID != first.ID || after.Status != fsm.StatusCommitted {
		t.Fatalf("after the outcome, the key returned %s %v", after.ID, after.Status)
	}

	// Many at once with one key: one transaction. The gate holds every Begin until all of
	// them passed the engine's own key check, so the FSM must settle the race.
	var wg sync.WaitGroup
	ids := make([]string, 16)
	var arrived sync.WaitGroup
	arrived.Add(len(ids))
	r.log.setGate(func(c fsm.Command) {
		if b, ok := c.(*fsm.Begin); ok && b.Key == "order-43" {
			arrived.Done()
			arrived.Wait()
		}
	})
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy, Key: "order-43"})
			if err != nil {
				t.Errorf("Submit: %v", err)
				return
			}
			ids[i] = txn.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one key, several transactions: %v", ids)
		}
	}
	r.log.setGate(nil)
	r.waitTerminal(t, ids[0])
	eventually(t, "drivers done", func() bool { return l.eng.InFlight() == 0 })

	begun := 0
	for _, e := range r.log.all() {
		if _, ok := e.Cmd.(*fsm.Begin); ok && e.Res.Err == nil {
			begun++
		}
	}
	if begun != 2 {
		t.Errorf("%d transactions begun for two keys", begun)
	}
	for _, fp := range fps {
		counts(t, fp, 2, 2, 0)
	}
	checkFPs(t, fps...)
}

// TestManyConcurrentTransactions: 200 transactions from 20 goroutines over 3 FPs all
// commit, each participant sees one Prepare and one Commit per transaction, and after
// Lead returns no engine goroutine is left. Run with -race.
func TestManyConcurrentTransactions(t *testing.T) {
	const workers, each = 20, 10
	fps := newFPs(t, 3)
	r := newRig(t)
	before := runtime.NumGoroutine()
	l := r.lead(fastCfg(), nil)
	var wg sync.WaitGroup
	ids := make(chan string, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: parts(fps...), Timeout: roomy})
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				ids <- txn.ID
			}
		}()
	}
	wg.Wait()
	close(ids)
	n := 0
	for id := range ids {
		n++
		if got := r.waitTerminal(t, id); got.Status != fsm.StatusCommitted {
			t.Errorf("%s: %s", id, describe(got))
		}
	}
	if n != workers*each {
		t.Fatalf("%d transactions submitted", n)
	}
	for _, fp := range fps {
		counts(t, fp, n, n, 0)
	}
	checkFPs(t, fps...)
	checkO1(t, r.log)
	l.stop(t)
	l.assertNoLateCalls(t)
	checkNoLeak(t)
	// The goroutine count comes back too, once the pooled keep-alive connections (client
	// and FP server goroutines, not the engine's) are closed.
	r.transport.CloseIdleConnections()
	eventually(t, "goroutines back to their count before Lead", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestTransientLogErrorIsRetried: an Apply error that is neither a loss of leadership nor
// a refusal by the FSM (e.g. raft.ErrEnqueueTimeout: nothing was written) must not leave the
// transaction stuck while this node still leads: the driver tries again.
func TestTransientLogErrorIsRetried(t *testing.T) {
	for _, which := range []string{"decide", "complete"} {
		t.Run(which, func(t *testing.T) {
			fps := newFPs(t, 2)
			r := newRig(t)
			var once sync.Once
			r.log.fail(func(c fsm.Command) bool {
				hit := false
				switch c.(type) {
				case *fsm.Decide, *fsm.DecideCommit:
					hit = which == "decide"
				case *fsm.Complete:
					hit = which == "complete"
				}
				fire := false
				if hit {
					once.Do(func() { fire = true })
				}
				return fire
			}, fmt.Errorf("timed out enqueuing operation"), false)
			l := r.lead(fastCfg(), nil)
			txn := l.submit(t, roomy, fps...)
			if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
				t.Fatalf("%s", describe(got))
			}
			checkFPs(t, fps...)
		})
	}
}

// BenchmarkEngineCommit3 measures committed transactions per second through the engine with
// a synchronous in-memory log and three in-process FPs over loopback HTTP.
func BenchmarkEngineCommit3(b *testing.B) {
	fps := newFPs(b, 3)
	r := newRig(b)
	l := r.lead(coordinator.Config{}, nil)
	ps := parts(fps...)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy})
			if err != nil {
				b.Error(err)
				return
			}
			if got := r.waitTerminal(b, txn.ID); got.Status != fsm.StatusCommitted {
				b.Errorf("%s", describe(got))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "txn/s")
}
