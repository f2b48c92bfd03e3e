package chaos

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// percentile returns the q-quantile (nearest rank) of ds, sorted in place.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func fmtDist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(ds), r(percentile(ds, 0.5)), r(percentile(ds, 0.99)), r(percentile(ds, 1)))
}

// firstDecisionAfter returns the earliest decision time strictly after at. decidedAt is
// stamped by the deciding leader before it proposes and truncated to the millisecond, so a
// decision stamped after at was proposed after at, by a successor of a leader killed at at.
func firstDecisionAfter(txns []txnView, at time.Time) (time.Time, bool) {
	var best time.Time
	for i := range txns {
		d := txns[i].decidedAt()
		if d.After(at) && (best.IsZero() || d.Before(best)) {
			best = d
		}
	}
	return best, !best.IsZero()
}

func report(cfg Config, res *Result, c *Cluster, mon *monitor, kills []kill, views map[string][]txnView, ev *eventLog) string {
	var txns []txnView
	for _, n := range c.Nodes {
		if v, ok := views[n.ID]; ok {
			txns = v
			break
		}
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("")
	p("===== txcoord chaos report: seed %d, %d nodes, %s of faults, %d clients at %.0f req/s =====", cfg.Seed, cfg.Nodes, cfg.Duration, cfg.Clients, cfg.Rate)
	p("raft timeouts: heartbeat %s, election %s, leader lease %s; txn timeout %s; %d CPUs, load average %s at start, %s at end",
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLease, cfg.TxnTimeout, runtime.NumCPU(), res.loadStart, loadAvg())
	p("transactions by outcome: %d total: %s", len(txns), fmtCounts(res.Oracles.ByStatus))
	p("client requests: %d logical: %s", res.Requests, fmtCounts(res.Clients))
	p("client attempts without a definite answer, by kind: %s", fmtCounts(res.ClientErrs))
	p("faults: %s", fmtCounts(res.Kills))
	gap, gapAt, polls := mon.longestGap()
	cause := ""
	if !gapAt.IsZero() {
		for _, e := range ev.events() {
			if !e.At.After(gapAt.Add(cfg.PollInterval)) && e.Kind != "knobs" && e.Kind != "knobs-cleared" {
				cause = fmt.Sprintf(" (began at %s, after %s %s)", strings.TrimSpace(ev.since(gapAt)), e.Kind, e.Node)
			}
		}
	}
	forced := res.Kills[FaultLeaderKill] + res.Kills[FaultLeaderPause] + res.Kills[FaultRestartAll] + res.Kills[FaultLeaderTerm] + res.Kills[FaultLeaderSplit]
	p("leaderships seen: %d (%d beyond the first and the %d the faults forced: a measure of flapping); longest time without a ready leader: %s%s [%d polls every %s]",
		mon.leaderChanges(), max(0, mon.leaderChanges()-1-forced), forced, gap.Round(time.Millisecond), cause, polls, cfg.PollInterval)
	kinds := []string{FaultLeaderKill, FaultLeaderPause, FaultRestartAll, FaultLeaderTerm, FaultLeaderSplit}
	res.Failover, res.FirstDecision = nil, nil
	for _, kind := range kinds {
		var fo, fd []time.Duration
		missFO, missFD := 0, 0
		for _, k := range kills {
			if k.Kind != kind {
				continue
			}
			if at, ok := mon.newLeaderAfter(k.At, k.Term); ok {
				fo = append(fo, at.Sub(k.At))
			} else {
				missFO++
			}
			if at, ok := firstDecisionAfter(txns, k.At); ok {
				fd = append(fd, at.Sub(k.At))
			} else {
				missFD++
			}
		}
		if len(fo)+missFO == 0 {
			continue
		}
		if kind == FaultLeaderKill {
			res.Failover, res.FirstDecision = slices.Clone(fo), slices.Clone(fd)
		}
		p("%s -> ready leader of a higher term: %s%s", kind, fmtDist(fo), missing(missFO))
		what := "first transaction decided after it (so by a successor)"
		if kind == FaultLeaderTerm {
			what = "first transaction decided after it (possibly by the leader still handing over)"
		}
		p("%s -> %s: %s%s", kind, what, fmtDist(fd), missing(missFD))
	}
	var parts []string
	for _, pt := range c.Parts {
		k := pt.Kind
		parts = append(parts, fmt.Sprintf("%s %d/s (%d per txn in 1s; %d logged)", k, res.Oracles.MaxPerSecond[k], res.Oracles.MaxPerTxnPerSecond[k], res.Oracles.RequestsLogged[k]))
	}
	p("O5 peak request rate per participant: %s; bounds %d/s and %d per txn in 1s", strings.Join(parts, ", "), cfg.PerSecondBound, cfg.PerTxnRateBound)
	p("checker: %s", strings.TrimSpace(strings.SplitN(res.Oracles.Checker.String(), "\n", 2)[0]))
	if len(res.Violations) == 0 {
		p("violations: 0 (O1 one decision per txn, O2 no commit+rollback at one participant, O3 no holds, O4 identical state on %d nodes, O5 bounded rates, atomicity/agreement/conservation, client answers agree, one txn per key)", len(views))
	} else {
		p("violations: %d", len(res.Violations))
		for i, v := range res.Violations {
			if i == 50 {
				p("  ... %d more", len(res.Violations)-50)
				break
			}
			p("  VIOLATION %s", v)
		}
	}
	p("===== end of report (seed %d) =====", cfg.Seed)
	return b.String()
}

// loadAvg returns the machine's 1, 5 and 15 minute load averages (Linux), or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func missing(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d without one)", n)
}
