package coordinator

import (
	"context"

	"github.com/txcoord/txcoord/fsm"
)

// endpointState is implemented by *fsm.FSM: the endpoint table Begin entries refer into.
type endpointState interface {
	EndpointRef(p fsm.Participant) (uint32, bool)
}

// refs returns Begin.Refs for ps: each participant's index in the FSM's endpoint table.
// Participants not in the table yet are added first with one Define entry, so only the
// first transaction to a service pays for its URLs in the log. It returns nil (URLs
// inline, always correct) when the table is full or the Define could not be logged.
func (e *Engine) refs(ctx context.Context, ps []fsm.Participant) []int32 {
	es, ok := e.state.(endpointState)
	if !ok {
		return nil
	}
	var missing []fsm.Participant
	for _, p := range ps {
		if _, ok := es.EndpointRef(p); !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		if _, err := e.log.Apply(ctx, &fsm.Define{Participants: missing}); err != nil {
			return nil
		}
	}
	refs := make([]int32, len(ps))
	any := false
	for i, p := range ps {
		refs[i] = -1
		if idx, ok := es.EndpointRef(p); ok {
			refs[i], any = int32(idx), true
		}
	}
	if !any {
		return nil
	}
	return refs
}
