package fsm_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/fsm"
)

const goldenID = "0190a8e2-7b3c-7def-8123-456789abcdef"

// goldenTrace is the W3C specification's example traceparent.
const goldenTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// goldens pins the log encoding of one command of each type (and a second Begin with a
// string id and explicit URLs). Changing a hex literal here means every existing Raft log
// becomes unreadable: add a new command type instead.
var goldens = []struct {
	name string
	cmd  fsm.Command
	hex  string
}{
	{"Begin", &fsm.Begin{
		ID: goldenID, Key: "order-42", CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{
			{Prepare: "http://127.0.0.1:9001/prepare", Commit: "http://127.0.0.1:9001/commit", Rollback: "http://127.0.0.1:9001/rollback"},
			{Prepare: "http://pay/tx/p", Commit: "http://pay/tx/c", Rollback: "http://pay/tx/r"},
		},
	}, "01010190a8e27b3c7def8123456789abcdef086f726465722d343280a0abfef962904e02001d687474703a2f2f3132372e302e302e313a393030312f70726570617265010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474703a2f2f7061792f74782f72"},
	{"Begin/string-id", &fsm.Begin{
		ID: "legacy-7", CreatedAt: -1, Deadline: -1,
		Participants: []fsm.Participant{{Prepare: "http://h/prepare", Commit: "http://h/commit", Rollback: "http://h/undo"}},
	}, "0100086c65676163792d37000100010110687474703a2f2f682f707265706172650f687474703a2f2f682f636f6d6d69740d687474703a2f2f682f756e646f"},
	{"Decide", &fsm.Decide{
		ID: goldenID, Decision: fsm.DecisionAbort, At: t0 + 120,
		Votes:   []fsm.Vote{fsm.VoteYes, fsm.VoteNo, fsm.VoteNone, fsm.VoteError},
		Reasons: []string{"", "no rooms", "", "HTTP 500"},
	}, "02010190a8e27b3c7def8123456789abcdef02f0a1abfef96204010002086e6f20726f6f6d73000003084854545020353030"},
	{"Complete", &fsm.Complete{At: t0 + 300, Items: []fsm.Completion{
		{ID: goldenID, Attempts: []uint32{1, 2, 300}},
		{ID: "legacy-7", Attempts: []uint32{}},
	}}, "03d8a4abfef96202010190a8e27b3c7def8123456789abcdef030102ac0200086c65676163792d3700"},
	{"Fail", &fsm.Fail{ID: goldenID, At: t0 + 900, Reports: []fsm.Report{
		{Acked: true, Attempts: 1},
		{Attempts: 5, Error: "HTTP 503"},
	}}, "04010190a8e27b3c7def8123456789abcdef88aeabfef962020101000005084854545020353033"},
	{"Progress", &fsm.Progress{ID: goldenID, Reports: []fsm.Report{{Attempts: 2, Error: "timeout"}}}, "05010190a8e27b3c7def8123456789abcdef0100020774696d656f7574"},
	{"Retry", &fsm.Retry{ID: goldenID, At: t0 + 1000, Note: "fixed DNS"}, "06010190a8e27b3c7def8123456789abcdefd0afabfef96209666978656420444e53"},
	{"Resolve", &fsm.Resolve{ID: goldenID, At: t0 + 2000, Note: "refunded"}, "07010190a8e27b3c7def8123456789abcdefa0bfabfef96208726566756e646564"},
	{"Prune", &fsm.Prune{FinishedBefore: t0, KeysBefore: t0 - 86_400_000}, "0880a0abfef96280b0f8abf962"},
	{"SetMember", &fsm.SetMember{NodeID: "node-1", HTTPAddr: "10.0.0.1:8080"}, "09066e6f64652d310d31302e302e302e313a38303830"},
	{"Define", &fsm.Define{Participants: []fsm.Participant{
		{Prepare: "http://127.0.0.1:9001/prepare", Commit: "http://127.0.0.1:9001/commit", Rollback: "http://127.0.0.1:9001/rollback"},
	}}, "0a01001d687474703a2f2f3132372e302e302e313a393030312f70726570617265"},
	{"DecideCommit", &fsm.DecideCommit{ID: goldenID, AfterMs: 120}, "0b010190a8e27b3c7def8123456789abcdeff001"},
	{"SetFeatures", &fsm.SetFeatures{Level: 1, At: t0 + 3000}, "0c01f0ceabfef962"},
	{"BeginPayloads", &fsm.Begin{
		ID: goldenID, Key: "order-43", CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{{}, {Prepare: "http://127.0.0.1:9002/prepare", Commit: "http://127.0.0.1:9002/commit", Rollback: "http://127.0.0.1:9002/rollback"}},
		Refs:         []int32{0, -1},
		Payloads:     []string{`{"seats":2,"flight":"LH400"}`, ""},
	}, "0d010190a8e27b3c7def8123456789abcdef086f726465722d343380a0abfef962904e020200001d687474703a2f2f3132372e302e302e313a393030322f707265706172651c7b227365617473223a322c22666c69676874223a224c48343030227d00"},
	{"PresumeAbort", &fsm.PresumeAbort{ID: goldenID, At: t0 + 7000, Deadline: t0 + 5000}, "0e010190a8e27b3c7def8123456789abcdefb08dacfef962a01f"},
	{"FastDecide", &fsm.FastDecide{Begin: fsm.Begin{ID: goldenID, Key: "order-44", CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{{}, {Prepare: "http://pay/tx/p", Commit: "http://pay/tx/c", Rollback: "http://pay/tx/r"}, {}}, Refs: []int32{0, -1, 2}},
		Decision: fsm.DecisionCommit, AfterMs: 37},
		"0f010190a8e27b3c7def8123456789abcdef086f726465722d343480a0abfef962904e030200010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474703a2f2f7061792f74782f720202014a"},
	{"FastDecide/abort", &fsm.FastDecide{Begin: fsm.Begin{ID: "legacy-8", CreatedAt: t0, Deadline: t0 + 1000,
		Participants: []fsm.Participant{
			{Prepare: "http://127.0.0.1:9001/prepare", Commit: "http://127.0.0.1:9001/commit", Rollback: "http://127.0.0.1:9001/rollback"},
			{Prepare: "http://127.0.0.1:9002/prepare", Commit: "http://127.0.0.1:9002/commit", Rollback: "http://127.0.0.1:9002/rollback"}}},
		Decision: fsm.DecisionAbort, AfterMs: 1000, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNone}, Reasons: []string{"", "no answer within 1000 ms"}},
		"0f00086c65676163792d380080a0abfef962d00f02001d687474703a2f2f3132372e302e302e313a393030312f70726570617265001d687474703a2f2f3132372e302e302e313a393030322f7072657061726502d00f02010000186e6f20616e737765722077697468696e2031303030206d73"},
	{"BeginTraced", &fsm.Begin{
		ID: goldenID, CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{{Prepare: "http://pay/prepare", Commit: "http://pay/commit", Rollback: "http://pay/rollback"}},
		Trace:        goldenTrace,
	}, "10010190a8e27b3c7def8123456789abcdef0080a0abfef962904e010012687474703a2f2f7061792f7072657061726500010af7651916cd43dd8448eb211c80319cb7ad6b716920333101"},
	{"BeginTraced/payloads", &fsm.Begin{
		ID: goldenID, Key: "order-44", CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{{}, {Prepare: "http://pay/prepare", Commit: "http://pay/commit", Rollback: "http://pay/rollback"}},
		Refs:         []int32{0, -1},
		Payloads:     []string{`{"seats":2}`, ""},
		Trace:        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", // upper case: kept as text
	}, "10010190a8e27b3c7def8123456789abcdef086f726465722d343480a0abfef962904e0202000012687474703a2f2f7061792f70726570617265010b7b227365617473223a327d00003730302d30414637363531393136434434334444383434384542323131433830333139432d423741443642373136393230333333312d3031"},
	{"Begin/refs", &fsm.Begin{
		ID: goldenID, CreatedAt: t0, Deadline: t0 + 5000,
		Participants: []fsm.Participant{{}, {Prepare: "http://pay/tx/p", Commit: "http://pay/tx/c", Rollback: "http://pay/tx/r"}, {}},
		Refs:         []int32{0, -1, 300},
	}, "01010190a8e27b3c7def8123456789abcdef0080a0abfef962904e030200010f687474703a2f2f7061792f74782f700f687474703a2f2f7061792f74782f630f687474703a2f2f7061792f74782f7202ac02"},
}

