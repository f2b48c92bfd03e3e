// Package metrics exposes a node's Prometheus metrics: the 2PC engine's measurements (it
// implements coordinator.Observer), gauges read from the FSM, the engine and Raft at scrape
// time, the HTTP API's requests (HTTPMiddleware), and hashicorp/raft's own timings
// (commit, FSM apply, boltdb store and fsync), bridged from go-metrics. Names start with
// txcoord_; raft's keep their raft_ names. raft's per-peer metrics come as one family each
// with the peer's id in a peer_id label (never in the name), and only for the peers in
// the node's current configuration.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	gometrics "github.com/armon/go-metrics"
	gmprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/txcoord/txcoord/archive"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/version"
)

// Sources are what the scrape-time gauges read.
type Sources struct {
	Node     *cluster.Node
	InFlight func() int64
	// StuckAfter: a transaction whose current phase is unfinished this long after it began
	// (phase two: after the decision) counts as stuck, as do failed ones [1m].
	StuckAfter time.Duration
	// DataDir is the node's data directory, measured at scrape time for
	// txcoord_data_dir_bytes and the filesystem gauges (empty: not exported, e.g. in
	// memory).
	DataDir string
	// Archive is the node's archive of pruned transactions (*archive.Archive), read at
	// scrape time for the txcoord_archive_ series (nil: none, e.g. --no-archive).
	Archive interface{ Stats() archive.Stats }
}

// Metrics is one node's registry.
type Metrics struct {
	reg        *prometheus.Registry
	finished   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	calls      *prometheus.CounterVec
	callTime   *prometheus.HistogramVec
	retries    *prometheus.CounterVec
	http       *httpMetrics
	src        Sources
	raftGather prometheus.Gatherer

	hostsMu sync.Mutex
	hosts   map[string]struct{} // participant hosts with their own series
}

// Latency buckets in seconds, from 0.5 ms to 60 s: 2PC on a LAN lives at the low end, and
// heuristic retries at the high end.
var buckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60}

// New builds the registry for one node.
func New(src Sources) *Metrics {
	if src.StuckAfter <= 0 {
		src.StuckAfter = time.Minute
	}
	m := &Metrics{reg: prometheus.NewRegistry(), src: src, http: newHTTPMetrics(), hosts: map[string]struct{}{}}
	m.raftGather = peerGatherer{inner: raftRegistry(), peers: src.raftPeers}
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "txcoord_transactions_finished_total", Help: "Transactions that reached a terminal status under this node's leadership, by status."}, []string{"status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "txcoord_transaction_duration_seconds", Help: "Transaction latency: total (begin to end), phase_one (begin to decision), phase_two (decision to end).", Buckets: buckets}, []string{"phase"})
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "txcoord_participant_calls_total", Help: "Participant calls by host, phase and result (ack, nack, timeout, transport, status, reply, canceled)."}, []string{"host", "phase", "result"})
	m.callTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "txcoord_participant_call_duration_seconds", Help: "Participant call latency by phase.", Buckets: buckets}, []string{"phase"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "txcoord_phase_two_retries_total", Help: "Phase-two calls scheduled for retry, by participant host and phase."}, []string{"host", "phase"})
	m.reg.MustRegister(m.finished, m.duration, m.calls, m.callTime, m.retries, &stateCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.http.collectors()...)
	return m
}

// Finished implements coordinator.Observer.
func (m *Metrics) Finished(status string, total, phaseOne, phaseTwo time.Duration) {
	m.finished.WithLabelValues(status).Inc()
	m.duration.WithLabelValues("total").Observe(total.Seconds())
	m.duration.WithLabelValues("phase_one").Observe(phaseOne.Seconds())
	m.duration.WithLabelValues("phase_two").Observe(phaseTwo.Seconds())
}

