package fsm

import "sort"

// FinishedCutoff returns the Prune.FinishedBefore value that keeps the keep most recently
// finished committed or rolled_back transactions and prunes the older ones: the FinishedAt
// of the oldest kept record (unix ms; Prune removes those strictly before it), or 0 when
// there are no more than keep. Transactions that finished in the same millisecond as the
// oldest kept one are kept too.
func (f *FSM) FinishedCutoff(keep int) int64 {
	f.mu.RLock()
	times := make([]int64, 0, len(f.txns))
	for _, t := range f.txns {
		if t.Status == StatusCommitted || t.Status == StatusRolledBack {
			times = append(times, t.FinishedAt)
		}
	}
	f.mu.RUnlock()
	if len(times) <= keep {
		return 0
	}
	sort.Slice(times, func(i, j int) bool { return times[i] > times[j] })
	if keep <= 0 {
		return times[0] + 1
	}
	return times[keep-1]
}
