// Package e2e holds the Docker Compose end-to-end test: the cluster of deploy/compose under
// load while its leader is killed, then cut off from its followers (it still reaches the
// participants), then every container is restarted; afterwards the atomicity checker and the
// participants' request logs must show nothing wrong. It runs only with TXCOORD_DOCKER=1 and
// the image built (`make e2e-docker` does both).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/demo"
)

// The Compose file's coordinator settings this test relies on.
const (
	leaderLease = 500 * time.Millisecond // --leader-lease-timeout default
	// stepDownBound is how long after its quorum is cut a leader may still send phase-two
	// messages: raft notices a stale lease within two lease periods (the check runs every
	// lease), then the leader's work is canceled; the slack covers a call already on the wire.
	stepDownBound = 2*leaderLease + 500*time.Millisecond
)

var (
	coordinators = []string{"coord1", "coord2", "coord3"}
	participants = []string{"flight", "hotel", "payment"}
)

type env struct {
	t          *testing.T
	project    string
	composeCmd []string // the compose command and its global flags
	image      string
	envv       []string
	ports      map[string]int    // service -> published host port
	ids        map[string]string // service -> container id (stable across stop/start/restart)
	start      time.Time
}

func TestCompose(t *testing.T) {
	if os.Getenv("TXCOORD_DOCKER") != "1" {
		t.Skip("set TXCOORD_DOCKER=1 (make e2e-docker builds the image and does) to run the Docker Compose end-to-end test")
	}
	e := newEnv(t)
	fig := &figures{}
	t.Cleanup(func() { e.report(fig) })

	// Bring the cluster up; formation by DNS (the coord-peers alias) with --bootstrap-expect 3.
	tUp := time.Now()
	e.compose("up", "-d")
	t.Cleanup(e.down) // registered after up: runs first on failure too (containers, networks, volumes)
	first := e.waitLeader("", 60*time.Second)
	fig.add("formation: first leader after `up`", time.Since(tUp), first)
	for _, svc := range append(append([]string{}, coordinators...), participants...) {
		e.ids[svc] = strings.TrimSpace(e.compose("ps", "-q", svc))
		if e.ids[svc] == "" {
			t.Fatalf("no container for %s", svc)
		}
	}
	e.waitAllReady(30 * time.Second)

	ld := newLoad(e, 6)
	ld.start()
	defer ld.stop()
	e.sleep(8 * time.Second)

	// 1. docker kill the leader.
	l1 := e.waitLeader("", 20*time.Second)
	tKill := time.Now()
	e.docker("kill", e.container(l1))
	next := e.waitLeader(l1, 30*time.Second)
	fig.add("kill: new leader after `docker kill` of "+l1, time.Since(tKill), next)
	e.sleep(6 * time.Second)
	tStart := time.Now()
	e.docker("start", e.container(l1))
	e.waitReady(l1, 60*time.Second)
	fig.add("kill: "+l1+" restarted and caught up", time.Since(tStart), "")
	e.sleep(4 * time.Second)

	// 2. Partition: cut the leader off the raft network; it still reaches the participants
	// (and clients) on svc.
	// Participants answer 30% of calls with HTTP 500 from now until the partition heals,
	// so the leader always has phase-two calls to retry when it is cut off: the check below
	// then sees whether it stops sending them.
	e.setErrorRate(0.3)
	e.sleep(2 * time.Second)
	l2 := e.waitLeader("", 20*time.Second)
	raftNet := e.project + "_raft"
	tPartStart := time.Now()
	e.docker("network", "disconnect", raftNet, e.container(l2))
	tPartEnd := time.Now()
	stepDown := e.waitNotLeader(l2, 30*time.Second)
	fig.add("partition: isolated leader "+l2+" stepped down after", stepDown.Sub(tPartStart), "")
	l3 := e.waitLeader(l2, 30*time.Second)
	fig.add("partition: new leader among the majority after", time.Since(tPartStart), l3)
	e.sleep(8 * time.Second)
	tHeal := time.Now()
	e.docker("network", "connect", "--alias", l2+"-raft", "--alias", "coord-peers", raftNet, e.container(l2))
	e.waitReady(l2, 60*time.Second)
	fig.add("partition: "+l2+" rejoined after the network came back", time.Since(tHeal), "")
	e.setErrorRate(0)
	e.sleep(4 * time.Second)

	// The participants' request logs live in memory: read them before restarting.
	logs := e.requestLogs()

	// 3. Restart every container (coordinators and participants) at once.
	tRestart := time.Now()
	e.compose("restart", "-t", "20")
	after := e.waitLeader("", 60*time.Second)
	e.waitAllReady(60 * time.Second)
	fig.add("restart all: leader and every node ready after", time.Since(tRestart), after)
	e.sleep(6 * time.Second)
	ld.stop()
	fig.load = ld.summary()

	// Let the cluster finish what is in flight, then check.
	tQuiet := time.Now()
	e.waitQuiet(90 * time.Second)
	fig.add("quiescence after the load stopped", time.Since(tQuiet), "")
	for p, l := range e.requestLogs() {
		logs[p] = append(logs[p], l...)
	}

	// 4a. The atomicity checker, run in a container on the private network, so it sees the
	// participants' URLs as the coordinators do.
	out, code := e.dockerOut("run", "--rm", "--name", e.project+"-check", "--read-only", "--network", e.project+"_svc", e.image,
		"check", "--node", "http://coord1:8080", "--participant", "http://flight:9000",
		"--participant", "http://hotel:9000", "--participant", "http://payment:9000")
	fig.checker = strings.TrimSpace(out)
	if code != 0 || !strings.Contains(out, ": 0 violations") {
		t.Errorf("txcoord check exited %d:\n%s", code, out)
	}

	// 4b. The request logs against the final cluster log and the partition window.
	txns := e.transactions()
	fig.txns = len(txns)
	v := checkRequestLogs(txns, logs, l2, tPartStart, tPartEnd, tHeal)
	fig.logs = v
	for _, s := range v.violations {
		t.Errorf("request log: %s", s)
	}
	if len(txns) == 0 || v.phaseTwo == 0 {
		t.Errorf("the load produced no transactions (%d) or no phase-two calls (%d)", len(txns), v.phaseTwo)
	}
}

