// Command gen writes a golden snapshot with the fsm package of the build it is compiled in.
// It lives in testdata so the current module never builds it; see ../README.md for how it
// is copied into a worktree of an old commit and run there. The same commands are applied
// in every build (build v1, with tag txcoord_v1, has no endpoint table: index 1, the
// Define, is skipped), so every golden file holds the same state.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/txcoord/txcoord/fsm"
)

const t0 = int64(1_764_633_600_000) // 2025-12-02T00:00:00Z, unix ms

func derived(prepare string) fsm.Participant {
	i := len(prepare) - len("prepare")
	if q := indexByte(prepare, '?'); q >= 0 {
		i = q - len("prepare")
	}
	pre, post := prepare[:i], prepare[i+len("prepare"):]
	return fsm.Participant{Prepare: prepare, Commit: pre + "commit" + post, Rollback: pre + "rollback" + post}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

var (
	e0 = derived("http://pay.svc:8080/v1/pay/prepare")
	e1 = derived("http://hotel.svc:9000/booking/prepare?region=eu")
	e2 = fsm.Participant{Prepare: "http://legacy:7000/tx/p", Commit: "http://legacy:7000/tx/c", Rollback: "http://legacy:7000/tx/r"}
	x  = derived("http://adhoc.svc:1/prepare") // never in the endpoint table
)

// level3 applies indexes 25 on (feature level 3: PresumeAbort, FastDecide); nil in the
// builds before it (no txcoord_v5 tag).
var level3 func(apply func(uint64, fsm.Command), ref func(...fsm.Participant) []int32)

func main() {
	out := flag.String("out", "", "file to write")
	flag.Parse()
	f := fsm.New()
	apply := func(idx uint64, c fsm.Command) {
		if r := f.ApplyCommand(idx, c); r.Err != nil {
			log.Fatalf("index %d %T: %v", idx, c, r.Err)
		}
	}
	table := []fsm.Participant{e0, e1, e2}
	if define != nil {
		apply(1, define(table))
	}
	ref := func(ps ...fsm.Participant) []int32 {
		refs := make([]int32, len(ps))
		for i, p := range ps {
			refs[i] = -1
			for j, q := range table {
				if p == q {
					refs[i] = int32(j)
				}
			}
		}
		return refs
	}
	b := func(idx uint64, id, key string, created int64, ps ...fsm.Participant) {
		apply(idx, begin(id, key, created, created+1000, ps, ref(ps...)))
	}
	const (
		tPreparing  = "01900000-0000-7000-8000-000000000001"
		tCommitting = "01900000-0000-7000-8000-000000000002"
		tRolling    = "01900000-0000-7000-8000-000000000003"
		tCommitted  = "01900000-0000-7000-8000-000000000004"
		tRolledBack = "01900000-0000-7000-8000-000000000005"
		tFailed     = "order-77"
		tPruned     = "01900000-0000-7000-8000-000000000007"
	)
	b(2, tPreparing, "k-preparing", t0+10, e0, e1)
	b(3, tCommitting, "k-committing", t0+20, e0, e2)
	apply(4, &fsm.Decide{ID: tCommitting, Decision: fsm.DecisionCommit, At: t0 + 25, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteYes}, Reasons: []string{"", ""}})
	apply(5, &fsm.Progress{ID: tCommitting, Reports: []fsm.Report{{Acked: true, Attempts: 1}, {Attempts: 3, Error: "HTTP 503: busy"}}})
	b(6, tRolling, "k-rolling-back", t0+30, e1, x)
	apply(7, &fsm.Decide{ID: tRolling, Decision: fsm.DecisionAbort, At: t0 + 35, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo}, Reasons: []string{"", "no rooms"}})
	b(8, tCommitted, "k-committed", t0+40, e0)
	apply(9, &fsm.Decide{ID: tCommitted, Decision: fsm.DecisionCommit, At: t0 + 45, Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
	b(10, tRolledBack, "", t0+50, e1, e2, e0)
	apply(11, &fsm.Decide{ID: tRolledBack, Decision: fsm.DecisionAbort, At: t0 + 55, Votes: []fsm.Vote{fsm.VoteNone, fsm.VoteError, fsm.VoteYes}, Reasons: []string{"no answer within 1000 ms", "HTTP 500: boom", ""}})
	apply(12, &fsm.Complete{At: t0 + 60, Items: []fsm.Completion{{ID: tCommitted, Attempts: []uint32{1}}, {ID: tRolledBack, Attempts: []uint32{1, 2, 1}}}})
	b(13, tFailed, "k-failed", t0+70, e2)
	apply(14, &fsm.Decide{ID: tFailed, Decision: fsm.DecisionCommit, At: t0 + 75, Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
	apply(15, &fsm.Fail{ID: tFailed, At: t0 + 80, Reports: []fsm.Report{{Attempts: 30, Error: "HTTP 500: disk full"}}})
	b(16, tPruned, "k-pruned", t0-100, x)
	apply(17, &fsm.Decide{ID: tPruned, Decision: fsm.DecisionCommit, At: t0 - 90, Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}})
	apply(18, &fsm.Complete{At: t0 - 80, Items: []fsm.Completion{{ID: tPruned, Attempts: []uint32{1}}}})
	apply(19, &fsm.Prune{FinishedBefore: t0}) // drops tPruned, keeps its key
	apply(20, &fsm.SetMember{NodeID: "n1", HTTPAddr: "10.0.0.1:8081"})
	apply(21, &fsm.SetMember{NodeID: "n2", HTTPAddr: "10.0.0.2:8081"})
	apply(22, &fsm.SetMember{NodeID: "n3", HTTPAddr: "10.0.0.3:8081"})
	apply(23, &fsm.SetMember{NodeID: "n3", HTTPAddr: ""})
	apply(24, &fsm.SetMember{NodeID: "n4", HTTPAddr: "[::1]:8084"})
	if level3 != nil { // builds from 31d74c1 on, with tag txcoord_v5
		level3(apply, ref)
	}

	w, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := f.WriteSnapshot(w); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
}
