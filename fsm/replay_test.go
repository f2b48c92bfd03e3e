package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"math/rand"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// gen produces a random but reproducible log: every command type, valid and invalid, on a
// pool of transaction ids, with the occasional corrupt entry. Timestamps come from the
// generator's own "leader clock", as a leader would stamp them.
type gen struct {
	r     *rand.Rand
	ids   []string
	parts map[string]int // participant count of each id
	clock int64
}

func newGen(seed int64) *gen {
	g := &gen{r: rand.New(rand.NewSource(seed)), parts: map[string]int{}, clock: t0}
	for i := range 80 {
		var id string
		if i%2 == 0 {
			var b [16]byte
			g.r.Read(b[:])
			h := fmt.Sprintf("%x", b)
			id = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
		} else {
			id = "txn-" + strconv.Itoa(i)
		}
		g.ids = append(g.ids, id)
		g.parts[id] = 1 + g.r.Intn(4)
	}
	return g
}

func (g *gen) id() string { return g.ids[g.r.Intn(len(g.ids))] }

func (g *gen) participants(n int) []fsm.Participant {
	ps := make([]fsm.Participant, n)
	for i := range ps {
		base := fmt.Sprintf("http://127.0.0.1:%d/", 9001+g.r.Intn(5))
		ps[i] = fsm.Participant{Prepare: base + "prepare", Commit: base + "commit", Rollback: base + "rollback"}
		if g.r.Intn(4) == 0 {
			ps[i].Rollback = base + "cancel"
		}
	}
	return ps
}

func (g *gen) reports(n int) []fsm.Report {
	rs := make([]fsm.Report, n)
	for i := range rs {
		rs[i] = fsm.Report{Acked: g.r.Intn(3) == 0, Attempts: uint32(g.r.Intn(6))}
		if !rs[i].Acked && g.r.Intn(2) == 0 {
			rs[i].Error = []string{"HTTP 500", "timeout", "connection reset"}[g.r.Intn(3)]
		}
	}
	return rs
}

// count returns n, or now and then a wrong count.
func (g *gen) count(n int) int {
	if g.r.Intn(20) == 0 {
		return g.r.Intn(n + 2)
	}
	return n
}