func TestGoldenEncoding(t *testing.T) {
	seen := map[fsm.CommandType]bool{}
	for _, g := range goldens {
		got := hex.EncodeToString(fsm.Encode(g.cmd))
		t.Logf("%s: %s", g.name, got)
		if got != g.hex {
			t.Errorf("%s: encoding changed\n got  %s\n want %s", g.name, got, g.hex)
		}
		seen[g.cmd.Type()] = true
	}
	for ct := fsm.CmdBegin; ct <= fsm.CmdBeginTraced; ct++ {
		if !seen[ct] {
			t.Errorf("no golden for command type %d", ct)
		}
	}
}

func TestGoldenHexMatchesCommand(t *testing.T) {
	// The other direction: the pinned bytes decode to the command (a newer binary reads
	// an old log).
	for _, g := range goldens {
		b, err := hex.DecodeString(g.hex)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		c, err := fsm.Decode(b)
		if err != nil {
			t.Fatalf("%s: Decode: %v", g.name, err)
		}
		if !reflect.DeepEqual(c, g.cmd) {
			t.Errorf("%s: Decode(golden) = %+v, want %+v", g.name, c, g.cmd)
		}
	}
}

// roundTrips adds edge values to the goldens. Slices are non-nil because Decode returns
// empty slices, not nil ones.
var roundTrips = []fsm.Command{
	&fsm.Begin{ID: "0190A8E2-7B3C-7DEF-8123-456789ABCDEF", Key: "k", CreatedAt: math.MinInt64, Deadline: math.MaxInt64,
		Participants: []fsm.Participant{{}, {Prepare: "prepare", Commit: "commit", Rollback: "rollback"}, {Prepare: "prepareprepare", Commit: "preparecommit", Rollback: "preparerollback"}}},
	&fsm.Begin{ID: "", Participants: []fsm.Participant{}},
	&fsm.Begin{ID: "00000000-0000-0000-0000-000000000000", CreatedAt: math.MaxInt64, Deadline: math.MinInt64, Participants: []fsm.Participant{{Prepare: "\xff\x00prepare"}}},
	&fsm.Decide{ID: "x", Decision: 200, At: math.MinInt64, Votes: []fsm.Vote{250}, Reasons: []string{"r"}},
	&fsm.Decide{ID: "x", Votes: []fsm.Vote{}, Reasons: []string{}},
	&fsm.Complete{At: -1, Items: []fsm.Completion{}},
	&fsm.Complete{Items: []fsm.Completion{{ID: "a", Attempts: []uint32{math.MaxUint32, 0}}}},
	&fsm.Fail{ID: goldenID, Reports: []fsm.Report{}},
	&fsm.Progress{ID: "p", Reports: []fsm.Report{{Acked: true, Attempts: math.MaxUint32, Error: "\x00"}}},
	&fsm.Retry{},
	&fsm.Resolve{ID: "r", At: math.MaxInt64, Note: string(bytes.Repeat([]byte("n"), 300))},
	&fsm.Prune{FinishedBefore: math.MinInt64, KeysBefore: math.MaxInt64},
	&fsm.SetMember{NodeID: "n", HTTPAddr: ""},
}

