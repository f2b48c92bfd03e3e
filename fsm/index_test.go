package fsm_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
)

// fill applies n Begins with ids "q0000".. created one ms apart; every third is committed,
// every third rolled back, the rest stay preparing. Participant i%4 is http://h<i%4>:9000.
func fill(t testing.TB, n int) *node {
	nd := newNode(t)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("q%04d", i)
		p := fsm.Participant{Prepare: fmt.Sprintf("http://h%d:9000/prepare", i%4), Commit: fmt.Sprintf("http://h%d:9000/commit", i%4), Rollback: fmt.Sprintf("http://h%d:9000/rollback", i%4)}
		nd.must(&fsm.Begin{ID: id, Key: "k-" + id, CreatedAt: t0 + int64(i), Deadline: t0 + int64(i) + 5000, Participants: []fsm.Participant{p}})
		switch i % 3 {
		case 0:
			nd.must(&fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: t0 + int64(i), Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
			nd.must(&fsm.Complete{At: t0 + int64(i), Items: []fsm.Completion{{ID: id, Attempts: []uint32{1}}}})
		case 1:
			nd.must(&fsm.Decide{ID: id, Decision: fsm.DecisionAbort, At: t0 + int64(i), Votes: []fsm.Vote{fsm.VoteNo}, Reasons: []string{"no"}})
			nd.must(&fsm.Complete{At: t0 + int64(i), Items: []fsm.Completion{{ID: id, Attempts: []uint32{1}}}})
		}
	}
	return nd
}

// pageAll follows cursors to the end and returns every id in order.
func pageAll(t *testing.T, f *fsm.FSM, q fsm.ListQuery) []string {
	t.Helper()
	var out []string
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
		txns, next := f.Query(q)
		for _, tx := range txns {
			out = append(out, tx.ID)
		}
		if next == nil {
			return out
		}
		q.After = next
	}
}

func TestQuery_OrderFiltersAndCursors(t *testing.T) {
	const n = 1000 // several lock chunks
	nd := fill(t, n)
	var asc []string
	for i := 0; i < n; i++ {
		asc = append(asc, fmt.Sprintf("q%04d", i))
	}
	desc := slices.Clone(asc)
	slices.Reverse(desc)
	if got := pageAll(t, nd.f, fsm.ListQuery{Limit: 37}); !slices.Equal(got, asc) {
		t.Errorf("ascending pages: %d ids", len(got))
	}
	if got := pageAll(t, nd.f, fsm.ListQuery{Limit: 100, Desc: true}); !slices.Equal(got, desc) {
		t.Errorf("descending pages: %d ids", len(got))
	}
	// Status.
	got := pageAll(t, nd.f, fsm.ListQuery{Status: fsm.StatusCommitted, Limit: 50, Desc: true})
	if len(got) != 334 || got[0] != "q0999" || got[1] != "q0996" {
		t.Errorf("committed: %d, first %v", len(got), got[:2])
	}
	// Participant by host, by host:port, by URL; a participant filter examining at most
	// MaxScan per call still pages through everything.
	for _, p := range []string{"h1", "h1:9000", "http://h1:9000/commit", "H1"} {
		got := pageAll(t, nd.f, fsm.ListQuery{Participant: p, Limit: 20, MaxScan: 300})
		if len(got) != n/4 || got[0] != "q0001" || got[1] != "q0005" {
			t.Errorf("participant %q: %d ids, first %v", p, len(got), got[:min(2, len(got))])
		}
	}
	if got := pageAll(t, nd.f, fsm.ListQuery{Participant: "h1:9001"}); len(got) != 0 {
		t.Errorf("wrong port matched %d", len(got))
	}
	// Created range: from inclusive, to exclusive, both directions.
	q := fsm.ListQuery{CreatedFrom: t0 + 10, CreatedTo: t0 + 20}
	if got := pageAll(t, nd.f, q); !slices.Equal(got, asc[10:20]) {
		t.Errorf("range asc: %v", got)
	}
	q.Desc, q.Limit = true, 3
	if got := pageAll(t, nd.f, q); len(got) != 10 || got[0] != "q0019" || got[9] != "q0010" {
		t.Errorf("range desc: %v", got)
	}
	// Key.
	if txns, next := nd.f.Query(fsm.ListQuery{Key: "k-q0042"}); len(txns) != 1 || txns[0].ID != "q0042" || next != nil {
		t.Errorf("key: %v", txns)
	}
	if txns, _ := nd.f.Query(fsm.ListQuery{Key: "k-q0042", Status: fsm.StatusPreparing}); len(txns) != 0 {
		t.Errorf("key with another status: %v", txns)
	}
}

