// Package bench is txcoord's load tool and floor benchmark (`txcoord bench`).
//
// It drives a cluster (given by URL, or its own in-process 3-node cluster started as
// `txcoord dev` starts one: loopback TCP, raft-boltdb with fsync, the server's Raft
// configuration) with concurrent clients, each posting one transaction at a time to
// built-in fast participants (in this process) or to given participant URLs, and reports
// throughput, latency percentiles for the whole transaction and for each phase, and
// errors by kind.
//
// The floor mode measures, on the same cluster and participants and in the same run, what
// Raft and loopback HTTP cost on their own (a no-op Node.Apply at concurrency 1 and 64, a
// participant call and a parallel round of calls) and prints the transactions' figures as
// ratios to that floor. With its own cluster the tool also reads every node's raft.db once
// the nodes have stopped and reports the bytes of log per transaction.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/internal/localcluster"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/version"
)

// Config is one `txcoord bench` invocation.
type Config struct {
	// Nodes are API base URLs of a running cluster; empty starts an in-process cluster.
	Nodes []string
	// Target: "leader" (default: POST to the leader), "follower" (to one follower, which
	// forwards) or "all" (clients spread over every node).
	Target string
	// Participants are prepare URLs; empty starts NumParticipants built-in ones.
	Participants    []string
	NumParticipants int           // [3]
	NackRate        float64       // built-in participants: share of transactions refused
	Delay           time.Duration // built-in participants: added to every call

	Concurrency []int // one load run per level, in order [1]
	// Modes: the concurrency levels are run once per mode, in order, on the same cluster
	// ["": the server's default mode only]. With "default" and "fast" both, the report
	// compares them (ModeRatios).
	Modes    []string
	Duration time.Duration
	Count    int
	Warmup   time.Duration
	Timeout  time.Duration // the transactions' phase-one timeout [5s]
	Keys     bool
	Sample   int // see LoadConfig.Sample
	// PayloadBytes gives every participant a payload of about this size (LoadConfig).
	PayloadBytes int

	Floor      bool          // measure the floor first and print ratios
	FloorTime  time.Duration // per floor measurement [2s]
	FloorConc  int           // [64]
	MeasureLog bool          // own cluster: size the raft log after the run [true from the CLI]

	DataDir string // own cluster: keep data here (kept afterwards); "" uses a temp dir
	Logger  hclog.Logger
	Tune    func(i int, c *server.Config)

	// Progress receives a status line while a run goes (nil: none); Log receives
	// one-line notes on what the tool is doing (nil: none).
	Progress, Log io.Writer
	// Measure, if set, wraps each measured load run (after its warm-up), e.g. to take a
	// CPU profile of it.
	Measure func(concurrency int, run func() error) error
}

// Report is the whole result; it is what --json prints.
type Report struct {
	Setup  Setup        `json:"setup"`
	Floor  *Floor       `json:"floor,omitempty"`
	Runs   []*RunResult `json:"runs"`
	Ratios []Ratios     `json:"ratios,omitempty"`
	// ModeRatios compares fast mode with the default mode, per concurrency level, when
	// both ran.
	ModeRatios []ModeRatio `json:"modeRatios,omitempty"`
	Log        []*LogStats `json:"log,omitempty"`
	Started    time.Time   `json:"started"`
}

// Setup records what was measured.
type Setup struct {
	Cluster         string   `json:"cluster"` // "in-process 3 nodes" or the URLs
	Entry           []string `json:"entry"`
	Participants    []string `json:"participants"`
	BuiltIn         bool     `json:"builtInParticipants"`
	NackRate        float64  `json:"nackRate"`
	DelayMs         float64  `json:"participantDelayMs"`
	TimeoutMs       int64    `json:"timeoutMs"`
	DurationSeconds float64  `json:"durationSeconds,omitempty"`
	Count           int      `json:"count,omitempty"`
	WarmupSeconds   float64  `json:"warmupSeconds"`
	GOMAXPROCS      int      `json:"gomaxprocs"`
	NumCPU          int      `json:"numCPU"`
	// LoadAvg is /proc/loadavg at the start and at the end (the machine may be shared).
	LoadAvgStart string `json:"loadAvgStart,omitempty"`
	LoadAvgEnd   string `json:"loadAvgEnd,omitempty"`
}

