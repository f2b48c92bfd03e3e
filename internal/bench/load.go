package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// LoadConfig is one load run: Concurrency clients, each sending one transaction at a time
// (POST /v1/transactions, waiting for the answer) until Duration passes or Count
// transactions were sent, whichever comes first.
type LoadConfig struct {
	Entry       []string // API base URLs; client i posts to Entry[i%len(Entry)]
	PrepareURLs []string // the transaction's participants
	Concurrency int
	Duration    time.Duration // 0: until Count (bounded by MaxDuration)
	Count       int           // 0: until Duration
	MaxDuration time.Duration // hard bound when only Count is given [10m]
	Warmup      time.Duration // load sent first and not counted
	Timeout     time.Duration // the transaction's "timeout" (phase one's bound)
	// RequestTimeout bounds one POST [2 x Timeout + 10s: the API may wait phase one's
	// timeout plus as long again for phase two].
	RequestTimeout time.Duration
	Keys           bool // send a unique Idempotency-Key with every transaction
	// PayloadBytes, when positive, gives every participant a payload of about this many
	// bytes of compact JSON ({"pad":"xxx..."}); the cluster needs feature level 2.
	PayloadBytes int
	// Rec, when the built-in participants run in this process, gives each transaction's
	// phase timings as the participants saw them (sub-millisecond).
	Rec *Recorder
	// Sample: without Rec, remember every Sample-th committed transaction and, once the
	// run is over, read it back (GET /v1/transactions/{id}, at most 2,000): phase one is
	// decidedAt - createdAt (ms resolution, the leader's clock), phase two the rest of the
	// transaction's latency. 0: no phase times.
	Sample   int
	HTTP     *http.Client
	Progress io.Writer // nil: no progress line
	// Mode is the transactions' "mode": "" (the server's default), "default" or "fast"
	// (issue 17: one log entry per transaction; docs/participant-protocol.md, "Inquiry").
	Mode string
}

// Phases breaks a transaction's latency down. PhaseOne runs from the POST to the decision,
// PhaseTwo from the decision to the answer. With the built-in participants the decision
// is taken as the arrival of the first commit/rollback call (the decision entry has
// committed by then), and the five segments add up to the whole:
//
//	Begin     POST sent -> first prepare arrives (HTTP in, Begin entry committed, dispatch)
//	Prepare   first prepare arrives -> last prepare answered (the prepare round)
//	Decide    last prepare answered -> first commit/rollback arrives (decision committed)
//	Commit    first commit/rollback arrives -> last one answered (the phase-two round)
//	Complete  last commit/rollback answered -> answer received (completion committed,
//	          FSM wait, HTTP out)
type Phases struct {
	Source   string `json:"source"` // "participants", "server-timestamps" or "none"
	PhaseOne Dist   `json:"phaseOne"`
	PhaseTwo Dist   `json:"phaseTwo"`
	Begin    *Dist  `json:"begin,omitempty"`
	Prepare  *Dist  `json:"prepare,omitempty"`
	Decide   *Dist  `json:"decide,omitempty"`
	Commit   *Dist  `json:"commit,omitempty"`
	Complete *Dist  `json:"complete,omitempty"`
}