// TestQuery_CursorSurvivesAddsAndPrunes: a reader paging oldest first while new
// transactions arrive and the records it has read are pruned (the cursor's own record
// included) sees every record exactly once, in order.
func TestQuery_CursorSurvivesAddsAndPrunes(t *testing.T) {
	nd := fill(t, 600)
	idx := uint64(10_000)
	var got []string
	q := fsm.ListQuery{Limit: 50}
	for pages := 0; ; pages++ {
		txns, next := nd.f.Query(q)
		for _, tx := range txns {
			got = append(got, tx.ID)
		}
		// Between pages: ten newer transactions, and every finished record up to the
		// page's last one pruned.
		for k := 0; k < 10; k++ {
			idx++
			id := fmt.Sprintf("z%02d-%02d", pages, k)
			nd.f.ApplyCommand(idx, &fsm.Begin{ID: id, CreatedAt: t0 + 10_000 + int64(pages*10+k), Deadline: t0 + 20_000, Participants: parts(1)})
		}
		if len(txns) > 0 && pages < 100 {
			last := txns[len(txns)-1]
			idx++
			nd.f.ApplyCommand(idx, &fsm.Prune{FinishedBefore: last.CreatedAt + 1})
		}
		if next == nil {
			break
		}
		q.After = next
	}
	var qs []string
	for _, id := range got {
		if id[0] == 'q' {
			qs = append(qs, id)
		}
	}
	if len(qs) != 600 || qs[0] != "q0000" || qs[599] != "q0599" || len(got) <= 600 {
		t.Fatalf("%d ids (%d old), first %s last %s", len(got), len(qs), qs[0], qs[len(qs)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order at %d: %s after %s", i, got[i], got[i-1])
		}
	}
}

func TestStuck_FromTheIndexes(t *testing.T) {
	nd := fill(t, 30)
	nd.must(&fsm.Decide{ID: "q0002", Decision: fsm.DecisionCommit, At: t0 + 2, Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
	nd.must(fail("q0002", 1))
	// q0002 is failed; the other preparing ones (i%3 == 2) are active.
	// (Counts below: 10 committed, 10 rolled back, 9 preparing, 1 failed.)
	got := ids(nd.f.Stuck(t0+10, 0))
	want := []string{"q0002", "q0005", "q0008"}
	if !slices.Equal(got, want) {
		t.Errorf("stuck = %v, want %v", got, want)
	}
	if got := ids(nd.f.Stuck(t0+10, 2)); len(got) != 2 {
		t.Errorf("limit: %v", got)
	}
	if c := nd.f.Counts(); c[fsm.StatusCommitted] != 10 || c[fsm.StatusRolledBack] != 10 || c[fsm.StatusPreparing] != 9 || c[fsm.StatusFailed] != 1 {
		t.Errorf("counts %v", c)
	}
	// The indexes survive a snapshot round trip.
	r := restore(t, snapBytes(t, nd.f))
	if got := ids(r.Stuck(t0+10, 0)); !slices.Equal(got, want) {
		t.Errorf("stuck after restore = %v", got)
	}
	if txns, _ := r.Query(fsm.ListQuery{Desc: true, Limit: 1}); len(txns) != 1 || txns[0].ID != "q0029" {
		t.Errorf("newest after restore: %v", ids(txns))
	}
}

func TestWaitApplied(t *testing.T) {
	f := fsm.New()
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		errc <- f.WaitApplied(ctx, 3)
	}()
	for i := uint64(1); i <= 3; i++ {
		f.ApplyCommand(i, begin(fmt.Sprintf("w%d", i), 1))
	}
	wg.Wait()
	if err := <-errc; err != nil || f.AppliedIndex() < 3 {
		t.Fatalf("WaitApplied: %v (applied %d)", err, f.AppliedIndex())
	}
	ctx, cancel := contextWithTimeout(time.Millisecond)
	defer cancel()
	if err := f.WaitApplied(ctx, 99); err == nil {
		t.Error("WaitApplied for an index never applied returned nil")
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
