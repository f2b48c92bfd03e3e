package fsm_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

// TestBeginTraceNeedsLevel4: a Begin with a trace context (type 16) is refused on every
// node until the cluster enables feature level 4 (a build of level 3 could not apply it),
// and from then on the record keeps the trace; a Begin without one still applies as type 1.
func TestBeginTraceNeedsLevel4(t *testing.T) {
	n := newNode(t)
	n.must(&fsm.SetFeatures{Level: 3, At: t0})
	b := begin("traced", 2)
	b.Trace = goldenTrace
	if b.Type() != fsm.CmdBeginTraced || fsm.CmdBeginTraced != 16 || fsm.RequiredLevel(fsm.CmdBeginTraced) != 4 {
		t.Fatalf("type %d", b.Type())
	}
	if res := n.do(b); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("traced Begin at level 3: %v, want ErrInvalid", res.Err)
	}
	if _, ok := n.f.Get("traced"); ok {
		t.Fatal("a traced Begin was applied at level 3")
	}
	if tx := n.must(begin("plain", 2)); tx.Trace != "" {
		t.Fatalf("untraced record has trace %q", tx.Trace)
	}
	n.must(&fsm.SetFeatures{Level: 4, At: t0 + 1})
	if tx := n.must(b); tx.Trace != goldenTrace || tx.Payloads != nil {
		t.Fatalf("record %+v", tx)
	}
}

// TestDecodeTracedBeginErrors: a type-16 Begin must carry a trace context of a known form.
func TestDecodeTracedBeginErrors(t *testing.T) {
	good := fsm.Encode(&fsm.Begin{ID: "x", Participants: []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}}, Trace: goldenTrace})
	tagAt := len(good) - 26
	if good[tagAt] != 1 {
		t.Fatalf("trace tag not at %d in %s", tagAt, hex.EncodeToString(good))
	}
	for name, b := range map[string][]byte{
		"no trace":      append(append([]byte(nil), good[:tagAt]...), 2),
		"bad tag":       append(append([]byte(nil), good[:tagAt]...), 9),
		"short":         good[:len(good)-1],
		"text too long": append(append(append([]byte(nil), good[:tagAt]...), 0, 200, 1), make([]byte, 200)...),
	} {
		if _, err := fsm.Decode(b); !errors.Is(err, fsm.ErrCorrupt) {
			t.Errorf("%s: Decode = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestFastDecideLogsNoTrace: FastDecide (type 15) has no field for a trace context, so one
// set on its Begin is not logged: the entry is what a build of level 3 reads.
func TestFastDecideLogsNoTrace(t *testing.T) {
	plain := &fsm.FastDecide{Begin: fsm.Begin{ID: "fast-1", CreatedAt: t0, Deadline: t0 + 1000,
		Participants: []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}}},
		Decision: fsm.DecisionCommit, AfterMs: 3}
	traced := *plain
	traced.Trace = goldenTrace
	if a, b := fsm.Encode(plain), fsm.Encode(&traced); hex.EncodeToString(a) != hex.EncodeToString(b) || a[0] != byte(fsm.CmdFastDecide) {
		t.Fatalf("traced FastDecide encodes as %x, untraced as %x", b, a)
	}
}
