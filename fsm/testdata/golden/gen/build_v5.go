//go:build txcoord_v5

package main

import "github.com/txcoord/txcoord/fsm"

// Feature level 3 (31d74c1 on): a presumed-abort record, a fast commit still committing
// (with a key, its participants by table index) and a fast rollback still rolling back.
func init() {
	level3 = func(apply func(uint64, fsm.Command), ref func(...fsm.Participant) []int32) {
		apply(25, &fsm.SetFeatures{Level: 3, At: t0 + 100})
		apply(26, &fsm.PresumeAbort{ID: "01900000-0000-7000-8000-000000000008", At: t0 + 200, Deadline: t0 + 150})
		ps := []fsm.Participant{e0, x}
		apply(27, &fsm.FastDecide{Begin: fsm.Begin{ID: "01900000-0000-7000-8000-000000000009", Key: "k-fast-commit",
			CreatedAt: t0 + 300, Deadline: t0 + 1300, Participants: ps, Refs: ref(ps...)},
			Decision: fsm.DecisionCommit, AfterMs: 7})
		ps = []fsm.Participant{e1, e2}
		apply(28, &fsm.FastDecide{Begin: fsm.Begin{ID: "01900000-0000-7000-8000-00000000000a",
			CreatedAt: t0 + 400, Deadline: t0 + 1400, Participants: ps, Refs: ref(ps...)},
			Decision: fsm.DecisionAbort, AfterMs: 12,
			Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo}, Reasons: []string{"", "sold out"}})
	}
}
