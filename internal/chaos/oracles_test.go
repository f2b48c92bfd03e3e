package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

// In fast mode a Prepare or a Rollback for a transaction no node knows is what a leader
// that died before logging leaves behind; a Commit for one is a violation in both modes,
// and in the default mode any call for one is.
func TestRequestLogUnknownTransactionByMode(t *testing.T) {
	at := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	log := func(phases ...participant.Phase) []demo.LoggedRequest {
		var out []demo.LoggedRequest
		for i, p := range phases {
			out = append(out, demo.LoggedRequest{TransactionID: "ghost", Phase: p, Received: at.Add(time.Duration(i) * time.Second), Node: "n1"})
		}
		return out
	}
	run := func(fast bool, l []demo.LoggedRequest) []string {
		var o Oracles
		o.MaxPerSecond, o.MaxPerTxnPerSecond = map[string]int{}, map[string]int{}
		checkRequestLog(&o, "hotel", l, map[string]txnView{}, 15, 300, fast)
		return o.Violations
	}
	if v := run(true, log(participant.PhasePrepare, participant.PhaseRollback)); len(v) != 0 {
		t.Errorf("fast mode, Prepare and Rollback of an unknown transaction: %v", v)
	}
	if v := run(true, log(participant.PhasePrepare, participant.PhaseCommit)); len(v) != 1 || !strings.Contains(v[0], "does not know") {
		t.Errorf("fast mode, Commit of an unknown transaction: %v, want one O1 violation", v)
	}
	if v := run(false, log(participant.PhasePrepare)); len(v) != 1 || !strings.Contains(v[0], "does not know") {
		t.Errorf("default mode, Prepare of an unknown transaction: %v, want one O1 violation", v)
	}
}