// ---- request-log checks ----------------------------------------------------------------

type finalTxn struct {
	ID       string `json:"transactionId"`
	Status   string `json:"status"`
	Decision string `json:"decision"`
}

type logCheck struct {
	requests, prepares, phaseTwo int
	bySender                     map[string]int // phase-two calls per coordinator
	isolatedInWindow             int            // phase-two calls from the isolated leader after the partition began
	isolatedLast                 time.Duration  // its last one, after the partition began (-1: none)
	othersFirst                  time.Duration  // the first phase-two call from another node after the partition began
	violations                   []string
}

// checkRequestLogs checks every call the participants logged:
//   - a Prepare names a transaction the final log holds (Begin is logged before any Prepare);
//   - a Commit is for a transaction whose logged decision is commit, a Rollback for one whose
//     decision is abort (so no participant ever heard an outcome the cluster did not decide);
//   - the leader cut off at tPartStart sent no Commit or Rollback later than stepDownBound
//     after its quorum was gone (tPartEnd), until the partition healed.
func checkRequestLogs(txns map[string]finalTxn, logs map[string][]demo.LoggedRequest, isolated string, tPartStart, tPartEnd, tHeal time.Time) logCheck {
	v := logCheck{bySender: map[string]int{}, isolatedLast: -1, othersFirst: -1}
	bad := func(f string, a ...any) {
		if len(v.violations) < 50 {
			v.violations = append(v.violations, fmt.Sprintf(f, a...))
		}
	}
	for p, entries := range logs {
		for _, r := range entries {
			v.requests++
			tx, known := txns[r.TransactionID]
			switch r.Phase {
			case "prepare":
				v.prepares++
				if !known {
					bad("%s got Prepare for %s, which the cluster's log does not hold", p, r.TransactionID)
				}
				continue
			case "commit", "rollback":
			default:
				continue
			}
			v.phaseTwo++
			v.bySender[r.Node]++
			want := map[string]string{"commit": "commit", "rollback": "abort"}[string(r.Phase)]
			switch {
			case !known:
				bad("%s got %s for %s, which the cluster's log does not hold", p, r.Phase, r.TransactionID)
			case tx.Decision != want:
				bad("%s got %s for %s, whose logged decision is %q (status %s)", p, r.Phase, r.TransactionID, tx.Decision, tx.Status)
			}
			if r.Received.Before(tPartStart) || r.Received.After(tHeal) {
				continue
			}
			since := r.Received.Sub(tPartStart)
			if r.Node == isolated {
				v.isolatedInWindow++
				v.isolatedLast = max(v.isolatedLast, since)
				if r.Received.After(tPartEnd.Add(stepDownBound)) {
					bad("%s got %s for %s from the isolated leader %s %s after it lost its quorum (bound %s)",
						p, r.Phase, r.TransactionID, isolated, r.Received.Sub(tPartEnd).Round(time.Millisecond), stepDownBound)
				}
			} else if v.othersFirst < 0 || since < v.othersFirst {
				v.othersFirst = since
			}
		}
	}
	return v
}