func TestDecodeEncodeRoundTrip(t *testing.T) {
	cmds := append([]fsm.Command(nil), roundTrips...)
	for _, g := range goldens {
		cmds = append(cmds, g.cmd)
	}
	for _, c := range cmds {
		b := fsm.Encode(c)
		if fsm.CommandType(b[0]) != c.Type() {
			t.Fatalf("%T: type byte %d, want %d", c, b[0], c.Type())
		}
		got, err := fsm.Decode(b)
		if err != nil {
			t.Fatalf("%T %+v: Decode: %v", c, c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip:\n got  %+v\n want %+v", got, c)
		}
	}
}

// TestDecodeTruncated: every proper prefix of every golden encoding, and every golden
// with a byte appended, is corrupt, and none of them panics.
func TestDecodeTruncated(t *testing.T) {
	for _, g := range goldens {
		b := fsm.Encode(g.cmd)
		for i := range len(b) {
			c, err := fsm.Decode(b[:i])
			if !errors.Is(err, fsm.ErrCorrupt) || c != nil {
				t.Fatalf("%s truncated to %d bytes: %+v, %v; want nil, ErrCorrupt", g.name, i, c, err)
			}
		}
		for _, extra := range []byte{0, 1, 0xff} {
			if _, err := fsm.Decode(append(bytes.Clone(b), extra)); !errors.Is(err, fsm.ErrCorrupt) {
				t.Fatalf("%s with a trailing byte: %v, want ErrCorrupt", g.name, err)
			}
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	x := []byte{0, 1, 'x'} // string id "x"
	cases := map[string][]byte{
		"empty":            nil,
		"type 0":           {0},
		"type 10":          cat([]byte{10}, fsm.Encode(&fsm.Prune{})[1:]),
		"type 127":         {127, 0, 0},
		"bad id tag":       {byte(fsm.CmdRetry), 2, 0, 0},
		"short uuid":       {byte(fsm.CmdRetry), 1, 1, 2, 3},
		"bad participant":  cat([]byte{1}, x, []byte{0, 0, 0, 1, 3, 0}),
		"ref out of range": cat([]byte{1}, x, []byte{0, 0, 0, 1, 2, 0x80, 0x80, 0x01}),
		"derived no word":  cat([]byte{1}, x, []byte{0, 0, 0, 1, 0, 3}, []byte("url")),
		"bad bool":         cat([]byte{byte(fsm.CmdProgress)}, x, []byte{1, 2, 0, 0}),
		"uvarint overflow": cat([]byte{byte(fsm.CmdProgress)}, x, bytes.Repeat([]byte{0xff}, 10), []byte{1}),
		"varint overflow":  cat([]byte{byte(fsm.CmdPrune)}, bytes.Repeat([]byte{0x80}, 10), []byte{2, 0}),
		"count > left":     cat([]byte{byte(fsm.CmdDecide)}, x, []byte{1, 0}, uv(3), []byte{1, 0, 1, 0}),
		"count 1<<20+1":    cat([]byte{byte(fsm.CmdSetMember)}, uv(1<<20+1), make([]byte, 1<<20+2)),
	}
	for name, b := range cases {
		c, err := fsm.Decode(b)
		if !errors.Is(err, fsm.ErrCorrupt) || c != nil {
			t.Errorf("%s: Decode = %+v, %v; want nil, ErrCorrupt", name, c, err)
		}
	}
}

// TestDecodeHugeLength: a length prefix of 2^60 in any length-prefixed field fails at once
// instead of allocating.
func TestDecodeHugeLength(t *testing.T) {
	huge := binary.AppendUvarint(nil, 1<<60)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	x := []byte{0, 1, 'x'} // string id "x"
	cases := map[string][]byte{
		"Begin id":             cat([]byte{1, 0}, huge),
		"Begin key":            cat([]byte{1}, x, huge),
		"Begin participants":   cat([]byte{1}, x, []byte{0, 0, 0}, huge),
		"Begin prepare url":    cat([]byte{1}, x, []byte{0, 0, 0, 1, 1}, huge),
		"Decide votes":         cat([]byte{2}, x, []byte{1, 0}, huge),
		"Decide reason":        cat([]byte{2}, x, []byte{1, 0, 1, 1}, huge),
		"Complete items":       cat([]byte{3, 0}, huge),
		"Complete attempts":    cat([]byte{3, 0, 1}, x, huge),
		"Fail reports":         cat([]byte{4}, x, []byte{0}, huge),
		"Progress reports":     cat([]byte{5}, x, huge),
		"Progress report text": cat([]byte{5}, x, []byte{1, 0, 0}, huge),
		"Retry note":           cat([]byte{6}, x, []byte{0}, huge),
		"Resolve note":         cat([]byte{7}, x, []byte{0}, huge),
		"SetMember node":       cat([]byte{9}, huge),
		"SetMember addr":       cat([]byte{9, 0}, huge),
	}
	for name, b := range cases {
		b = append(b, 'a', 'b', 'c')
		var err error
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		const runs = 100
		for range runs {
			_, err = fsm.Decode(b)
		}
		runtime.ReadMemStats(&ms1)
		// The input must fail at the length check, not earlier: else it tests nothing.
		if !errors.Is(err, fsm.ErrCorrupt) || !strings.Contains(err.Error(), "length out of range") {
			t.Errorf("%s: Decode = %v, want ErrCorrupt for the length", name, err)
		}
		if perRun := (ms1.TotalAlloc - ms0.TotalAlloc) / runs; perRun > 4096 {
			t.Errorf("%s: Decode allocated %d bytes per call", name, perRun)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, g := range goldens {
		f.Add(fsm.Encode(g.cmd))
	}
	for _, c := range roundTrips {
		f.Add(fsm.Encode(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := fsm.Decode(b)
		if err != nil {
			// An unknown type with the IgnoreUnknown bit is ErrSkippable; anything else
			// this build cannot read is ErrCorrupt.
			if !(errors.Is(err, fsm.ErrCorrupt) || errors.Is(err, fsm.ErrSkippable)) || c != nil {
				t.Fatalf("Decode = %+v, %v; want nil and ErrCorrupt or ErrSkippable", c, err)
			}
			return
		}
		if c.Type() != fsm.CommandType(b[0]) {
			t.Fatalf("decoded %T from type byte %d", c, b[0])
		}
		b2 := fsm.Encode(c)
		c2, err := fsm.Decode(b2)
		if err != nil {
			t.Fatalf("re-encoding of %+v does not decode: %v", c, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-encode round trip:\n %+v\n %+v", c, c2)
		}
		if b3 := fsm.Encode(c2); !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not canonical:\n %x\n %x", b2, b3)
		}
	})
}