func (g *gen) next() []byte {
	g.clock += int64(g.r.Intn(50))
	switch k := g.r.Intn(110); {
	case k < 2: // the cluster's feature level (never lowered, whatever the entry says)
		return fsm.Encode(&fsm.SetFeatures{Level: uint32(g.r.Intn(4)), At: g.clock})
	case k >= 104: // fast mode (level 3): a transaction and its decision in one entry
		id := g.id()
		n := g.count(g.parts[id])
		fd := &fsm.FastDecide{Begin: fsm.Begin{ID: id, CreatedAt: g.clock - 900, Deadline: g.clock + 100 - int64(g.r.Intn(2000)), Participants: g.participants(n)},
			Decision: fsm.DecisionCommit, AfterMs: 900}
		if g.r.Intn(3) == 0 {
			fd.Key = "key-" + strconv.Itoa(g.r.Intn(30))
		}
		if g.r.Intn(2) == 0 {
			fd.Decision = fsm.DecisionAbort
			fd.Votes, fd.Reasons = make([]fsm.Vote, g.count(n)), make([]string, n)
			for i := range fd.Votes {
				fd.Votes[i] = fsm.Vote(g.r.Intn(4))
			}
		}
		return fsm.Encode(fd)
	case k >= 100: // an inquiry past the deadline for an id with no record
		return fsm.Encode(&fsm.PresumeAbort{ID: g.id(), At: g.clock, Deadline: g.clock - int64(g.r.Intn(5000))})
	case k < 22:
		id := g.id()
		b := &fsm.Begin{ID: id, CreatedAt: g.clock, Deadline: g.clock + 1000, Participants: g.participants(g.count(g.parts[id]))}
		if g.r.Intn(3) == 0 {
			b.Key = "key-" + strconv.Itoa(g.r.Intn(30))
		}
		return fsm.Encode(b)
	case k < 40:
		id := g.id()
		n := g.count(g.parts[id])
		d := &fsm.Decide{ID: id, At: g.clock, Votes: make([]fsm.Vote, n), Reasons: make([]string, n)}
		d.Decision = fsm.DecisionCommit
		if g.r.Intn(2) == 0 {
			d.Decision = fsm.DecisionAbort
		}
		for i := range d.Votes {
			d.Votes[i] = fsm.VoteYes
			if d.Decision == fsm.DecisionAbort || g.r.Intn(15) == 0 {
				d.Votes[i] = fsm.Vote(g.r.Intn(4))
			}
			if d.Votes[i] == fsm.VoteNo {
				d.Reasons[i] = "no stock"
			}
		}
		return fsm.Encode(d)
	case k < 58:
		c := &fsm.Complete{At: g.clock}
		for range 1 + g.r.Intn(4) {
			id := g.id()
			at := make([]uint32, g.parts[id])
			for i := range at {
				at[i] = uint32(1 + g.r.Intn(3))
			}
			c.Items = append(c.Items, fsm.Completion{ID: id, Attempts: at})
		}
		return fsm.Encode(c)
	case k < 66:
		id := g.id()
		return fsm.Encode(&fsm.Fail{ID: id, At: g.clock, Reports: g.reports(g.count(g.parts[id]))})
	case k < 76:
		id := g.id()
		return fsm.Encode(&fsm.Progress{ID: id, Reports: g.reports(g.count(g.parts[id]))})
	case k < 84:
		return fsm.Encode(&fsm.Retry{ID: g.id(), At: g.clock, Note: "retry " + strconv.Itoa(g.r.Intn(9))})
	case k < 92:
		return fsm.Encode(&fsm.Resolve{ID: g.id(), At: g.clock, Note: "resolved"})
	case k < 96:
		return fsm.Encode(&fsm.Prune{FinishedBefore: g.clock - int64(g.r.Intn(3000)), KeysBefore: g.clock - int64(g.r.Intn(6000))})
	default:
		addr := ""
		if g.r.Intn(4) != 0 {
			addr = "10.0.0." + strconv.Itoa(g.r.Intn(9)) + ":8080"
		}
		return fsm.Encode(&fsm.SetMember{NodeID: "node-" + strconv.Itoa(g.r.Intn(5)), HTTPAddr: addr})
	}
}

func randomLog(seed int64, n int) []*raft.Log {
	g := newGen(seed)
	log := make([]*raft.Log, n)
	for i := range log {
		log[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: g.next()}
	}
	return log
}

func applyAll(t testing.TB, f *fsm.FSM, log []*raft.Log) []fsm.Result {
	t.Helper()
	out := make([]fsm.Result, len(log))
	for i, l := range log {
		r, ok := f.Apply(l).(fsm.Result)
		if !ok {
			t.Fatalf("entry %d: Apply returned %T", l.Index, f.Apply(l))
		}
		out[i] = r
	}
	return out
}

var sentinels = []error{fsm.ErrExists, fsm.ErrKeyExists, fsm.ErrNotFound, fsm.ErrDecided, fsm.ErrBadTransition, fsm.ErrInvalid, fsm.ErrPresumedAbort, fsm.ErrBeyondHorizon}

func kind(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "unknown: " + err.Error()
}

const logLen = 4000