// Call implements coordinator.Observer.
func (m *Metrics) Call(host, phase, result string, took time.Duration) {
	m.calls.WithLabelValues(m.hostLabel(host), phase, result).Inc()
	m.callTime.WithLabelValues(phase).Observe(took.Seconds())
}

// Retry implements coordinator.Observer.
func (m *Metrics) Retry(host, phase string) {
	m.retries.WithLabelValues(m.hostLabel(host), phase).Inc()
}

// MaxHostLabels bounds the distinct participant hosts that get their own series; calls to
// further hosts are counted under host="other". Hosts come from clients' requests, so
// without a bound anyone who can POST could grow the scrape without limit.
const MaxHostLabels = 256

func (m *Metrics) hostLabel(host string) string {
	m.hostsMu.Lock()
	defer m.hostsMu.Unlock()
	if _, ok := m.hosts[host]; ok {
		return host
	}
	if len(m.hosts) >= MaxHostLabels {
		return "other"
	}
	m.hosts[host] = struct{}{}
	return host
}

// raftPeers lists the node ids in the node's current Raft configuration (ok false
// without a node or while the configuration cannot be read).
func (src Sources) raftPeers() (ids []string, ok bool) {
	if src.Node == nil || src.Node.Raft == nil {
		return nil, false
	}
	f := src.Node.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil, false
	}
	for _, s := range f.Configuration().Servers {
		ids = append(ids, string(s.ID))
	}
	return ids, true
}

// Handler serves the registry and raft's metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, m.raftGather}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

var (
	raftOnce sync.Once
	raftReg  = prometheus.NewRegistry()
)

// raftRegistry installs, once per process, a go-metrics sink that hashicorp/raft and
// raft-boltdb report into. go-metrics is process-global, so several nodes in one process
// (txcoord dev, tests) share these series.
func raftRegistry() prometheus.Gatherer {
	raftOnce.Do(func() {
		sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: raftReg, Expiration: time.Minute, Name: "txcoord_raft_sink"})
		if err != nil {
			return
		}
		conf := gometrics.DefaultConfig("")
		conf.EnableHostname, conf.EnableServiceLabel, conf.EnableRuntimeMetrics = false, false, false
		_, _ = gometrics.NewGlobal(conf, sink)
	})
	return raftReg
}

// stateCollector reads gauges at scrape time, so they are never stale.
type stateCollector struct{ m *Metrics }

