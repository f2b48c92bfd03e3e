package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := Summarize(ds)
	if d.N != 100 || d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Max != 100 || math.Abs(d.Mean-50.5) > 1e-9 {
		t.Fatalf("Summarize = %+v", d)
	}
	if (Summarize(nil) != Dist{}) {
		t.Fatal("empty input must give a zero Dist")
	}
	if d := Summarize([]time.Duration{3 * time.Millisecond}); d.P50 != 3 || d.P99 != 3 {
		t.Fatalf("one sample: %+v", d)
	}
}

func TestRefusesIsDeterministicAndOnePerTransaction(t *testing.T) {
	const n, txns = 3, 20000
	refused := 0
	for i := 0; i < txns; i++ {
		id := "txn-" + time.Duration(i).String()
		who := 0
		for p := 0; p < n; p++ {
			if Refuses(id, p, n, 0.2) {
				who++
			}
			if Refuses(id, p, n, 0.2) != Refuses(id, p, n, 0.2) {
				t.Fatal("not deterministic")
			}
		}
		if who > 1 {
			t.Fatalf("%s refused by %d participants", id, who)
		}
		refused += who
	}
	if got := float64(refused) / txns; got < 0.18 || got > 0.22 {
		t.Fatalf("refused share %.3f, want about 0.2", got)
	}
	for p := 0; p < n; p++ {
		if Refuses("x", p, n, 0) {
			t.Fatal("rate 0 refuses")
		}
	}
	all := 0
	for p := 0; p < n; p++ {
		if Refuses("x", p, n, 1) {
			all++
		}
	}
	if all != 1 {
		t.Fatalf("rate 1: %d participants refuse, want exactly 1", all)
	}
}