// ---- environment -----------------------------------------------------------------------

func newEnv(t *testing.T) *env {
	e := &env{t: t, project: fmt.Sprintf("txe2e%d", os.Getpid()), ports: map[string]int{}, ids: map[string]string{}, start: time.Now()}
	e.image = os.Getenv("TXCOORD_IMAGE")
	if e.image == "" {
		e.image = "txcoord:dev"
	}
	if _, code := e.dockerOut("image", "inspect", e.image); code != 0 {
		t.Fatalf("image %s not found: run `make image` (or `make e2e-docker`)", e.image)
	}
	file, err := filepath.Abs("../compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		e.composeCmd = []string{"docker", "compose"}
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		e.composeCmd = []string{"docker-compose"}
	} else {
		t.Fatal("neither `docker compose` nor docker-compose is installed")
	}
	e.composeCmd = append(e.composeCmd, "-f", file, "-p", e.project)
	vars := map[string]string{"coord1": "COORD1_PORT", "coord2": "COORD2_PORT", "coord3": "COORD3_PORT",
		"flight": "FLIGHT_PORT", "hotel": "HOTEL_PORT", "payment": "PAYMENT_PORT"}
	e.envv = append(os.Environ(), "TXCOORD_IMAGE="+e.image, "TXCOORD_BIND=127.0.0.1")
	for svc, v := range vars {
		e.ports[svc] = freePort(t)
		e.envv = append(e.envv, fmt.Sprintf("%s=%d", v, e.ports[svc]))
	}
	return e
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (e *env) logf(f string, a ...any) {
	e.t.Logf("[%6.1fs] %s", time.Since(e.start).Seconds(), fmt.Sprintf(f, a...))
}

func (e *env) run(name string, args []string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = e.envv
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

func (e *env) dockerOut(args ...string) (string, int) { return e.run("docker", args) }

func (e *env) docker(args ...string) {
	e.t.Helper()
	e.logf("docker %s", strings.Join(args, " "))
	defer e.logf("docker %s: done", args[0])
	if out, code := e.dockerOut(args...); code != 0 {
		e.t.Fatalf("docker %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
}

func (e *env) compose(args ...string) string {
	e.t.Helper()
	e.logf("compose %s", strings.Join(args, " "))
	out, code := e.run(e.composeCmd[0], append(append([]string{}, e.composeCmd[1:]...), args...))
	if code != 0 {
		e.t.Fatalf("compose %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// down removes everything the test created, whatever happened; on failure it first shows
// the coordinators' last log lines.
func (e *env) down() {
	if e.t.Failed() {
		out, _ := e.run(e.composeCmd[0], append(append([]string{}, e.composeCmd[1:]...), "logs", "--no-color", "--tail", "40"))
		e.t.Logf("container logs:\n%s", out)
	}
	_, _ = e.dockerOut("rm", "-f", e.project+"-check")
	out, code := e.run(e.composeCmd[0], append(append([]string{}, e.composeCmd[1:]...), "down", "-v", "--remove-orphans", "-t", "5"))
	if code != 0 {
		e.t.Errorf("compose down: %s", out)
	}
	e.logf("cleaned up: containers, networks and volumes of project %s removed", e.project)
}

func (e *env) container(svc string) string { return e.ids[svc] }

func (e *env) sleep(d time.Duration) {
	e.logf("running load for %s", d)
	time.Sleep(d)
}

func (e *env) url(svc string) string { return fmt.Sprintf("http://127.0.0.1:%d", e.ports[svc]) }

var hc = &http.Client{Timeout: 3 * time.Second}

func getJSON(u string, v any) error { return getJSONAuth(u, "", v) }

// getJSONAuth is getJSON with a bearer token ("": none).
func getJSONAuth(u, token string, v any) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return json.Unmarshal(body, v)
}

type clusterStatus struct {
	NodeID   string `json:"nodeId"`
	Role     string `json:"role"`
	LeaderID string `json:"leaderId"`
	Term     uint64 `json:"term"`
	Ready    bool   `json:"ready"`
}

func (e *env) status(svc string) (clusterStatus, error) {
	var st clusterStatus
	err := getJSON(e.url(svc)+"/v1/cluster", &st)
	return st, err
}

// waitLeader waits until a node other than exclude leads, is ready, and a second node
// agrees; it returns its id.
func (e *env) waitLeader(exclude string, timeout time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, c := range coordinators {
			if c == exclude {
				continue
			}
			st, err := e.status(c)
			if err != nil || st.Role != "leader" || !st.Ready {
				continue
			}
			for _, o := range coordinators {
				if o == c || o == exclude {
					continue
				}
				if ost, err := e.status(o); err == nil && ost.LeaderID == c && ost.Term == st.Term {
					e.logf("leader: %s (term %d)", c, st.Term)
					return c
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("no leader (other than %q) within %s", exclude, timeout)
	return ""
}

func (e *env) waitNotLeader(svc string, timeout time.Duration) time.Time {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if st, err := e.status(svc); err == nil && st.Role != "leader" {
			e.logf("%s is %s now", svc, st.Role)
			return time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s still leads %s after losing its quorum", svc, timeout)
	return time.Time{}
}

// waitReady waits until svc follows or leads a known leader and has applied all it knows
// to be committed (/readyz).
func (e *env) waitReady(svc string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := hc.Get(e.url(svc) + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s not ready within %s", svc, timeout)
}

func (e *env) waitAllReady(timeout time.Duration) {
	for _, c := range coordinators {
		e.waitReady(c, timeout)
	}
}

// waitQuiet waits until no transaction is unfinished.
func (e *env) waitQuiet(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		busy := 0
		for _, s := range []string{"preparing", "committing", "rolling_back"} {
			var page struct {
				Transactions []json.RawMessage `json:"transactions"`
			}
			if err := getJSON(e.url("coord1")+"/v1/transactions?limit=1&status="+s, &page); err != nil {
				busy++
				continue
			}
			busy += len(page.Transactions)
		}
		if busy == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	e.t.Fatalf("transactions still unfinished %s after the load stopped", timeout)
}

// transactions reads every transaction of the final log.
func (e *env) transactions() map[string]finalTxn {
	e.t.Helper()
	out := map[string]finalTxn{}
	after := ""
	for {
		var page struct {
			Transactions []finalTxn `json:"transactions"`
			Next         string     `json:"next"`
		}
		u := e.url("coord1") + "/v1/transactions?limit=1000"
		if after != "" {
			u += "&after=" + after
		}
		if err := getJSON(u, &page); err != nil {
			e.t.Fatalf("listing transactions: %v", err)
		}
		for _, tx := range page.Transactions {
			out[tx.ID] = tx
		}
		if page.Next == "" || page.Next == after {
			return out
		}
		after = page.Next
	}
}

// setErrorRate sets every participant's errorRate fault knob (POST /control).
func (e *env) setErrorRate(r float64) {
	e.t.Helper()
	e.logf("participants: errorRate %.2f", r)
	for _, p := range participants {
		body := fmt.Sprintf(`{"errorRate": %g}`, r)
		resp, err := hc.Post(e.url(p)+"/control", "application/json", strings.NewReader(body))
		if err != nil {
			e.t.Fatalf("%s /control: %v", p, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			e.t.Fatalf("%s /control: HTTP %d", p, resp.StatusCode)
		}
	}
}

func (e *env) requestLogs() map[string][]demo.LoggedRequest {
	e.t.Helper()
	out := map[string][]demo.LoggedRequest{}
	for _, p := range participants {
		var doc struct {
			Requests []demo.LoggedRequest `json:"requests"`
		}
		var err error
		for try := 0; try < 20; try++ {
			if err = getJSON(e.url(p)+"/requests", &doc); err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			e.t.Fatalf("request log of %s: %v", p, err)
		}
		out[p] = doc.Requests
	}
	return out
}

// ---- load ------------------------------------------------------------------------------

type load struct {
	e       *env
	workers int
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	counts  map[string]int
	sent    atomic.Int64
	began   time.Time
	ended   time.Time
}

func newLoad(e *env, workers int) *load {
	return &load{e: e, workers: workers, done: make(chan struct{}), counts: map[string]int{}}
}

func (l *load) start() {
	l.began = time.Now()
	body, _ := json.Marshal(map[string]any{
		"services": []string{"http://flight:9000/prepare", "http://hotel:9000/prepare", "http://payment:9000/prepare"},
		"timeout":  2000,
	})
	client := &http.Client{Timeout: 20 * time.Second}
	for w := 0; w < l.workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.done:
					return
				default:
				}
				node := coordinators[(w+i)%len(coordinators)]
				req, _ := http.NewRequest(http.MethodPost, l.e.url(node)+"/v1/transactions", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("e2e-%d-%d-%d", w, i, rand.Uint32()))
				l.sent.Add(1)
				resp, err := client.Do(req)
				outcome := ""
				if err != nil {
					outcome = "transport error"
				} else {
					var out struct {
						Status string `json:"status"`
						Error  string `json:"error"`
					}
					_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
					resp.Body.Close()
					outcome = fmt.Sprintf("%d %s%s", resp.StatusCode, out.Status, out.Error)
				}
				l.mu.Lock()
				l.counts[outcome]++
				l.mu.Unlock()
				if err != nil || resp.StatusCode >= 500 {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
}

func (l *load) stop() {
	l.once.Do(func() {
		close(l.done)
		l.wg.Wait()
		l.ended = time.Now()
	})
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.counts))
	for k := range l.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	d := l.ended.Sub(l.began)
	fmt.Fprintf(&b, "%d POSTs in %s (%.0f/s) from %d clients:", l.sent.Load(), d.Round(time.Second), float64(l.sent.Load())/d.Seconds(), l.workers)
	for _, k := range keys {
		fmt.Fprintf(&b, " [%s]=%d", k, l.counts[k])
	}
	return b.String()
}

// ---- figures ---------------------------------------------------------------------------

type figures struct {
	mu      sync.Mutex
	lines   []string
	load    string
	checker string
	txns    int
	logs    logCheck
}

func (f *figures) add(what string, d time.Duration, who string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("%-55s %8s", what, d.Round(time.Millisecond))
	if who != "" {
		s += "  (" + who + ")"
	}
	f.lines = append(f.lines, s)
}

func (e *env) report(f *figures) {
	var b strings.Builder
	fmt.Fprintf(&b, "figures (total %s):\n", time.Since(e.start).Round(time.Second))
	for _, l := range f.lines {
		b.WriteString("  " + l + "\n")
	}
	if f.load != "" {
		b.WriteString("  load: " + f.load + "\n")
	}
	if f.txns > 0 {
		v := f.logs
		fmt.Fprintf(&b, "  final log: %d transactions; participants logged %d calls (%d prepares, %d phase-two; by sender %v)\n",
			f.txns, v.requests, v.prepares, v.phaseTwo, v.bySender)
		fmt.Fprintf(&b, "  partition window: isolated leader sent %d phase-two calls, the last %s after the cut (bound %s); other nodes' first: %s\n",
			v.isolatedInWindow, fmtDur(v.isolatedLast), stepDownBound, fmtDur(v.othersFirst))
		fmt.Fprintf(&b, "  request-log violations: %d\n", len(v.violations))
	}
	if f.checker != "" {
		b.WriteString("  txcoord check: " + strings.ReplaceAll(f.checker, "\n", "\n    ") + "\n")
	}
	e.t.Log(b.String())
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	return d.Round(time.Millisecond).String()
}