var (
	descInFlight  = prometheus.NewDesc("txcoord_inflight_transactions", "Transactions this leader is driving now.", nil, nil)
	descByStatus  = prometheus.NewDesc("txcoord_transactions", "Transactions held in the FSM, by status.", []string{"status"}, nil)
	descStuck     = prometheus.NewDesc("txcoord_stuck_transactions", "Failed transactions, plus those whose current phase is unfinished past --stuck-after (phase two counted from the decision).", nil, nil)
	descOldest    = prometheus.NewDesc("txcoord_oldest_unfinished_transaction_age_seconds", "Age of the oldest transaction held in the FSM that is not terminal yet (0 when there is none).", nil, nil)
	descDataDir   = prometheus.NewDesc("txcoord_data_dir_bytes", "Total size of the files in the data directory (Raft log store and snapshots).", nil, nil)
	descFSSize    = prometheus.NewDesc("txcoord_data_dir_filesystem_size_bytes", "Size of the filesystem holding the data directory.", nil, nil)
	descFSAvail   = prometheus.NewDesc("txcoord_data_dir_filesystem_avail_bytes", "Bytes available to txcoord on the filesystem holding the data directory.", nil, nil)
	descRaftState = prometheus.NewDesc("txcoord_raft_state", "1 for this node's current Raft role.", []string{"role"}, nil)
	descTerm      = prometheus.NewDesc("txcoord_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("txcoord_raft_commit_index", "Raft commit index known to this node.", nil, nil)
	descApplied   = prometheus.NewDesc("txcoord_raft_applied_index", "Raft index applied to this node's FSM.", nil, nil)
	descLast      = prometheus.NewDesc("txcoord_raft_last_index", "Last Raft index in this node's log.", nil, nil)
	descContact   = prometheus.NewDesc("txcoord_raft_last_contact_seconds", "Seconds since a follower last heard from the leader (0 on the leader).", nil, nil)
	descReady     = prometheus.NewDesc("txcoord_ready", "1 when the node is ready to serve (/readyz).", nil, nil)
	descSnapshots = prometheus.NewDesc("txcoord_raft_snapshots", "Snapshots kept in the data directory.", nil, nil)
	descSnapBytes = prometheus.NewDesc("txcoord_raft_snapshot_bytes", "Size of the newest snapshot.", nil, nil)
	descOffset    = prometheus.NewDesc("txcoord_clock_offset_seconds", "This node's estimated wall-clock offset from the cluster (median of its measurements to the other servers); past --max-clock-offset it will not lead.", nil, nil)
	descOffLeader = prometheus.NewDesc("txcoord_clock_offset_leader_seconds", "This node's wall clock minus the leader's, as last measured (absent on the leader and while unknown).", nil, nil)
	descMaxOffset = prometheus.NewDesc("txcoord_clock_max_offset_seconds", "The tolerated clock offset (--max-clock-offset).", nil, nil)
	descFeatures  = prometheus.NewDesc("txcoord_feature_level", "Feature level the cluster has enabled (from the log).", nil, nil)
	descBuild     = prometheus.NewDesc("txcoord_build_info", "Always 1; labels name this node's build.", []string{"version", "commit", "feature_level", "goversion"}, nil)

	// The archive of pruned transactions (package archive), from its Stats.
	descArcBytes    = prometheus.NewDesc("txcoord_archive_bytes", "Size on disk of this node's archive of pruned transactions (all segment files).", nil, nil)
	descArcSegments = prometheus.NewDesc("txcoord_archive_segments", "Segment files in the archive.", nil, nil)
	descArcRecords  = prometheus.NewDesc("txcoord_archive_records", "Archived transactions kept (retention deletes whole segments by --archive-max-bytes and --archive-max-age).", nil, nil)
	descArcWritten  = prometheus.NewDesc("txcoord_archive_records_written_total", "Transaction records the archive wrote since the node started (a replayed Prune already archived is not written again).", nil, nil)
	descArcSkipped  = prometheus.NewDesc("txcoord_archive_records_skipped_total", "Torn or corrupt records met when the archive opened at start: a torn last record cut off (Raft hands its Prune over again), or a bad record ending the readable part of a sealed segment.", nil, nil)
	descArcCorrupt  = prometheus.NewDesc("txcoord_archive_corrupt_segments", "Sealed segments whose reading stopped at a bad record when the archive opened (records after it cannot be read on this node).", nil, nil)
	descArcErrors   = prometheus.NewDesc("txcoord_archive_write_errors_total", "Failed archive writes since the node started; after the first, snapshots fail (the log is kept, nothing is lost) until the cause is fixed and the node restarted.", nil, nil)
	descArcGaps     = prometheus.NewDesc("txcoord_archive_gaps", "Raft index ranges whose pruned transactions this node's archive never received (its state was replaced by a snapshot); another node's archive has them.", nil, nil)
	descArcOldest   = prometheus.NewDesc("txcoord_archive_oldest_record_age_seconds", "Age of the oldest archived transaction kept, from its creation time (0 when the archive is empty).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInFlight, descByStatus, descStuck, descOldest, descDataDir, descFSSize, descFSAvail, descRaftState, descTerm, descCommit, descApplied, descLast, descContact, descReady, descSnapshots, descSnapBytes, descOffset, descOffLeader, descMaxOffset, descFeatures, descBuild,
		descArcBytes, descArcSegments, descArcRecords, descArcWritten, descArcSkipped, descArcCorrupt, descArcErrors, descArcGaps, descArcOldest} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src
	if src.InFlight != nil {
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(src.InFlight()))
	}
	if src.Archive != nil {
		collectArchive(ch, src.Archive.Stats(), time.Now())
	}
	n := src.Node
	if n == nil {
		return
	}
	counts := n.FSM.Counts()
	for _, st := range []fsm.Status{fsm.StatusPreparing, fsm.StatusCommitting, fsm.StatusRollingBack, fsm.StatusCommitted, fsm.StatusRolledBack, fsm.StatusFailed} {
		ch <- prometheus.MustNewConstMetric(descByStatus, prometheus.GaugeValue, float64(counts[st]), st.String())
	}
	stuck := counts[fsm.StatusFailed]
	now := time.Now().UnixMilli()
	oldest := int64(0)
	for _, t := range n.FSM.Active() {
		if t.Stuck(now, src.StuckAfter.Milliseconds()) {
			stuck++
		}
		if t.CreatedAt > 0 && (oldest == 0 || t.CreatedAt < oldest) {
			oldest = t.CreatedAt
		}
	}
	ch <- prometheus.MustNewConstMetric(descStuck, prometheus.GaugeValue, float64(stuck))
	age := 0.0
	if oldest > 0 {
		age = max(0, float64(now-oldest)/1000)
	}
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age)
	if src.DataDir != "" {
		if b, ok := dirBytes(src.DataDir); ok {
			ch <- prometheus.MustNewConstMetric(descDataDir, prometheus.GaugeValue, float64(b))
		}
		if size, avail, ok := fsSpace(src.DataDir); ok {
			ch <- prometheus.MustNewConstMetric(descFSSize, prometheus.GaugeValue, float64(size))
			ch <- prometheus.MustNewConstMetric(descFSAvail, prometheus.GaugeValue, float64(avail))
		}
	}
	st := n.Status()
	for _, role := range []string{"leader", "follower", "candidate", "shutdown"} {
		v := 0.0
		if st.Role == role {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, role)
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.LastIndex))
	contact := 0.0
	if st.Role != "leader" {
		if lc := n.Raft.LastContact(); !lc.IsZero() {
			contact = time.Since(lc).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(descContact, prometheus.GaugeValue, contact)
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	count, size := n.Snapshots()
	ch <- prometheus.MustNewConstMetric(descSnapshots, prometheus.GaugeValue, float64(count))
	ch <- prometheus.MustNewConstMetric(descSnapBytes, prometheus.GaugeValue, float64(size))
	off, _ := n.ClockOffset()
	ch <- prometheus.MustNewConstMetric(descOffset, prometheus.GaugeValue, off.Seconds())
	if lo, ok := n.LeaderClockOffset(); ok {
		ch <- prometheus.MustNewConstMetric(descOffLeader, prometheus.GaugeValue, lo.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descMaxOffset, prometheus.GaugeValue, st.MaxClockOffsetMs/1000)
	ch <- prometheus.MustNewConstMetric(descFeatures, prometheus.GaugeValue, float64(st.FeatureLevel))
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, version.Version, version.CommitHash(), strconv.Itoa(int(version.FeatureLevel)), runtime.Version())
}

// collectArchive sends the txcoord_archive_ series of st, ages as of now.
func collectArchive(ch chan<- prometheus.Metric, st archive.Stats, now time.Time) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descArcBytes, float64(st.Bytes))
	gauge(descArcSegments, float64(st.Segments))
	gauge(descArcRecords, float64(st.Records))
	counter(descArcWritten, float64(st.Written))
	counter(descArcSkipped, float64(st.Skipped))
	gauge(descArcCorrupt, float64(st.Corrupt))
	counter(descArcErrors, float64(st.WriteErrors))
	gauge(descArcGaps, float64(len(st.Gaps)))
	age := 0.0
	if st.Oldest > 0 {
		age = max(0, float64(now.UnixMilli()-st.Oldest)/1000)
	}
	gauge(descArcOldest, age)
}
