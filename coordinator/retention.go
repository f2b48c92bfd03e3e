package coordinator

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
)

// Retention bounds the FSM (and so snapshots and memory): finished transactions and
// idempotency keys are pruned through the log, by the leader, on a schedule. Failed
// transactions are never pruned: they wait for an operator.
type Retention struct {
	// Finished is how long committed and rolled_back transactions are kept after they
	// finish [1h].
	Finished time.Duration
	// MaxFinished is the most finished transactions kept, whatever their age [100000].
	MaxFinished int
	// Keys is how long an idempotency key is kept after its transaction began [24h]. A
	// retry with a key older than this starts a new transaction.
	Keys time.Duration
	// Every is how often the leader prunes [1m].
	Every time.Duration
}

func (r *Retention) defaults() {
	if r.Finished <= 0 {
		r.Finished = time.Hour
	}
	if r.MaxFinished <= 0 {
		r.MaxFinished = 100000
	}
	if r.Keys <= 0 {
		r.Keys = 24 * time.Hour
	}
	if r.Every <= 0 {
		r.Every = time.Minute
	}
}

// pruneLoop runs while this node leads.
// lg names the term in its lines.
func (e *Engine) pruneLoop(ctx context.Context, lg hclog.Logger) {
	t := time.NewTicker(e.cfg.Retention.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.prune(ctx, lg)
		}
	}
}

// pruneState is what prune needs beyond State; *fsm.FSM has it.
type pruneState interface {
	FinishedCutoff(keep int) int64
}

// prune logs one Prune. Its cut-offs come from this node's wall clock, but never from
// beyond what the log vouches for (Config.ClockBound): a leader whose clock jumped ahead
// would otherwise drop every finished transaction (1 h ahead) and every idempotency key
// (24 h ahead), and a client's retry with its key would start a second transaction. With
// no bound known (an empty log) only the count limit prunes.
func (e *Engine) prune(ctx context.Context, lg hclog.Logger) {
	now := e.cfg.Now()
	cmd := &fsm.Prune{
		FinishedBefore: now.Add(-e.cfg.Retention.Finished).UnixMilli(),
		KeysBefore:     now.Add(-e.cfg.Retention.Keys).UnixMilli(),
	}
	if e.cfg.ClockBound != nil {
		bound, ok := e.cfg.ClockBound()
		switch {
		case !ok:
			cmd.FinishedBefore, cmd.KeysBefore = 0, 0
		case now.After(bound):
			lg.Warn("wall clock is ahead of the log's: pruning only up to what the log vouches for", "clock", now, "log_bound", bound, "ahead", now.Sub(bound))
			cmd.FinishedBefore = bound.Add(-e.cfg.Retention.Finished).UnixMilli()
			cmd.KeysBefore = bound.Add(-e.cfg.Retention.Keys).UnixMilli()
		}
	}
	if ps, ok := e.state.(pruneState); ok {
		cmd.FinishedBefore = max(cmd.FinishedBefore, ps.FinishedCutoff(e.cfg.Retention.MaxFinished))
	}
	if *cmd == (fsm.Prune{}) {
		return
	}
	if _, err := e.log.Apply(ctx, cmd); err != nil && ctx.Err() == nil {
		lg.Warn("pruning finished transactions failed", "error", err)
	}
}
