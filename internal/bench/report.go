package bench

import (
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
)

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

func (d Dist) String() string {
	if d.N == 0 {
		return "(no samples)"
	}
	return fmt.Sprintf("p50 %7.3f  p90 %7.3f  p99 %7.3f  max %8.3f ms  (n=%d)", d.P50, d.P90, d.P99, d.Max, d.N)
}

// WriteText prints r for people.
func (r *Report) WriteText(w io.Writer) {
	s := r.Setup
	parts := fmt.Sprintf("%d participant(s) at %s", len(s.Participants), strings.Join(s.Participants, ", "))
	if s.BuiltIn {
		parts = fmt.Sprintf("%d built-in fast participant(s) in this process (NACK rate %g, delay %gms)", len(s.Participants), s.NackRate, s.DelayMs)
	}
	fmt.Fprintf(w, "txcoord bench  %s\n", r.Started.Format("2006-01-02 15:04:05Z"))
	fmt.Fprintf(w, "  cluster:      %s; clients post to %s\n", s.Cluster, strings.Join(s.Entry, ", "))
	fmt.Fprintf(w, "  participants: %s\n", parts)
	fmt.Fprintf(w, "  timeout %dms, warm-up %gs, GOMAXPROCS %d of %d CPUs, load average %s at start, %s at end\n",
		s.TimeoutMs, s.WarmupSeconds, s.GOMAXPROCS, s.NumCPU, orNA(s.LoadAvgStart), orNA(s.LoadAvgEnd))

	if f := r.Floor; f != nil {
		fmt.Fprintf(w, "\nFloor (same cluster and participants, measured first):\n")
		fmt.Fprintf(w, "  raft apply, c=1           %s\n", f.RaftApply)
		fmt.Fprintf(w, "  raft apply, c=%-3d         %.0f applies/s\n", f.Concurrency, f.RaftAppliesPerSec)
		fmt.Fprintf(w, "  participant call, c=1     %s\n", f.ParticipantCall)
		fmt.Fprintf(w, "  participant round (x%d)    %s\n", f.Participants, f.ParticipantRound)
		fmt.Fprintf(w, "  participant calls, c=%-3d  %.0f calls/s\n", f.Concurrency, f.ParticipantCallsPerSec)
		fmt.Fprintf(w, "  latency floor:            %.3f ms  (2 raft commits + 2 rounds, from the p50s)\n", f.FloorMs)
		fmt.Fprintf(w, "  3-commit floor:           %.3f ms  (completion logged before the answer, as before 7998e58)\n", f.ThreeCommitMs)
		fmt.Fprintf(w, "  fast-mode floor:          %.3f ms  (1 raft commit + 2 rounds: the decision entry only)\n", f.FastFloorMs)
		fmt.Fprintf(w, "  throughput bounds:        raft %.0f txn/s (2 entries/txn), http %.0f txn/s (%d exchanges/txn), both sharing the CPU %.0f txn/s\n",
			f.RaftBoundTxnPerSec, f.HTTPBoundTxnPerSec, 2*f.Participants+1, f.CombinedBoundTxnPerSec)
		fmt.Fprintf(w, "  cpu floor:                %.3f ms per apply, %.3f ms per call -> %.3f ms CPU per transaction, %.0f txn/s on %d CPUs\n",
			f.RaftCPUPerApplyMs, f.ParticipantCPUPerCallMs, f.CPUFloorPerTxnMs, f.CPUBoundTxnPerSec, f.NumCPU)
	}

	for i, run := range r.Runs {
		mode := ""
		if run.Mode != "" {
			mode = "mode " + run.Mode + ", "
		}
		fmt.Fprintf(w, "\n%sConcurrency %d: %.1fs, %d answered, %.1f txn/s, %.1f committed/s\n",
			mode, run.Concurrency, run.Seconds, run.Answered, run.TxnPerSec, run.CommittedPerSec)
		fmt.Fprintf(w, "  outcomes:   %s\n", countsString(run.Outcomes))
		if run.CPUPerTxnMs > 0 {
			fmt.Fprintf(w, "  cpu:        %.2f cores busy (this process), %.3f ms CPU per transaction\n", run.CPUCores, run.CPUPerTxnMs)
		}
		fmt.Fprintf(w, "  errors:     %s\n", countsString(run.Errors))
		fmt.Fprintf(w, "  latency     %s\n", run.Latency)
		ph := run.Phases
		switch ph.Source {
		case "none":
			fmt.Fprintf(w, "  phases:     not measured (external participants; use --sample N)\n")
		default:
			fmt.Fprintf(w, "  phase one   %s   [POST -> decision; from %s]\n", ph.PhaseOne, ph.Source)
			fmt.Fprintf(w, "  phase two   %s   [decision -> answer]\n", ph.PhaseTwo)
		}
		if ph.Begin != nil {
			fmt.Fprintf(w, "    begin     %s   [POST -> first prepare arrives]\n", *ph.Begin)
			fmt.Fprintf(w, "    prepare   %s   [prepare round]\n", *ph.Prepare)
			fmt.Fprintf(w, "    decide    %s   [last prepare answered -> first commit/rollback arrives]\n", *ph.Decide)
			fmt.Fprintf(w, "    commit    %s   [commit/rollback round]\n", *ph.Commit)
			fmt.Fprintf(w, "    complete  %s   [last commit answered -> answer received]\n", *ph.Complete)
		}
		if len(run.Reasons) > 0 {
			fmt.Fprintf(w, "  rollback reasons: %s\n", countsString(run.Reasons))
		}
		if i < len(r.Ratios) {
			q := r.Ratios[i]
			fmt.Fprintf(w, "  vs floor:   p50 = %.2fx the floor (%.2fx the 3-commit floor); committed/s = %.0f%% of raft bound, %.0f%% of http bound, %.0f%% of combined bound; CPU per txn = %.2fx the CPU floor\n",
				q.P50OverFloor, q.P50OverThreeCommit, 100*q.OfRaftBound, 100*q.OfHTTPBound, 100*q.OfCombinedBound, q.CPUOverFloor)
		}
	}

	if len(r.ModeRatios) > 0 {
		fmt.Fprintf(w, "\nFast mode vs default mode (same cluster, same run):\n")
		for _, m := range r.ModeRatios {
			fmt.Fprintf(w, "  concurrency %-4d p50 %.2fx, committed/s %.2fx, CPU per txn %.2fx\n", m.Concurrency, m.P50, m.Committed, m.CPUPerTxn)
		}
	}

	if len(r.Log) > 0 {
		fmt.Fprintf(w, "\nRaft log (read from each node's raft.db after the nodes stopped; all runs and the floor together):\n")
		for _, l := range r.Log {
			fmt.Fprintf(w, "  %s: entries %d..%d (%d), %d transactions, %.2f txn entries/txn, %.1f stored bytes/txn (%.1f command bytes/txn), %d completions in %d complete entries; raft.db %s, data dir %s\n",
				l.Node, l.FirstIndex, l.LastIndex, l.Entries, l.Transactions, l.EntriesPerTxn, l.StoredPerTxn, l.DataPerTxn,
				l.Completions, l.ByType["complete"].Entries, sizeString(l.FileBytes), sizeString(l.DirBytes))
		}
		if l := r.Log[0]; len(l.ByType) > 0 {
			kinds := make([]string, 0, len(l.ByType))
			for k := range l.ByType {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			fmt.Fprintf(w, "  by kind on %s:\n", l.Node)
			for _, k := range kinds {
				t := l.ByType[k]
				fmt.Fprintf(w, "    %-22s %8d entries  %7.1f stored B/entry  %7.1f command B/entry\n", k, t.Entries,
					float64(t.StoredBytes)/float64(t.Entries), float64(t.DataBytes)/float64(t.Entries))
			}
		}
	}
}

func countsString(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}
