package fsm_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
)

// guard bounds a test that would otherwise hang on a lost wake-up; no test waits for it
// to expire when WaitFor works.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func status(st fsm.Status) func(*fsm.Txn) bool {
	return func(t *fsm.Txn) bool { return t != nil && t.Status == st }
}

func noWatchers(t *testing.T, f *fsm.FSM, id string) {
	t.Helper()
	if forID, all := f.WatcherCount(id); forID != 0 || all != 0 {
		t.Fatalf("watchers left behind: %d for %q, %d ids", forID, id, all)
	}
}

func TestWaitForImmediate(t *testing.T) {
	n := newNode(t)
	want := n.must(begin("a", 1))
	// Even with a context that is already over, a condition that holds wins.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := n.f.WaitFor(ctx, "a", status(fsm.StatusPreparing))
	if err != nil || got != want {
		t.Fatalf("WaitFor = %v, %v; want the record at once", got, err)
	}
	// A condition on a missing record sees nil.
	got, err = n.f.WaitFor(ctx, "missing", func(t *fsm.Txn) bool { return t == nil })
	if err != nil || got != nil {
		t.Fatalf("WaitFor(missing) = %v, %v", got, err)
	}
	noWatchers(t, n.f, "a")
}

// waiter runs WaitFor in a goroutine. calls receives the record each time cond is checked,
// so the test knows the waiter is registered before it changes anything.
type waiter struct {
	calls chan *fsm.Txn
	done  chan struct{}
	txn   *fsm.Txn
	err   error
}

func wait(ctx context.Context, f *fsm.FSM, id string, cond func(*fsm.Txn) bool) *waiter {
	w := &waiter{calls: make(chan *fsm.Txn, 100), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.txn, w.err = f.WaitFor(ctx, id, func(t *fsm.Txn) bool {
			w.calls <- t
			return cond(t)
		})
	}()
	return w
}

func TestWaitForWakes(t *testing.T) {
	n := newNode(t)
	w := wait(guard(t), n.f, "a", status(fsm.StatusCommitted))
	if first := <-w.calls; first != nil {
		t.Fatalf("first check saw %+v, want nil", first)
	}
	if forID, _ := n.f.WatcherCount("a"); forID != 1 {
		t.Fatalf("%d watchers registered, want 1", forID)
	}
	n.must(begin("a", 2))
	if got := <-w.calls; got == nil || got.Status != fsm.StatusPreparing {
		t.Fatalf("woken with %+v, want the preparing record", got)
	}
	n.must(begin("other", 1)) // changes to other ids do not end the wait
	n.must(decideCommit("a", 2))
	n.must(complete(t0+1, "other", "a"))
	<-w.done
	if w.err != nil || w.txn == nil || w.txn.Status != fsm.StatusCommitted || w.txn != n.get("a") {
		t.Fatalf("WaitFor = %+v, %v", w.txn, w.err)
	}
	noWatchers(t, n.f, "a")
}

func TestWaitForCancel(t *testing.T) {
	n := newNode(t)
	tx := n.must(begin("a", 1))
	ctx, cancel := context.WithCancel(guard(t))
	w := wait(ctx, n.f, "a", status(fsm.StatusCommitted))
	<-w.calls
	cancel()
	<-w.done
	if !errors.Is(w.err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", w.err)
	}
	if w.txn != tx {
		t.Fatalf("WaitFor returned %+v, want the current record", w.txn)
	}
	noWatchers(t, n.f, "a")
}

func TestWaitForDeadline(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0)) // already past
	defer cancel()
	_, err := n.f.WaitFor(ctx, "a", status(fsm.StatusCommitted))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	noWatchers(t, n.f, "a")
}

func TestWaitForManyWaiters(t *testing.T) {
	n := newNode(t)
	ctx := guard(t)
	cancelCtx, cancel := context.WithCancel(ctx)
	const k = 40
	var ws []*waiter
	for i := range k {
		c := ctx
		if i%4 == 0 {
			c = cancelCtx // a quarter give up half way
		}
		ws = append(ws, wait(c, n.f, "a", status(fsm.StatusRolledBack)))
	}
	other := wait(ctx, n.f, "b", status(fsm.StatusPreparing))
	for _, w := range ws {
		<-w.calls
	}
	<-other.calls
	if forID, all := n.f.WatcherCount("a"); forID != k || all != 2 {
		t.Fatalf("watchers: %d for a, %d ids; want %d and 2", forID, all, k)
	}
	cancel()
	for i, w := range ws {
		if i%4 == 0 {
			<-w.done
		}
	}
	if forID, _ := n.f.WatcherCount("a"); forID != k-k/4 {
		t.Fatalf("%d watchers after cancelling %d of %d", forID, k/4, k)
	}
	n.must(begin("a", 1))
	n.must(decideAbort("a", 1))
	n.must(complete(t0, "a"))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-w.done
			if i%4 == 0 {
				if !errors.Is(w.err, context.Canceled) {
					t.Errorf("waiter %d: %v, want Canceled", i, w.err)
				}
			} else if w.err != nil || w.txn.Status != fsm.StatusRolledBack {
				t.Errorf("waiter %d: %+v, %v", i, w.txn, w.err)
			}
		}()
	}
	wg.Wait()
	if forID, all := n.f.WatcherCount("a"); forID != 0 || all != 1 {
		t.Fatalf("after all returned: %d for a, %d ids; want 0 and 1 (b)", forID, all)
	}
	n.must(begin("b", 1))
	<-other.done
	noWatchers(t, n.f, "b")
}

// TestWaitForRestore: a Restore that brings the record wakes its waiters.
func TestWaitForRestore(t *testing.T) {
	src := newNode(t)
	src.must(begin("a", 1))
	src.must(decideCommit("a", 1))
	src.must(complete(t0, "a"))
	snap := snapBytes(t, src.f)

	n := newNode(t)
	w := wait(guard(t), n.f, "a", status(fsm.StatusCommitted))
	<-w.calls
	if err := n.f.Restore(nopCloser(snap)); err != nil {
		t.Fatal(err)
	}
	<-w.done
	if w.err != nil || w.txn == nil || w.txn.Status != fsm.StatusCommitted {
		t.Fatalf("WaitFor after Restore = %+v, %v", w.txn, w.err)
	}
	noWatchers(t, n.f, "a")
}

// TestWaitForPrune: pruning a record is a change its waiters see (as nil).
func TestWaitForPrune(t *testing.T) {
	n := newNode(t)
	n.must(begin("a", 1))
	n.must(decideAbort("a", 1))
	n.must(complete(t0, "a"))
	w := wait(guard(t), n.f, "a", func(t *fsm.Txn) bool { return t == nil })
	<-w.calls
	n.must(&fsm.Prune{FinishedBefore: t0 + 1})
	<-w.done
	if w.err != nil || w.txn != nil {
		t.Fatalf("WaitFor = %+v, %v", w.txn, w.err)
	}
	noWatchers(t, n.f, "a")
}
