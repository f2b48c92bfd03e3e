package coordinator_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/fsm"
)

// TestRetentionNeverPrunesPastTheLogClock (issue 11): a leader whose wall clock jumped 25 h
// ahead of the log's own timestamps prunes only as of what the log vouches for
// (Config.ClockBound), so neither the finished transaction (1 h retention) nor its
// idempotency key (24 h) goes. Once the log's clock has really moved on, both are pruned:
// the guard holds back a jump, not retention.
func TestRetentionNeverPrunesPastTheLogClock(t *testing.T) {
	r := newRig(t)
	t0 := time.Now().Truncate(time.Millisecond)
	p := []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}}
	r.log.preload(t,
		&fsm.Begin{ID: "old", Key: "k-old", CreatedAt: t0.UnixMilli(), Deadline: t0.UnixMilli() + 1000, Participants: p},
		&fsm.DecideCommit{ID: "old", AfterMs: 5},
		&fsm.Complete{At: t0.UnixMilli() + 10, Items: []fsm.Completion{{ID: "old", Attempts: []uint32{1}}}},
	)
	var bound atomic.Int64 // unix ms the log vouches for
	bound.Store(t0.UnixMilli() + 500)
	cfg := fastCfg()
	cfg.Retention.Every = 5 * time.Millisecond
	cfg.Now = func() time.Time { return t0.Add(25 * time.Hour) }
	cfg.ClockBound = func() (time.Time, bool) { return time.UnixMilli(bound.Load()), true }
	r.lead(cfg, nil)

	prunes := func() []*fsm.Prune {
		var out []*fsm.Prune
		for _, e := range r.log.all() {
			if p, ok := e.Cmd.(*fsm.Prune); ok {
				out = append(out, p)
			}
		}
		return out
	}
	eventually(t, "two prune rounds", func() bool { return len(prunes()) >= 2 })
	for _, p := range prunes() {
		if p.FinishedBefore > bound.Load()-time.Hour.Milliseconds() || p.KeysBefore > bound.Load()-(24*time.Hour).Milliseconds() {
			t.Fatalf("prune %+v cuts past the log's clock %d", p, bound.Load())
		}
	}
	if _, ok := r.fsm.Get("old"); !ok {
		t.Fatal("a clock 25 h ahead pruned a transaction that finished 10 ms before the log's clock")
	}
	if _, ok := r.fsm.ByKey("k-old"); !ok {
		t.Fatal("a clock 25 h ahead dropped an idempotency key: a retry would start a second transaction")
	}

	bound.Store(t0.Add(25 * time.Hour).UnixMilli()) // the log's clock caught up: time really passed
	eventually(t, "the transaction and its key pruned", func() bool {
		_, txn := r.fsm.Get("old")
		_, key := r.fsm.ByKey("k-old")
		return !txn && !key
	})
}
