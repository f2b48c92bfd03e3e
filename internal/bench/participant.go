package bench

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/txcoord/txcoord/participant"
)

// FloorIDPrefix marks the transaction ids the floor measurement sends straight to a fast
// participant; the Recorder ignores them.
const FloorIDPrefix = "floor-"

var bodyBufs = sync.Pool{New: func() any { return new([1024]byte) }}

var (
	jsonContentType = []string{"application/json"}
	ackBody         = []byte(`{"status":"ACK"}`)
	nackBody        = []byte(`{"status":"NACK","reason":"bench: vote no"}`)
)

// FastParticipant is the load tool's built-in participant: a stateless http.Handler that
// answers prepare, commit and rollback at once (after Delay, if set) and keeps no record
// beyond the timing of each call. It votes NACK on a deterministic share NackRate of
// transactions: the transaction id is hashed, so every participant agrees on which one of
// them refuses a given transaction and a repeated Prepare gets the same vote. It is not a
// correct participant for real work (it holds nothing); it is the floor of what a
// participant can cost.
type FastParticipant struct {
	Index, Of int           // this participant's position among Of participants
	NackRate  float64       // share of transactions one participant refuses, 0..1
	Delay     time.Duration // added to every call before it is answered
	Rec       *Recorder     // nil: no timing kept
}

// ServeHTTP answers POST .../prepare, .../commit and .../rollback.
func (p *FastParticipant) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var arrive time.Duration
	if p.Rec != nil {
		arrive = p.Rec.now()
	}
	if r.Method != http.MethodPost {
		http.Error(w, `{"error":"method_not_allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	phase := participant.Phase(path.Base(r.URL.Path))
	if phase != participant.PhasePrepare && phase != participant.PhaseCommit && phase != participant.PhaseRollback {
		http.Error(w, `{"error":"not_found"}`, http.StatusNotFound)
		return
	}
	// A request body is ~90 bytes: read it into a pooled buffer, not a fresh one per call.
	buf := bodyBufs.Get().(*[1024]byte)
	defer bodyBufs.Put(buf)
	n, err := io.ReadFull(r.Body, buf[:])
	body := buf[:n]
	switch {
	case err == nil: // 1 KiB or more: read the rest the slow way
		rest, rerr := io.ReadAll(io.LimitReader(r.Body, participant.DefaultMaxBodyBytes))
		body, err = append(body, rest...), rerr
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		err = nil
	}
	if err != nil {
		http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
		return
	}
	var req participant.Request
	if err := json.Unmarshal(body, &req); err != nil || req.TransactionID == "" {
		http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
		return
	}
	if p.Delay > 0 {
		time.Sleep(p.Delay)
	}
	reply := ackBody
	if phase == participant.PhasePrepare && p.refuses(req.TransactionID) {
		reply = nackBody
	}
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(reply)
	if p.Rec != nil {
		p.Rec.record(req.TransactionID, phase, arrive, p.Rec.now())
	}
}

// refuses reports whether this participant votes no on id.
func (p *FastParticipant) refuses(id string) bool {
	return Refuses(id, p.Index, p.Of, p.NackRate)
}

// Refuses reports whether participant index (of n) votes no on transaction id at the given
// NACK rate: hash(id) picks whether the transaction is refused and by which participant.
func Refuses(id string, index, n int, rate float64) bool {
	if rate <= 0 || n <= 0 {
		return false
	}
	h := fnv.New64a()
	_, _ = io.WriteString(h, id)
	v := h.Sum64()
	frac := float64(v>>11) / float64(uint64(1)<<53)
	if frac >= rate && rate < 1 {
		return false
	}
	return int(v%uint64(n)) == index
}

// Timing is what the participants saw of one transaction, as offsets from the Recorder's
// start (monotonic clock, same process as the load generator).
type Timing struct {
	PrepareFirst, PrepareLast time.Duration // first prepare arrival, last prepare answered
	TwoFirst, TwoLast         time.Duration // first commit/rollback arrival, last one answered
	Prepares, Twos            int           // calls received
}

// Recorder collects per-transaction call timings from the built-in participants. Entries
// are taken out by Take once the load generator has the transaction's answer, so memory
// stays bounded by the transactions in flight (and any whose POST failed).
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	m     map[string]*Timing
}

// NewRecorder returns an empty Recorder whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now(), m: make(map[string]*Timing)} }

func (r *Recorder) now() time.Duration { return time.Since(r.start) }

func (r *Recorder) record(id string, phase participant.Phase, arrive, end time.Duration) {
	if strings.HasPrefix(id, FloorIDPrefix) {
		return
	}
	r.mu.Lock()
	t := r.m[id]
	if t == nil {
		t = &Timing{PrepareFirst: -1, TwoFirst: -1}
		r.m[id] = t
	}
	if phase == participant.PhasePrepare {
		if t.PrepareFirst < 0 || arrive < t.PrepareFirst {
			t.PrepareFirst = arrive
		}
		t.PrepareLast = max(t.PrepareLast, end)
		t.Prepares++
	} else {
		if t.TwoFirst < 0 || arrive < t.TwoFirst {
			t.TwoFirst = arrive
		}
		t.TwoLast = max(t.TwoLast, end)
		t.Twos++
	}
	r.mu.Unlock()
}

// Take removes and returns the timing of id.
func (r *Recorder) Take(id string) (Timing, bool) {
	r.mu.Lock()
	t, ok := r.m[id]
	if ok {
		delete(r.m, id)
	}
	r.mu.Unlock()
	if !ok {
		return Timing{}, false
	}
	return *t, true
}

// Len returns the number of transactions held.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Participants is a set of running fast participants, one loopback listener each (so the
// coordinator keeps a connection pool per participant, as with real services).
type Participants struct {
	PrepareURLs []string
	Rec         *Recorder
	servers     []*http.Server
}

// StartParticipants starts n fast participants on host (e.g. "127.0.0.1"); port 0 picks
// free ports, otherwise they take port, port+1, ...
func StartParticipants(host string, port, n int, nackRate float64, delay time.Duration, rec *Recorder) (*Participants, error) {
	if n < 1 {
		return nil, fmt.Errorf("participants: need at least 1, got %d", n)
	}
	if nackRate < 0 || nackRate > 1 || math.IsNaN(nackRate) {
		return nil, fmt.Errorf("nack rate %v: want 0..1", nackRate)
	}
	ps := &Participants{Rec: rec}
	for i := 0; i < n; i++ {
		p := 0
		if port != 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(p)))
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("participant %d: %w", i, err)
		}
		hs := &http.Server{
			Handler:           &FastParticipant{Index: i, Of: n, NackRate: nackRate, Delay: delay, Rec: rec},
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		}
		go func() { _ = hs.Serve(ln) }()
		ps.servers = append(ps.servers, hs)
		ps.PrepareURLs = append(ps.PrepareURLs, fmt.Sprintf("http://%s/p%d/prepare", ln.Addr(), i))
	}
	return ps, nil
}

// Close stops the participants.
func (ps *Participants) Close() {
	for _, s := range ps.servers {
		_ = s.Close()
	}
	ps.servers = nil
}