// RunResult is the outcome of one load run.
type RunResult struct {
	// Mode is the transactions' "mode" ("": the server's default).
	Mode        string  `json:"mode,omitempty"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	// Answered counts POSTs answered 200 or 202; Outcomes splits them by status.
	Answered        int            `json:"answered"`
	Outcomes        map[string]int `json:"outcomes"`
	Errors          map[string]int `json:"errors"` // by kind; empty when none
	TxnPerSec       float64        `json:"txnPerSec"`
	CommittedPerSec float64        `json:"committedPerSec"`
	Latency         Dist           `json:"latency"` // answered transactions, POST to answer
	// CPUCores is the CPU time this process used during the run over its length (cores
	// busy); CPUPerTxnMs is that CPU time per answered transaction. With an in-process
	// cluster and participants it covers everything (nodes, participants, clients), and it
	// moves much less than throughput when other work shares the machine: cores / CPU per
	// transaction is the throughput this process would reach with the cores to itself.
	CPUCores    float64 `json:"cpuCores"`
	CPUPerTxnMs float64 `json:"cpuPerTxnMs"`
	Phases      Phases  `json:"phases"`
	// Reasons counts the first error of rolled-back transactions (at most 20 kinds).
	Reasons map[string]int `json:"rollbackReasons,omitempty"`
}

type worker struct {
	lat                                  []time.Duration
	p1, p2, begin, prep, dec, com, compl []time.Duration
	outcomes, errs, reasons              map[string]int
	answered, committed                  int
	sampled                              int
	samples                              []sample
}

// sample is a transaction to read back after the run.
type sample struct {
	id, entry string
	lat       time.Duration
}

const maxSamples = 2000

func newWorker() *worker {
	return &worker{outcomes: map[string]int{}, errs: map[string]int{}, reasons: map[string]int{}}
}

type outcome struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
}

type apiErr struct {
	Error string `json:"error"`
}

// RunLoad runs one load run (after its warm-up) and returns the result.
func RunLoad(ctx context.Context, c LoadConfig) (*RunResult, error) {
	if c.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency must be at least 1")
	}
	if len(c.Entry) == 0 || len(c.PrepareURLs) == 0 {
		return nil, fmt.Errorf("need at least one node and one participant")
	}
	if c.Duration <= 0 && c.Count <= 0 {
		return nil, fmt.Errorf("give a duration or a count")
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = 10 * time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 2*c.Timeout + 10*time.Second
	}
	if c.HTTP == nil {
		c.HTTP = NewHTTPClient(c.Concurrency)
	}
	var services any = c.PrepareURLs
	if c.PayloadBytes > 0 {
		pad := strings.Repeat("x", max(c.PayloadBytes-len(`{"pad":""}`), 0))
		objs := make([]any, len(c.PrepareURLs))
		for i, u := range c.PrepareURLs {
			objs[i] = map[string]any{"prepare": u, "payload": map[string]string{"pad": pad}}
		}
		services = objs
	}
	req := map[string]any{"services": services, "timeout": c.Timeout.Milliseconds()}
	if c.Mode != "" {
		req["mode"] = c.Mode
	}
	body, _ := json.Marshal(req)
	if c.Warmup > 0 {
		w := c
		w.Duration, w.Count, w.Progress = c.Warmup, 0, nil
		if _, err := run(ctx, w, body); err != nil {
			return nil, err
		}
	}
	return run(ctx, c, body)
}

func run(ctx context.Context, c LoadConfig, body []byte) (*RunResult, error) {
	bound := c.MaxDuration
	if c.Duration > 0 {
		bound = c.Duration
	}
	// Clients stop starting transactions at stopAt; those in flight finish (each bounded
	// by RequestTimeout) and count, so one run leaves no work behind for the next.
	var issued, done, failed atomic.Int64
	workers := make([]*worker, c.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := processCPU()
	stopAt := start.Add(bound)
	for i := range workers {
		w := newWorker()
		workers[i] = w
		entry := strings.TrimRight(c.Entry[i%len(c.Entry)], "/")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(stopAt) {
				if c.Count > 0 && issued.Add(1) > int64(c.Count) {
					return
				}
				if w.one(ctx, &c, entry, body) {
					done.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	stopProgress := progress(c, start, &done, &failed)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	stopProgress()

	res := &RunResult{Concurrency: c.Concurrency, Seconds: elapsed.Seconds(), Outcomes: map[string]int{}, Errors: map[string]int{}}
	all := &worker{}
	committed := 0
	reasons := map[string]int{}
	for _, w := range workers {
		all.lat = append(all.lat, w.lat...)
		all.p1 = append(all.p1, w.p1...)
		all.p2 = append(all.p2, w.p2...)
		all.begin = append(all.begin, w.begin...)
		all.prep = append(all.prep, w.prep...)
		all.dec = append(all.dec, w.dec...)
		all.com = append(all.com, w.com...)
		all.compl = append(all.compl, w.compl...)
		all.samples = append(all.samples, w.samples...)
		res.Answered += w.answered
		committed += w.committed
		for k, v := range w.outcomes {
			res.Outcomes[k] += v
		}
		for k, v := range w.errs {
			res.Errors[k] += v
		}
		for k, v := range w.reasons {
			reasons[k] += v
		}
	}
	res.TxnPerSec = float64(res.Answered) / elapsed.Seconds()
	res.CommittedPerSec = float64(committed) / elapsed.Seconds()
	res.Latency = Summarize(all.lat)
	res.CPUCores = cpu.Seconds() / elapsed.Seconds()
	if res.Answered > 0 {
		res.CPUPerTxnMs = ms(cpu) / float64(res.Answered)
	}
	res.Phases = Phases{Source: "none"}
	switch {
	case c.Rec != nil:
		res.Phases = Phases{Source: "participants", PhaseOne: Summarize(all.p1), PhaseTwo: Summarize(all.p2)}
		d := func(ds []time.Duration) *Dist { s := Summarize(ds); return &s }
		res.Phases.Begin, res.Phases.Prepare, res.Phases.Decide = d(all.begin), d(all.prep), d(all.dec)
		res.Phases.Commit, res.Phases.Complete = d(all.com), d(all.compl)
	case c.Sample > 0:
		p1, p2 := readBack(ctx, c.HTTP, all.samples)
		res.Phases = Phases{Source: "server-timestamps", PhaseOne: Summarize(p1), PhaseTwo: Summarize(p2)}
	}
	if len(reasons) > 0 {
		res.Reasons = topN(reasons, 20)
	}
	return res, nil
}

// one sends one transaction; it reports whether an answer (200 or 202) came back.
func (w *worker) one(ctx context.Context, c *LoadConfig, entry string, body []byte) bool {
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, entry+"/v1/transactions", bytes.NewReader(body))
	if err != nil {
		w.errs["request"]++
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Keys {
		req.Header.Set("Idempotency-Key", uuid.NewString())
	}
	var t0 time.Duration
	if c.Rec != nil {
		t0 = c.Rec.now()
	}
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false // the run ended while this transaction was in flight: not counted
		}
		w.errs[transportKind(rctx, err)]++
		return false
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	lat := time.Since(start)
	var t1 time.Duration
	if c.Rec != nil {
		t1 = c.Rec.now()
	}
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		w.errs[transportKind(rctx, err)]++
		return false
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		var ae apiErr
		_ = json.Unmarshal(raw, &ae)
		if ae.Error == "" {
			ae.Error = "?"
		}
		w.errs[fmt.Sprintf("http_%d_%s", resp.StatusCode, ae.Error)]++
		return false
	}
	var out outcome
	if err := json.Unmarshal(raw, &out); err != nil || out.TransactionID == "" {
		w.errs["bad_answer"]++
		return false
	}
	w.answered++
	w.outcomes[out.Status]++
	w.lat = append(w.lat, lat)
	switch out.Status {
	case "committed":
		w.committed++
	case "rolled_back":
		if len(out.Errors) > 0 && len(w.reasons) < 20 {
			w.reasons[shortReason(out.Errors[0])]++
		}
	}
	switch {
	case c.Rec != nil:
		if t, ok := c.Rec.Take(out.TransactionID); ok && t.Prepares > 0 && t.Twos > 0 {
			pos := func(d time.Duration) time.Duration { return max(d, 0) }
			w.p1 = append(w.p1, pos(t.TwoFirst-t0))
			w.p2 = append(w.p2, pos(t1-t.TwoFirst))
			w.begin = append(w.begin, pos(t.PrepareFirst-t0))
			w.prep = append(w.prep, pos(t.PrepareLast-t.PrepareFirst))
			w.dec = append(w.dec, pos(t.TwoFirst-t.PrepareLast))
			w.com = append(w.com, pos(t.TwoLast-t.TwoFirst))
			w.compl = append(w.compl, pos(t1-t.TwoLast))
		}
	case c.Sample > 0 && out.Status == "committed" && resp.StatusCode == http.StatusOK:
		w.sampled++
		if w.sampled%c.Sample == 0 && len(w.samples) < maxSamples {
			w.samples = append(w.samples, sample{id: out.TransactionID, entry: entry, lat: lat})
		}
	}
	return true
}

// readBack fetches the samples (after the run, so as not to disturb it) and returns their
// phase times: phase one from the server's createdAt and decidedAt, phase two the rest of
// the client's latency. (finishedAt is not used: the engine answers before it logs the
// completion, so it comes after the answer.)
func readBack(ctx context.Context, hc *http.Client, samples []sample) (p1s, p2s []time.Duration) {
	if len(samples) > maxSamples {
		samples = samples[:maxSamples]
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, s := range samples {
		if p1, ok := serverPhaseOne(ctx, hc, s.entry, s.id); ok {
			p1s = append(p1s, p1)
			p2s = append(p2s, max(s.lat-p1, 0))
		}
	}
	return p1s, p2s
}

// serverPhaseOne reads a transaction's decidedAt - createdAt (ms resolution). A follower
// learns that the last decisions of a run are committed only with the leader's next
// message, so a sample read there may not show its decision yet: it asks again, for up to a
// second.
func serverPhaseOne(ctx context.Context, hc *http.Client, entry, id string) (time.Duration, bool) {
	for range 20 {
		d, ok, retry := serverPhaseRead(ctx, hc, entry, id)
		if ok || !retry {
			return d, ok
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, false
}

// serverPhaseRead is one read; retry reports that the decision is not visible there yet.
func serverPhaseRead(ctx context.Context, hc *http.Client, entry, id string) (time.Duration, bool, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, entry+"/v1/transactions/"+id, nil)
	if err != nil {
		return 0, false, false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, false, false
	}
	defer resp.Body.Close()
	var v struct {
		CreatedAt, DecidedAt string
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v) != nil {
		return 0, false, resp.StatusCode == http.StatusNotFound
	}
	if v.DecidedAt == "" {
		return 0, false, true
	}
	c, err1 := time.Parse(time.RFC3339Nano, v.CreatedAt)
	d, err2 := time.Parse(time.RFC3339Nano, v.DecidedAt)
	if err1 != nil || err2 != nil {
		return 0, false, false
	}
	return max(d.Sub(c), 0), true, false
}

func transportKind(rctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(rctx.Err(), context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "transport_eof"
	case strings.Contains(err.Error(), "connection refused"):
		return "transport_refused"
	case strings.Contains(err.Error(), "connection reset"):
		return "transport_reset"
	default:
		return "transport"
	}
}

// shortReason strips the participant URL from "url: NACK: reason" so reasons group.
func shortReason(s string) string {
	if i := strings.Index(s, "/prepare: "); i >= 0 {
		s = s[i+len("/prepare: "):]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func topN(m map[string]int, n int) map[string]int {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || all[i].v == all[j].v && all[i].k < all[j].k })
	out := map[string]int{}
	for i, e := range all {
		if i >= n {
			break
		}
		out[e.k] = e.v
	}
	return out
}

// NewHTTPClient returns a keep-alive client sized for conc concurrent requests per host.
func NewHTTPClient(conc int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * max(conc, 16),
		MaxIdleConnsPerHost: max(conc, 16),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// progress prints a one-line status to c.Progress every half second until stopped.
func progress(c LoadConfig, start time.Time, done, failed *atomic.Int64) (stop func()) {
	if c.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		var lastN int64
		last := start
		for {
			select {
			case <-quit:
				fmt.Fprint(c.Progress, "\r\033[K")
				return
			case now := <-tick.C:
				n := done.Load()
				rate := float64(n-lastN) / now.Sub(last).Seconds()
				lastN, last = n, now
				goal := ""
				if c.Duration > 0 {
					goal = "/" + c.Duration.String()
				}
				if c.Count > 0 {
					goal += fmt.Sprintf(" (count %d)", c.Count)
				}
				fmt.Fprintf(c.Progress, "\r\033[Kc=%d  %.1fs%s  %d answered  %.0f txn/s  %d errors",
					c.Concurrency, now.Sub(start).Seconds(), goal, n, rate, failed.Load())
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}
