package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// FloorConfig is one floor measurement.
type FloorConfig struct {
	Leader *cluster.Node // the leader of the cluster the transactions will run on
	// Nodes, when set, are every node of that cluster: a leadership change during the
	// measurement (an election on a loaded machine) moves the applies to the new leader.
	Nodes       []*cluster.Node
	PrepareURLs []string // the fast participants
	// Time is how long each of the five measurements runs [2s]; the latency ones also stop
	// after 5,000 samples.
	Time time.Duration
	// Concurrency of the throughput measurements [64].
	Concurrency int
}

// Floor is what Raft and loopback HTTP cost on their own, measured on the same cluster and
// participants as the transactions. Times are milliseconds.
type Floor struct {
	// RaftApply: one Node.Apply of a no-op entry (an empty Prune: nothing to do in the
	// FSM) on the leader at concurrency 1: encode, append with fsync, replicate to a
	// quorum (each follower fsyncs), commit, apply.
	RaftApply Dist `json:"raftApply"`
	// RaftAppliesPerSec: the same with Concurrency appliers at once (raft batches them:
	// BatchApplyCh, MaxAppendEntries).
	RaftAppliesPerSec float64 `json:"raftAppliesPerSec"`
	// ParticipantCall: one POST prepare to a fast participant through call.Client
	// (the coordinator's client) at concurrency 1, keep-alive.
	ParticipantCall Dist `json:"participantCall"`
	// ParticipantRound: one call to each participant in parallel, as a phase round is
	// sent, until the last answers.
	ParticipantRound Dist `json:"participantRound"`
	// ParticipantCallsPerSec: calls/s with Concurrency callers spread over the participants.
	ParticipantCallsPerSec float64 `json:"participantCallsPerSec"`
	Concurrency            int     `json:"concurrency"`
	Participants           int     `json:"participants"`

	// FloorMs is the latency floor of one transaction at concurrency 1, from the p50s: 2
	// Raft commits in series (Begin, then the decision) and 2 participant rounds (prepare,
	// commit). This is the floor, and the current design's since the engine
	// answers once phase two is acknowledged and logs completions later, many per entry.
	FloorMs float64 `json:"floorMs"`
	// ThreeCommitMs adds a third commit: the floor of a design that logs completion before
	// it answers (txcoord before commit 7998e58), kept to compare older builds.
	ThreeCommitMs float64 `json:"threeCommitFloorMs"`
	// FastFloorMs is the latency floor of a transaction in fast mode (issue 17): 1 Raft
	// commit (the one entry with the decision) and 2 participant rounds.
	FastFloorMs float64 `json:"fastFloorMs"`
	// RaftBoundTxnPerSec = RaftAppliesPerSec / 2: two entries per transaction, the
	// completion folded away. HTTPBoundTxnPerSec = ParticipantCallsPerSec / (2P+1): one
	// client POST and P prepare and P commit calls. Each is measured with the whole machine
	// to itself; CombinedBoundTxnPerSec = 1 / (2/A + (2P+1)/H) is the bound when the two
	// share the CPU, as they do in a transaction.
	RaftBoundTxnPerSec     float64 `json:"raftBoundTxnPerSec"`
	HTTPBoundTxnPerSec     float64 `json:"httpBoundTxnPerSec"`
	CombinedBoundTxnPerSec float64 `json:"combinedBoundTxnPerSec"`

	// CPU time of this process per operation during the throughput measurements (all
	// three nodes, or client and participant, together), and the CPU floor of one
	// transaction: 2 applies + (2P+1) calls. These move much less than the rates above
	// when other work shares the machine. CPUBoundTxnPerSec = CPUs / CPUFloorPerTxnMs.
	RaftCPUPerApplyMs       float64 `json:"raftCpuPerApplyMs"`
	ParticipantCPUPerCallMs float64 `json:"participantCpuPerCallMs"`
	CPUFloorPerTxnMs        float64 `json:"cpuFloorPerTxnMs"`
	CPUBoundTxnPerSec       float64 `json:"cpuBoundTxnPerSec"`
	NumCPU                  int     `json:"numCPU"`
}

const floorMaxSamples = 5000