func (c *Config) note(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

// Run runs the whole benchmark. It always ends: each load run is bounded by its duration
// (or count and a 10-minute cap) and each request by its timeout.
func Run(ctx context.Context, c Config) (rep *Report, err error) {
	if c.NumParticipants <= 0 {
		c.NumParticipants = 3
	}
	if len(c.Concurrency) == 0 {
		c.Concurrency = []int{1}
	}
	if len(c.Modes) == 0 {
		c.Modes = []string{""}
	}
	for _, m := range c.Modes {
		if m != "" && m != ModeDefault && m != ModeFast {
			return nil, fmt.Errorf("mode %q: want default or fast", m)
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Target == "" {
		c.Target = "leader"
	}
	switch c.Target {
	case "leader", "follower", "all":
	default:
		return nil, fmt.Errorf("target %q: want leader, follower or all", c.Target)
	}
	if c.Floor && len(c.Nodes) > 0 {
		return nil, fmt.Errorf("the floor needs the in-process cluster (it calls Raft directly): drop --node")
	}
	if c.Floor && len(c.Participants) > 0 {
		return nil, fmt.Errorf("the floor needs the built-in participants: drop --participant")
	}
	rep = &Report{Started: time.Now().UTC()}
	rep.Setup.LoadAvgStart = loadAvg()
	defer func() {
		if rep != nil {
			rep.Setup.LoadAvgEnd = loadAvg()
		}
	}()

	// Participants.
	var rec *Recorder
	prepares := c.Participants
	if len(prepares) == 0 {
		rec = NewRecorder()
		ps, err := StartParticipants("127.0.0.1", 0, c.NumParticipants, c.NackRate, c.Delay, rec)
		if err != nil {
			return nil, err
		}
		defer ps.Close()
		prepares = ps.PrepareURLs
	}

	// Cluster.
	var cl *localcluster.Cluster
	var entry []string
	if len(c.Nodes) == 0 {
		dir := c.DataDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "txcoord-bench-"); err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
		}
		c.note("starting a 3-node cluster in %s", dir)
		if cl, err = startCluster(dir, c.Logger, c.Tune); err != nil {
			return nil, err
		}
		defer func() {
			if cl != nil {
				_ = cl.Close()
			}
		}()
		switch c.Target {
		case "leader":
			l, err := cl.WaitLeader(10 * time.Second)
			if err != nil {
				return nil, err
			}
			entry = []string{cl.Node(l).URL()}
		case "follower":
			entry = []string{cl.Node(cl.Follower()).URL()}
		default:
			entry = cl.URLs()
		}
		rep.Setup.Cluster = "in-process, 3 nodes, loopback TCP, raft-boltdb (fsync)"
	} else {
		rep.Setup.Cluster = fmt.Sprint(c.Nodes)
		hc := NewHTTPClient(4)
		switch c.Target {
		case "all":
			for _, n := range c.Nodes {
				entry = append(entry, baseURL(n))
			}
		case "follower":
			leader, err := FindLeader(ctx, hc, c.Nodes)
			if err != nil {
				return nil, err
			}
			for _, n := range c.Nodes {
				if baseURL(n) != leader {
					entry = []string{baseURL(n)}
					break
				}
			}
			if entry == nil {
				return nil, fmt.Errorf("--target follower: every --node given is the leader")
			}
		default:
			leader, err := FindLeader(ctx, hc, c.Nodes)
			if err != nil {
				return nil, fmt.Errorf("finding the leader: %w", err)
			}
			entry = []string{leader}
		}
	}
	rep.Setup.Entry, rep.Setup.Participants, rep.Setup.BuiltIn = entry, prepares, rec != nil
	if rec != nil {
		rep.Setup.NackRate, rep.Setup.DelayMs = c.NackRate, ms(c.Delay)
	}
	rep.Setup.TimeoutMs, rep.Setup.DurationSeconds, rep.Setup.Count = c.Timeout.Milliseconds(), c.Duration.Seconds(), c.Count
	rep.Setup.WarmupSeconds, rep.Setup.GOMAXPROCS = c.Warmup.Seconds(), gomaxprocs()
	rep.Setup.NumCPU = runtime.NumCPU()

	if c.Floor {
		c.note("measuring the floor (%s per measurement)", orDefault(c.FloorTime, 2*time.Second))
		var nodes []*cluster.Node
		for _, n := range cl.Running() {
			nodes = append(nodes, n.Node)
		}
		l, err := cl.WaitLeader(10 * time.Second)
		if err != nil {
			return nil, err
		}
		f, err := MeasureFloor(ctx, FloorConfig{Leader: cl.Node(l).Node, Nodes: nodes, PrepareURLs: prepares, Time: c.FloorTime, Concurrency: c.FloorConc})
		if err != nil {
			return nil, err
		}
		rep.Floor = f
	}

	hc := NewHTTPClient(maxOf(c.Concurrency))
	type run struct {
		mode string
		conc int
	}
	var runs []run
	for _, m := range c.Modes {
		for _, conc := range c.Concurrency {
			runs = append(runs, run{m, conc})
		}
	}
	for _, r := range runs {
		conc := r.conc
		lc := LoadConfig{
			Entry: entry, PrepareURLs: prepares, Concurrency: conc, Duration: c.Duration, Count: c.Count,
			Timeout: c.Timeout, Keys: c.Keys, Rec: rec, Sample: c.Sample, HTTP: hc, Progress: c.Progress,
			PayloadBytes: c.PayloadBytes, Mode: r.mode,
		}
		if r.mode != "" {
			c.note("mode %s:", r.mode)
		}
		if c.Warmup > 0 {
			c.note("concurrency %d: warming up for %s", conc, c.Warmup)
			w := lc
			w.Duration, w.Count, w.Progress = c.Warmup, 0, nil
			if _, err := RunLoad(ctx, w); err != nil {
				return nil, err
			}
		}
		c.note("concurrency %d: measuring", conc)
		var res *RunResult
		measure := func() error {
			var err error
			res, err = RunLoad(ctx, lc)
			return err
		}
		if c.Measure != nil {
			err = c.Measure(conc, measure)
		} else {
			err = measure()
		}
		if err != nil {
			return nil, err
		}
		res.Mode = r.mode
		rep.Runs = append(rep.Runs, res)
		if rep.Floor != nil {
			rep.Ratios = append(rep.Ratios, Compare(rep.Floor, res))
		}
		if ctx.Err() != nil {
			break
		}
	}

	rep.ModeRatios = CompareModes(rep.Runs)

	if cl != nil && c.MeasureLog {
		c.note("stopping the cluster and reading the raft logs")
		dirs := make([]string, cl.Len())
		ids := make([]string, cl.Len())
		for i := range ids {
			ids[i], dirs[i] = cl.Peer(i).ID, cl.DataDir(i)
		}
		_ = cl.Close()
		cl = nil
		for i := range dirs {
			st, err := MeasureLog(ids[i], dirs[i])
			if err != nil {
				return nil, fmt.Errorf("measuring the log of %s: %w", ids[i], err)
			}
			rep.Log = append(rep.Log, st)
		}
	}
	return rep, ctx.Err()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// loadAvg returns the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// startCluster starts the in-process cluster the bench measures, the way `txcoord dev`
// starts one (tune: the CLI's tuning flags), and waits until it has a ready leader and
// this build's feature level (payloads need level 2, fast mode 3).
func startCluster(dir string, lg hclog.Logger, tune func(i int, c *server.Config)) (*localcluster.Cluster, error) {
	cl, err := localcluster.Start(localcluster.Options{Dir: dir, Logger: lg, Tune: tune})
	if err != nil {
		return nil, err
	}
	if _, err := cl.WaitReady(version.FeatureLevel, 30*time.Second); err != nil {
		_ = cl.Close()
		return nil, err
	}
	return cl, nil
}
