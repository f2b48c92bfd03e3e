package coordinator

import (
	"context"
	"slices"

	"github.com/txcoord/txcoord/fsm"
)

// endpointState is implemented by *fsm.FSM: the endpoint table Begin entries refer into.
type endpointState interface {
	EndpointRef(p fsm.Participant) (uint32, bool)
}

// refs returns Begin.Refs for ps: each participant's index in the FSM's endpoint table.
// Participants not in the table yet are added first with one Define entry, so only the
// first transaction to a service pays for its URLs in the log. A participant the table
// cannot hold (it is full, or the Define was not logged) gets -1: its URLs go inline, which
// is always correct. It returns nil when no participant has an index.
func (e *Engine) refs(ctx context.Context, ps []fsm.Participant) []int32 {
	es, ok := e.state.(endpointState)
	if !ok {
		return nil
	}
	refs := make([]int32, len(ps))
	var missing []int
	for i, p := range ps {
		if idx, ok := es.EndpointRef(p); ok {
			refs[i] = int32(idx)
		} else {
			refs[i] = -1
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		define := &fsm.Define{Participants: make([]fsm.Participant, len(missing))}
		for k, i := range missing {
			define.Participants[k] = ps[i]
		}
		if _, err := e.log.Apply(ctx, define); err == nil {
			for _, i := range missing {
				if idx, ok := es.EndpointRef(ps[i]); ok { // absent when the table is full
					refs[i] = int32(idx)
				}
			}
		}
	}
	if !slices.ContainsFunc(refs, func(r int32) bool { return r >= 0 }) {
		return nil
	}
	return refs
}
