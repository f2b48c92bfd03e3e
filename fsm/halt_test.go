package fsm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/version"
)

// haltRecorder is an OnHalt handler that records every call.
type haltRecorder struct{ calls []*fsm.HaltError }

func (h *haltRecorder) on(e *fsm.HaltError) { h.calls = append(h.calls, e) }

// TestUnknownCommandHaltsTheFSM (issue 11): an entry of a type this build does not know is
// never applied as a no-op. The FSM halts at it: AppliedIndex stays before it, nothing after
// it is applied, and the handler gets, once, an error naming the index, the type and this
// build's version.
func TestUnknownCommandHaltsTheFSM(t *testing.T) {
	for name, data := range map[string][]byte{
		"unknown type":     {0x70, 1, 2, 3},
		"truncated Begin":  fsm.Encode(begin("x", 3))[:9],
		"empty entry":      {},
		"trailing garbage": append(fsm.Encode(&fsm.Prune{FinishedBefore: 5}), 0),
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			var h haltRecorder
			n.f.OnHalt(h.on)
			n.must(begin("a", 1))
			n.idx++
			res := n.raw(data)
			if !errors.Is(res.Err, fsm.ErrHalted) || !errors.Is(res.Err, fsm.ErrCorrupt) {
				t.Fatalf("bad entry: %v, want ErrHalted and ErrCorrupt", res.Err)
			}
			if len(h.calls) != 1 {
				t.Fatalf("handler called %d times, want once", len(h.calls))
			}
			msg := h.calls[0].Error()
			for _, want := range []string{"log entry 2", "txcoord " + version.Version, "upgrade this node"} {
				if !strings.Contains(msg, want) {
					t.Errorf("halt message %q lacks %q", msg, want)
				}
			}
			if name == "unknown type" && (!strings.Contains(msg, "command type 112") || !errors.Is(res.Err, fsm.ErrUnknownCommand)) {
				t.Errorf("halt message %q does not name the unknown type 112", msg)
			}
			if got := n.f.AppliedIndex(); got != 1 {
				t.Fatalf("AppliedIndex = %d after the bad entry, want 1", got)
			}
			// Later entries are refused too, and change nothing.
			n.idx++
			if res := n.raw(fsm.Encode(begin("b", 1))); !errors.Is(res.Err, fsm.ErrHalted) {
				t.Fatalf("entry after the halt: %v, want ErrHalted", res.Err)
			}
			if res := n.f.ApplyCommand(9, begin("c", 1)); !errors.Is(res.Err, fsm.ErrHalted) {
				t.Fatalf("ApplyCommand after the halt: %v, want ErrHalted", res.Err)
			}
			if _, ok := n.f.Get("b"); ok {
				t.Fatal("an entry after the halt was applied")
			}
			if n.f.AppliedIndex() != 1 || len(h.calls) != 1 {
				t.Fatalf("after the halt: AppliedIndex %d, %d handler calls", n.f.AppliedIndex(), len(h.calls))
			}
			if err := n.f.Halted(); !errors.Is(err, fsm.ErrHalted) {
				t.Fatalf("Halted() = %v", err)
			}
		})
	}
}

// TestIgnoreUnknownTypeIsSkipped: an unknown type with the IgnoreUnknown bit is the one
// kind of entry a build skips; the index moves past it and later entries apply.
func TestIgnoreUnknownTypeIsSkipped(t *testing.T) {
	n := newNode(t)
	var h haltRecorder
	n.f.OnHalt(h.on)
	n.idx++
	if res := n.raw([]byte{byte(fsm.IgnoreUnknown | 0x33), 9, 9}); res.Err != nil {
		t.Fatalf("skippable entry: %v", res.Err)
	}
	n.must(begin("a", 1))
	if n.f.AppliedIndex() != 2 || len(h.calls) != 0 || n.f.Halted() != nil {
		t.Fatalf("AppliedIndex %d, halts %d, halted %v", n.f.AppliedIndex(), len(h.calls), n.f.Halted())
	}
}

// TestSetFeatures: the cluster's level rises with SetFeatures and never goes down; a command
// of a level the cluster has not enabled is refused on every node alike; a level beyond
// this build halts the FSM.
func TestSetFeatures(t *testing.T) {
	n := newNode(t)
	var h haltRecorder
	n.f.OnHalt(h.on)
	if res := n.do(&fsm.TestLevel1{NodeID: "early"}); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("level-1 command at level 0: %v, want ErrInvalid", res.Err)
	}
	if _, ok := n.f.Members()["early"]; ok {
		t.Fatal("a level-1 command was applied at level 0")
	}
	n.must(&fsm.SetFeatures{Level: 1, At: t0 + 5})
	n.must(&fsm.SetFeatures{Level: 0, At: t0 + 6})
	if got := n.f.FeatureLevel(); got != 1 {
		t.Fatalf("FeatureLevel = %d after 1 then 0, want 1", got)
	}
	n.must(&fsm.TestLevel1{NodeID: "late"})
	if n.f.Members()["late"] != "level-1" {
		t.Fatal("level-1 command not applied at level 1")
	}
	if got := n.f.LastTimestamp(); got != t0+6 {
		t.Fatalf("LastTimestamp = %d, want %d", got, t0+6)
	}
	n.idx++
	res := n.raw(fsm.Encode(&fsm.SetFeatures{Level: version.FeatureLevel + 1, At: t0 + 7}))
	if !errors.Is(res.Err, fsm.ErrHalted) || len(h.calls) != 1 {
		t.Fatalf("a level beyond this build: %v, %d halts", res.Err, len(h.calls))
	}
	if !strings.Contains(h.calls[0].Error(), "feature level") || n.f.FeatureLevel() != 1 {
		t.Fatalf("halt %q, level %d", h.calls[0].Error(), n.f.FeatureLevel())
	}
}

// TestLastTimestampFollowsTheLog: the log's clock is the latest timestamp an applied command
// carried, whatever the order; refused commands do not move it.
func TestLastTimestampFollowsTheLog(t *testing.T) {
	n := newNode(t)
	n.must(&fsm.Begin{ID: "a", CreatedAt: t0 + 100, Deadline: t0 + 200, Participants: parts(1)})
	n.must(&fsm.Begin{ID: "b", CreatedAt: t0 + 50, Deadline: t0 + 200, Participants: parts(1)})
	if got := n.f.LastTimestamp(); got != t0+100 {
		t.Fatalf("after two Begins: %d, want %d", got, t0+100)
	}
	n.do(&fsm.Decide{ID: "missing", Decision: fsm.DecisionAbort, At: t0 + 999, Votes: []fsm.Vote{fsm.VoteNo}})
	if got := n.f.LastTimestamp(); got != t0+100 {
		t.Fatalf("a refused Decide moved the clock to %d", got)
	}
	n.must(&fsm.DecideCommit{ID: "a", AfterMs: 30})
	n.must(&fsm.Complete{At: t0 + 140, Items: []fsm.Completion{{ID: "a"}}})
	if got := n.f.LastTimestamp(); got != t0+140 {
		t.Fatalf("after Complete: %d, want %d", got, t0+140)
	}
}
