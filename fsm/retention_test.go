package fsm_test

import (
	"strconv"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

func TestFinishedCutoff(t *testing.T) {
	build := func() *node {
		n := newNode(t)
		// Finished at +10, +20, +20, +30 (committed) and +40 (rolled back); a failed one
		// at +50 and active ones do not count.
		for i, at := range []int64{10, 20, 20, 30, 40} {
			id := "f" + strconv.Itoa(i)
			n.must(begin(id, 1))
			if at == 40 {
				n.must(decideAbort(id, 1))
			} else {
				n.must(decideCommit(id, 1))
			}
			n.must(complete(t0+at, id))
		}
		n.must(begin("failed", 1))
		n.must(decideCommit("failed", 1))
		n.must(&fsm.Fail{ID: "failed", At: t0 + 50})
		n.must(begin("prep", 1))
		n.must(begin("cing", 1))
		n.must(decideCommit("cing", 1))
		return n
	}
	if got := fsm.New().FinishedCutoff(3); got != 0 {
		t.Fatalf("empty FSM: FinishedCutoff = %d, want 0", got)
	}
	for _, tc := range []struct {
		keep     int
		cutoff   int64 // 0: keep all
		survives int   // finished transactions left after Prune{FinishedBefore: cutoff}
	}{
		{keep: 10, cutoff: 0, survives: 5},
		{keep: 5, cutoff: 0, survives: 5},
		{keep: 4, cutoff: t0 + 20, survives: 4},
		{keep: 3, cutoff: t0 + 20, survives: 4}, // the tie at +20 is kept
		{keep: 2, cutoff: t0 + 30, survives: 2},
		{keep: 1, cutoff: t0 + 40, survives: 1},
		{keep: 0, cutoff: t0 + 41, survives: 0},
		{keep: -1, cutoff: t0 + 41, survives: 0},
	} {
		n := build()
		got := n.f.FinishedCutoff(tc.keep)
		if got != tc.cutoff {
			t.Errorf("keep %d: cutoff %d, want %d", tc.keep, got-t0, tc.cutoff-t0)
			continue
		}
		n.must(&fsm.Prune{FinishedBefore: got})
		c := n.f.Counts()
		if left := c[fsm.StatusCommitted] + c[fsm.StatusRolledBack]; left != tc.survives || c[fsm.StatusFailed] != 1 || len(n.f.Active()) != 2 {
			t.Errorf("keep %d: after Prune %v, want %d finished, the failed and the 2 active ones", tc.keep, c, tc.survives)
		}
	}
}
