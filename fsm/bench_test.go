package fsm_test

import (
	"encoding/hex"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// benchID returns a canonical UUID that differs per i, as the leader would mint.
func benchID(i int) string {
	var b [16]byte
	b[0], b[6], b[8] = 0x01, 0x70, 0x80
	for j := 15; j > 9; j-- {
		b[j] = byte(i)
		i >>= 8
	}
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// lifecycle returns the three log entries of one committed 3-participant transaction with
// URLs like http://127.0.0.1:9001/prepare.
func lifecycle(i int) [3][]byte {
	id := benchID(i)
	return [3][]byte{
		fsm.Encode(&fsm.Begin{ID: id, Key: "", CreatedAt: t0 + int64(i), Deadline: t0 + int64(i) + 10_000, Participants: parts(3)}),
		fsm.Encode(&fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: t0 + int64(i) + 40, Votes: votes(3, fsm.VoteYes), Reasons: make([]string, 3)}),
		fsm.Encode(&fsm.Complete{At: t0 + int64(i) + 80, Items: []fsm.Completion{{ID: id, Attempts: []uint32{1, 1, 1}}}}),
	}
}

func TestLifecycleSize(t *testing.T) {
	e := lifecycle(1)
	total := len(e[0]) + len(e[1]) + len(e[2])
	t.Logf("3-participant lifecycle: Begin %d + Decide %d + Complete %d = %d bytes", len(e[0]), len(e[1]), len(e[2]), total)
	// The derived URL form and raw UUIDs keep a whole transaction near 200 bytes of log.
	if total > 200 {
		t.Errorf("lifecycle takes %d log bytes", total)
	}
}

// BenchmarkApplyTxnLifecycle applies Begin, Decide and Complete of one 3-participant
// transaction per iteration through Apply (decode + apply). Entries are encoded outside
// the timer; the FSM is renewed every chunk so that it does not grow without bound.
func BenchmarkApplyTxnLifecycle(b *testing.B) {
	const chunk = 4096
	b.ReportAllocs()
	var f *fsm.FSM
	var entries [][3][]byte
	idx := uint64(0)
	size := 0
	for i := 0; i < b.N; i++ {
		if i%chunk == 0 {
			b.StopTimer()
			f = fsm.New()
			entries = entries[:0]
			for j := range chunk {
				entries = append(entries, lifecycle(i+j))
			}
			b.StartTimer()
		}
		e := entries[i%chunk]
		for _, data := range e {
			idx++
			if r := f.Apply(&raft.Log{Index: idx, Data: data}).(fsm.Result); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		size = len(e[0]) + len(e[1]) + len(e[2])
	}
	b.ReportMetric(float64(size), "logbytes/txn")
}

func BenchmarkEncodeBegin(b *testing.B) {
	c := &fsm.Begin{ID: benchID(1), Key: "order-42", CreatedAt: t0, Deadline: t0 + 10_000, Participants: parts(3)}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = len(fsm.Encode(c))
	}
	b.ReportMetric(float64(n), "bytes/op-encoded")
}