// MeasureFloor runs the floor measurements one after the other.
func MeasureFloor(ctx context.Context, c FloorConfig) (*Floor, error) {
	if c.Leader == nil || len(c.PrepareURLs) == 0 {
		return nil, fmt.Errorf("floor: needs the in-process leader and the built-in participants")
	}
	if c.Time <= 0 {
		c.Time = 2 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	f := &Floor{Concurrency: c.Concurrency, Participants: len(c.PrepareURLs)}
	ops := NewFloorOps(c.Leader, c.PrepareURLs)
	ops.nodes = c.Nodes
	apply := func() error { return ops.Apply(ctx) }
	call := func(url string) error { return ops.Call(ctx, url) }
	round := func() error { return ops.Round(ctx) }
	// Warm up connections and the log.
	for i := 0; i < 50; i++ {
		if err := apply(); err != nil {
			return nil, fmt.Errorf("floor: raft apply: %w", err)
		}
		if err := round(); err != nil {
			return nil, fmt.Errorf("floor: participant call: %w", err)
		}
	}
	var err error
	if f.RaftApply, err = latency(ctx, c.Time, apply); err != nil {
		return nil, fmt.Errorf("floor: raft apply: %w", err)
	}
	if f.ParticipantCall, err = latency(ctx, c.Time, func() error { return call(c.PrepareURLs[0]) }); err != nil {
		return nil, fmt.Errorf("floor: participant call: %w", err)
	}
	if f.ParticipantRound, err = latency(ctx, c.Time, round); err != nil {
		return nil, fmt.Errorf("floor: participant round: %w", err)
	}
	if f.RaftAppliesPerSec, f.RaftCPUPerApplyMs, err = throughput(ctx, c.Time, c.Concurrency, func(int) error { return apply() }); err != nil {
		return nil, fmt.Errorf("floor: raft apply throughput: %w", err)
	}
	if f.ParticipantCallsPerSec, f.ParticipantCPUPerCallMs, err = throughput(ctx, c.Time, c.Concurrency, func(i int) error { return ops.CallNth(ctx, i) }); err != nil {
		return nil, fmt.Errorf("floor: participant throughput: %w", err)
	}
	f.derive()
	return f, nil
}

// FloorOps are the floor's unit operations, shared by MeasureFloor and the Go benchmarks.
type FloorOps struct {
	mu          sync.Mutex
	nodes       []*cluster.Node // all nodes, to find a new leader; nil: only leader
	leader      *cluster.Node
	prepareURLs []string
	client      *call.Client
	seq         atomic.Int64
}

// NewFloorOps returns the operations against leader and the participants at prepareURLs.
func NewFloorOps(leader *cluster.Node, prepareURLs []string) *FloorOps {
	return &FloorOps{leader: leader, prepareURLs: prepareURLs, client: call.NewClient(call.ClientOptions{})}
}

// Apply commits one no-op entry (an empty Prune) through the leader's Node.Apply.
// When the leader has changed it retries once on the new one (found within 10 s).
func (o *FloorOps) Apply(ctx context.Context) error {
	o.mu.Lock()
	leader := o.leader
	o.mu.Unlock()
	_, err := leader.Apply(ctx, &fsm.Prune{})
	if err == nil || len(o.nodes) == 0 || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress)) {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, n := range o.nodes {
			if n.LeaderReady() {
				o.mu.Lock()
				o.leader = n
				o.mu.Unlock()
				_, err = n.Apply(ctx, &fsm.Prune{})
				return err
			}
		}
		time.Sleep(10 * time.Millisecond) // polling for a leader: there is no notification to await here
	}
	return err
}

// Call sends one prepare to the participant at url through call.Client, as the
// coordinator does.
func (o *FloorOps) Call(ctx context.Context, url string) error {
	id := FloorIDPrefix + strconv.FormatInt(o.seq.Add(1), 10)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := o.client.Call(cctx, url, participant.PhasePrepare, participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now().Add(10 * time.Second))})
	return err
}

// CallNth calls participant i modulo their number.
func (o *FloorOps) CallNth(ctx context.Context, i int) error {
	return o.Call(ctx, o.prepareURLs[i%len(o.prepareURLs)])
}