// TestSameLogSameState feeds two FSMs the same random log: every entry gets the same
// result on both, and they end byte-identical.
func TestSameLogSameState(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run("seed="+strconv.FormatInt(seed, 10), func(t *testing.T) {
			log := randomLog(seed, logLen)
			a, b := fsm.New(), fsm.New()
			ra, rb := applyAll(t, a, log), applyAll(t, b, log)
			kinds := map[string]int{}
			for i := range ra {
				if ra[i].Err == nil != (rb[i].Err == nil) || (ra[i].Err != nil && ra[i].Err.Error() != rb[i].Err.Error()) {
					t.Fatalf("entry %d: results differ: %v vs %v", i+1, ra[i].Err, rb[i].Err)
				}
				if !reflect.DeepEqual(ra[i].Txn, rb[i].Txn) {
					t.Fatalf("entry %d: result records differ:\n%+v\n%+v", i+1, ra[i].Txn, rb[i].Txn)
				}
				kinds[kind(ra[i].Err)]++
			}
			sa, sb := snapBytes(t, a), snapBytes(t, b)
			if !bytes.Equal(sa, sb) {
				t.Fatal("two FSMs fed the same log differ")
			}
			if a.AppliedIndex() != logLen {
				t.Fatalf("AppliedIndex = %d, want %d", a.AppliedIndex(), logLen)
			}
			// The log must exercise the FSM, or this test proves nothing.
			for _, s := range append([]error{nil}, sentinels...) {
				if kinds[kind(s)] == 0 {
					t.Errorf("log never produced %q: %v", kind(s), kinds)
				}
			}
			seen := map[fsm.Status]bool{}
			for _, r := range ra {
				if r.Txn != nil {
					seen[r.Txn.Status] = true
				}
			}
			if len(seen) != 6 {
				t.Errorf("log reached only statuses %v", seen)
			}
			t.Logf("results %v, final %v, %d snapshot bytes", kinds, a.Counts(), len(sa))
		})
	}
}

// TestReplayFromSnapshot: restoring a snapshot taken at any point and replaying the rest
// of the log gives the same state as applying the whole log (what a restarted node does).
func TestReplayFromSnapshot(t *testing.T) {
	log := randomLog(7, logLen)
	whole := fsm.New()
	applyAll(t, whole, log)
	want := snapBytes(t, whole)
	for _, cut := range []int{0, 1, logLen / 3, logLen / 2, logLen - 1, logLen} {
		first := fsm.New()
		applyAll(t, first, log[:cut])
		snap := persist(t, first)
		// The node keeps applying after the snapshot was taken, then restarts from it.
		applyAll(t, first, log[cut:])
		restarted := restore(t, snap)
		if restarted.AppliedIndex() != uint64(cut) {
			t.Fatalf("cut %d: restored AppliedIndex = %d", cut, restarted.AppliedIndex())
		}
		applyAll(t, restarted, log[cut:])
		if got := snapBytes(t, restarted); !bytes.Equal(got, want) {
			t.Fatalf("cut %d: snapshot + replay differs from the whole log", cut)
		}
		if got := snapBytes(t, first); !bytes.Equal(got, want) {
			t.Fatalf("cut %d: taking a snapshot changed the state", cut)
		}
	}
}

// TestDuplicateDelivery (C07): an entry applied twice in a row, as after a crash between
// Apply and the durable record of it, leaves the state it leaves when applied once.
func TestDuplicateDelivery(t *testing.T) {
	log := randomLog(11, logLen)
	once, twice := fsm.New(), fsm.New()
	applyAll(t, once, log)
	for _, l := range log {
		twice.Apply(l)
		twice.Apply(l)
	}
	if !bytes.Equal(snapBytes(t, once), snapBytes(t, twice)) {
		t.Fatal("applying each entry twice changed the state")
	}
}

// TestApplyIsPure is the C07 lint rule: the package that Apply lives in imports no clock,
// no randomness, no network and no id minting, so replay cannot call a participant or
// stamp a new time.
func TestApplyIsPure(t *testing.T) {
	forbidden := []string{"time", "math/rand", "math/rand/v2", "crypto/rand", "net", "net/http", "os", "os/exec", "github.com/google/uuid"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad {
					t.Errorf("%s imports %q: Apply must take times and ids from the log entry", name, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}