func TestFastParticipantAnswersAndRecords(t *testing.T) {
	rec := NewRecorder()
	srv := httptest.NewServer(&FastParticipant{Index: 0, Of: 1, NackRate: 1, Rec: rec})
	defer srv.Close()
	post := func(phase, id string) (int, string) {
		body := `{"transactionId":"` + id + `","deadline":"2030-01-01T00:00:00.000Z"}`
		resp, err := http.Post(srv.URL+"/p0/"+phase, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r.Status
	}
	if code, st := post("prepare", "t1"); code != 200 || st != "NACK" {
		t.Fatalf("prepare at NACK rate 1: %d %s", code, st)
	}
	if code, st := post("rollback", "t1"); code != 200 || st != "ACK" {
		t.Fatalf("rollback: %d %s", code, st)
	}
	if code, _ := post("other", "t1"); code != 404 {
		t.Fatalf("unknown phase: %d", code)
	}
	if code, _ := post("prepare", ""); code != 400 {
		t.Fatalf("missing id: %d", code)
	}
	post("prepare", FloorIDPrefix+"1")
	tm, ok := rec.Take("t1")
	if !ok || tm.Prepares != 1 || tm.Twos != 1 || tm.PrepareFirst < 0 || tm.TwoFirst < tm.PrepareLast {
		t.Fatalf("timing %+v %v", tm, ok)
	}
	if rec.Len() != 0 {
		t.Fatalf("recorder keeps %d entries; floor calls must not be recorded", rec.Len())
	}
}

// TestRunInProcess runs the whole tool small: own cluster, floor, two concurrency levels
// with NACKs, and the log read-back.
func TestRunInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	rep, err := Run(context.Background(), Config{
		NumParticipants: 3, NackRate: 0.25, Concurrency: []int{1, 8}, Count: 40,
		Floor: true, FloorTime: 100 * time.Millisecond, FloorConc: 8, MeasureLog: true,
		Timeout: 5 * time.Second, DataDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Floor == nil || rep.Floor.RaftApply.N == 0 || rep.Floor.ParticipantRound.N == 0 || rep.Floor.FloorMs <= 0 || rep.Floor.ThreeCommitMs <= rep.Floor.FloorMs {
		t.Fatalf("floor %+v", rep.Floor)
	}
	if len(rep.Runs) != 2 || len(rep.Ratios) != 2 {
		t.Fatalf("%d runs, %d ratios", len(rep.Runs), len(rep.Ratios))
	}
	for _, r := range rep.Runs {
		if len(r.Errors) != 0 {
			t.Fatalf("c=%d: errors %v", r.Concurrency, r.Errors)
		}
		if r.Answered != 40 || r.Outcomes["committed"]+r.Outcomes["rolled_back"] != 40 {
			t.Fatalf("c=%d: answered %d, outcomes %v", r.Concurrency, r.Answered, r.Outcomes)
		}
		if r.Outcomes["rolled_back"] == 0 || r.Outcomes["committed"] == 0 {
			t.Fatalf("c=%d: want both outcomes at NACK rate 0.25, got %v", r.Concurrency, r.Outcomes)
		}
		if r.Phases.Source != "participants" || r.Phases.PhaseOne.N != 40 || r.Phases.Begin == nil || r.Latency.P50 <= 0 {
			t.Fatalf("c=%d: phases %+v latency %+v", r.Concurrency, r.Phases, r.Latency)
		}
		if r.Phases.PhaseOne.P50 > r.Latency.Max || r.Phases.PhaseTwo.P50 > r.Latency.Max {
			t.Fatalf("c=%d: a phase exceeds the whole: %+v vs %+v", r.Concurrency, r.Phases, r.Latency)
		}
	}
	if len(rep.Log) != 3 {
		t.Fatalf("log stats for %d nodes", len(rep.Log))
	}
	for _, l := range rep.Log {
		if l.Transactions != 80 || l.Completions > 80 {
			t.Fatalf("%s: %d begins, %d completions; want 80 begins and at most 80 completions", l.Node, l.Transactions, l.Completions)
		}
		if l.StoredPerTxn <= l.DataPerTxn || l.DataPerTxn <= 0 || l.EntriesPerTxn < 2 {
			t.Fatalf("%s: %+v", l.Node, l)
		}
		t.Logf("%s: %.1f stored bytes/txn, %.1f command bytes/txn, %.2f entries/txn", l.Node, l.StoredPerTxn, l.DataPerTxn, l.EntriesPerTxn)
	}
	var sb strings.Builder
	rep.WriteText(&sb)
	for _, want := range []string{"Floor", "Concurrency 1:", "Concurrency 8:", "vs floor", "stored bytes/txn"} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestRunAgainstURLs drives a cluster and participants given by URL, through a follower,
// with phase times read back from the server.
func TestRunAgainstURLs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cl, err := startCluster(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ps, err := StartParticipants("127.0.0.1", 0, 2, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	rep, err := Run(context.Background(), Config{
		Nodes: cl.URLs(), Target: "follower", Participants: ps.PrepareURLs,
		Concurrency: []int{3}, Count: 30, Sample: 1, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	if len(r.Errors) != 0 || r.Outcomes["committed"] != 30 {
		t.Fatalf("errors %v, outcomes %v", r.Errors, r.Outcomes)
	}
	if r.Phases.Source != "server-timestamps" || r.Phases.PhaseOne.N != 30 || r.Phases.Begin != nil {
		t.Fatalf("phases %+v", r.Phases)
	}
	if len(rep.Setup.Entry) != 1 || rep.Setup.Entry[0] == cl.Node(cl.Leader()).URL() || rep.Log != nil {
		t.Fatalf("entry %v (leader %s), log %v", rep.Setup.Entry, cl.Node(cl.Leader()).URL(), rep.Log)
	}
}

// Fast-mode runs are compared with default-mode runs of the same concurrency: ratios of
// p50, committed/s and CPU per transaction; without both modes, no comparison.
func TestCompareModes(t *testing.T) {
	run := func(mode string, conc int, p50, committed, cpu float64) *RunResult {
		return &RunResult{Mode: mode, Concurrency: conc, Latency: Dist{P50: p50}, CommittedPerSec: committed, CPUPerTxnMs: cpu}
	}
	got := CompareModes([]*RunResult{
		run(ModeDefault, 1, 2, 500, 1), run(ModeDefault, 64, 20, 1000, 0.8),
		run(ModeFast, 1, 1, 1000, 0.5), run(ModeFast, 64, 10, 1500, 0.4),
	})
	want := []ModeRatio{{Concurrency: 1, P50: 0.5, Committed: 2, CPUPerTxn: 0.5}, {Concurrency: 64, P50: 0.5, Committed: 1.5, CPUPerTxn: 0.5}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("CompareModes = %v, want %v", got, want)
	}
	if got := CompareModes([]*RunResult{run("", 1, 2, 500, 1)}); got != nil {
		t.Fatalf("one mode only: %v, want none", got)
	}
	f := &Floor{FloorMs: 4, FastFloorMs: 2}
	if r := Compare(f, run(ModeFast, 1, 3, 0, 0)); r.P50OverFloor != 1.5 {
		t.Fatalf("fast run over its floor: %v, want 1.5 (over the one-commit floor)", r.P50OverFloor)
	}
}