// Round calls every participant in parallel, one goroutine each as the coordinator does,
// and returns when the last has answered.
func (o *FloorOps) Round(ctx context.Context) error {
	errs := make(chan error, len(o.prepareURLs))
	for _, u := range o.prepareURLs {
		go func() { errs <- o.Call(ctx, u) }()
	}
	var first error
	for range o.prepareURLs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (f *Floor) derive() {
	f.FloorMs = 2*f.RaftApply.P50 + 2*f.ParticipantRound.P50
	f.ThreeCommitMs = 3*f.RaftApply.P50 + 2*f.ParticipantRound.P50
	f.FastFloorMs = f.RaftApply.P50 + 2*f.ParticipantRound.P50
	exchanges := float64(2*f.Participants + 1)
	if f.RaftAppliesPerSec > 0 {
		f.RaftBoundTxnPerSec = f.RaftAppliesPerSec / 2
	}
	if f.ParticipantCallsPerSec > 0 {
		f.HTTPBoundTxnPerSec = f.ParticipantCallsPerSec / exchanges
	}
	if f.RaftAppliesPerSec > 0 && f.ParticipantCallsPerSec > 0 {
		f.CombinedBoundTxnPerSec = 1 / (2/f.RaftAppliesPerSec + exchanges/f.ParticipantCallsPerSec)
	}
	f.NumCPU = runtime.NumCPU()
	f.CPUFloorPerTxnMs = 2*f.RaftCPUPerApplyMs + exchanges*f.ParticipantCPUPerCallMs
	if f.CPUFloorPerTxnMs > 0 {
		f.CPUBoundTxnPerSec = float64(f.NumCPU) * 1000 / f.CPUFloorPerTxnMs
	}
}

// latency calls fn in series for d (at most floorMaxSamples times).
func latency(ctx context.Context, d time.Duration, fn func() error) (Dist, error) {
	var ds []time.Duration
	end := time.Now().Add(d)
	for time.Now().Before(end) && len(ds) < floorMaxSamples && ctx.Err() == nil {
		t := time.Now()
		if err := fn(); err != nil {
			return Dist{}, err
		}
		ds = append(ds, time.Since(t))
	}
	return Summarize(ds), ctx.Err()
}

// throughput runs conc goroutines calling fn for d and returns calls/s and the process's
// CPU time per call (ms).
func throughput(ctx context.Context, d time.Duration, conc int, fn func(i int) error) (rate, cpuPerCall float64, err error) {
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := processCPU()
	end := start.Add(d)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := fn(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	if n.Load() > 0 {
		cpuPerCall = ms(cpu) / float64(n.Load())
	}
	return float64(n.Load()) / time.Since(start).Seconds(), cpuPerCall, ctx.Err()
}

// Ratios compares a load run with the floor.
type Ratios struct {
	Mode        string `json:"mode,omitempty"`
	Concurrency int    `json:"concurrency"`
	// P50OverFloor and P50OverThreeCommit: the run's p50 latency over each latency floor
	// (concurrency-1 figures; meaningful for the concurrency-1 run). In fast mode
	// P50OverFloor is over FastFloorMs (its floor has one Raft commit fewer).
	P50OverFloor       float64 `json:"p50OverFloor"`
	P50OverThreeCommit float64 `json:"p50OverThreeCommitFloor"`
	// Throughput: committed txn/s as a share of each throughput bound.
	OfRaftBound     float64 `json:"ofRaftBound"`
	OfHTTPBound     float64 `json:"ofHTTPBound"`
	OfCombinedBound float64 `json:"ofCombinedBound"`
	// CPUOverFloor: the run's CPU time per transaction over the floor's (2 applies and
	// 2P+1 calls): how much work txcoord adds around what Raft and HTTP must do.
	CPUOverFloor float64 `json:"cpuOverFloor"`
}

// Compare returns r's figures as ratios to f.
func Compare(f *Floor, r *RunResult) Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	floor := f.FloorMs
	if r.Mode == ModeFast {
		floor = f.FastFloorMs
	}
	return Ratios{
		Mode:               r.Mode,
		Concurrency:        r.Concurrency,
		P50OverFloor:       div(r.Latency.P50, floor),
		P50OverThreeCommit: div(r.Latency.P50, f.ThreeCommitMs),
		OfRaftBound:        div(r.CommittedPerSec, f.RaftBoundTxnPerSec),
		OfHTTPBound:        div(r.CommittedPerSec, f.HTTPBoundTxnPerSec),
		OfCombinedBound:    div(r.CommittedPerSec, f.CombinedBoundTxnPerSec),
		CPUOverFloor:       div(r.CPUPerTxnMs, f.CPUFloorPerTxnMs),
	}
}

// The transaction modes a run can send (api "mode"; issue 17).
const (
	ModeDefault = "default"
	ModeFast    = "fast"
)

// ModeRatio compares the fast-mode run with the default-mode run at one concurrency level,
// both from the same invocation: P50 is fast's p50 latency over default's, Committed
// fast's committed txn/s over default's, CPUPerTxn fast's CPU per transaction over
// default's. Below 1 is faster (or cheaper) for P50 and CPUPerTxn, above 1 for Committed.
type ModeRatio struct {
	Concurrency int     `json:"concurrency"`
	P50         float64 `json:"p50FastOverDefault"`
	Committed   float64 `json:"committedFastOverDefault"`
	CPUPerTxn   float64 `json:"cpuPerTxnFastOverDefault"`
}

// CompareModes pairs the runs of mode "default" (or "", the server's default, which is
// the default mode unless the cluster was started with --default-mode fast) with the runs
// of mode "fast" at the same concurrency; nil when not both ran.
func CompareModes(runs []*RunResult) []ModeRatio {
	def, fast := map[int]*RunResult{}, map[int]*RunResult{}
	var order []int
	for _, r := range runs {
		switch r.Mode {
		case ModeFast:
			if fast[r.Concurrency] == nil {
				order = append(order, r.Concurrency)
			}
			fast[r.Concurrency] = r
		default:
			def[r.Concurrency] = r
		}
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	var out []ModeRatio
	for _, c := range order {
		d, f := def[c], fast[c]
		if d == nil {
			continue
		}
		out = append(out, ModeRatio{Concurrency: c, P50: div(f.Latency.P50, d.Latency.P50),
			Committed: div(f.CommittedPerSec, d.CommittedPerSec), CPUPerTxn: div(f.CPUPerTxnMs, d.CPUPerTxnMs)})
	}
	return out
}
