// Package demo holds txcoord's three demo participants (flight seats, hotel rooms, payment
// balances), built on the participant library with their inventory in bbolt, and with fault
// knobs for chaos tests.
//
// Each Service serves, at its root:
//
//	POST /prepare, /commit, /rollback   the participant protocol (participant.Handler)
//	GET  /state                         State: inventory, holds, ledger (one snapshot)
//	GET  /requests[?transactionId=ID]   the request log: {"requests":[LoggedRequest...]}
//	GET  /control                       the fault knobs and seed: Control
//	POST /control                       change them: a partial Control, e.g. {"nackRate":0.2}
//	GET  /healthz                       {"status":"ok"}
//
// so http://HOST:PORT/prepare is a prepare URL from which participant.Derive finds the rest.
// Prepare moves Unit units of a pool from free to held, Commit from held to sold, Rollback
// from held back to free; the inventory and the participant records change in one bbolt
// transaction, so State is always conserved: capacity = free + held + sold per pool, held =
// the sum of the holds, sold = Unit x the committed transactions in the ledger.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/txcoord/txcoord/participant"
	bolt "go.etcd.io/bbolt"
)

// The three kinds of demo service.
const (
	KindFlight  = "flight"  // one pool "seats"; Unit defaults to 1 seat
	KindHotel   = "hotel"   // one pool "rooms"; Unit defaults to 1 room
	KindPayment = "payment" // pools "acct-0".."acct-N-1" (balances in cents); Unit defaults to 100
)

// Defaults of Config.
const (
	DefaultCapacity        = 1000   // units per pool (payment: cents per account is 100x this)
	DefaultAccounts        = 3      // payment accounts
	DefaultRequestLogLimit = 100000 // entries kept in the request log
)

// Config configures a Service. Zero values take the documented defaults.
type Config struct {
	// Kind is KindFlight, KindHotel or KindPayment. Required.
	Kind string
	// DataDir holds the database, DataDir/<Kind>.db, so three kinds can share one directory.
	// Required. An existing database keeps its unit and capacities; a different Kind in it is
	// an error.
	DataDir string
	// Capacity is the size of each pool when the database is created: seats, rooms, or the
	// starting balance of each account in cents (default DefaultCapacity, payment 100x).
	Capacity int64
	// Unit is what one transaction reserves, in the pool's units (default 1, payment 100).
	Unit int64
	// Accounts is the number of payment accounts (default DefaultAccounts); other kinds
	// have one pool.
	Accounts int
	// Seed seeds the random draws of the fault knobs: the same seed, knobs and request order
	// give the same faults.
	Seed uint64
	// Faults are the initial fault knobs.
	Faults Faults
	// Logger receives the service's and the library's logs (default slog.Default()).
	Logger *slog.Logger
	// Exit is called with code 1 when a fault knob says to exit abruptly (default os.Exit).
	// In-process users (tests, `txcoord dev`) set it to stop the service instead; the
	// request that triggered it then loses its connection, as with a dead process.
	Exit func(code int)
	// Gate, if set, is called before each prepare, commit or rollback is processed (after the
	// delay knob) and may block: tests use it to hold a request in flight. It must return
	// when its context ends.
	Gate func(ctx context.Context, p participant.Phase, txID string)
	// RequestLogLimit bounds the request log (default DefaultRequestLogLimit); older entries
	// are dropped first.
	RequestLogLimit int
	// InquiryGrace is how long past a prepare deadline the service waits for phase two
	// before it asks the cluster for the outcome (participant.WithInquiryGrace) [the
	// library's default, 2 s].
	InquiryGrace time.Duration
}

// Faults are the fault knobs. Rates are probabilities in [0, 1], drawn per request.
type Faults struct {
	// NackRate: a prepare votes NACK ("injected NACK"), recorded like any vote.
	NackRate float64 `json:"nackRate"`
	// DelayMS: milliseconds to wait before processing a prepare. The request is processed
	// even if its client has gone meanwhile (a late prepare, case C02).
	DelayMS int64 `json:"delayMs"`
	// ErrorRate: any phase is answered with HTTP 500 without doing anything.
	ErrorRate float64 `json:"errorRate"`
	// DropRate: any phase is processed, then its connection is closed without a reply.
	DropRate float64 `json:"dropRate"`
	// ExitRate: any phase is processed, then the service exits (Config.Exit) without a reply.
	ExitRate float64 `json:"exitRate"`
}

func (f Faults) validate() error {
	for name, r := range map[string]float64{"nackRate": f.NackRate, "errorRate": f.ErrorRate, "dropRate": f.DropRate, "exitRate": f.ExitRate} {
		if !(r >= 0 && r <= 1) {
			return fmt.Errorf("%s %v is not in [0, 1]", name, r)
		}
	}
	if f.DelayMS < 0 {
		return fmt.Errorf("delayMs %d is negative", f.DelayMS)
	}
	return nil
}

// Control is the body of GET and POST /control: the fault knobs and the seed. A POST may
// give any subset of the fields; the others keep their values. A POST with "exit": true
// answers and then exits abruptly (Config.Exit).
type Control struct {
	Faults
	// Seed, when set in a POST, reseeds the random draws.
	Seed uint64 `json:"seed"`
	// Exit, when true in a POST, makes the service exit after answering.
	Exit bool `json:"exit,omitempty"`
}

// LoggedRequest is one entry of the request log: a protocol call and what became of it.
type LoggedRequest struct {
	TransactionID string            `json:"transactionId"`
	Phase         participant.Phase `json:"phase"`
	// Received is when the request arrived; Done when its fate was decided.
	Received time.Time `json:"received"`
	Done     time.Time `json:"done"`
	// Result is "ACK", "NACK", "http <code>" (an error answer, injected or not), "dropped"
	// (processed, connection closed), "exit" (processed, service exited) or "closed" (the
	// service closed while the request waited).
	Result string `json:"result"`
	// From is the caller's address (host:port); Node and Term are the values of its
	// participant.NodeHeader and participant.TermHeader (the leader and the Raft term it
	// sent the call in), so a test can tell which leader sent each call and check that none
	// came from a node after a newer term began.
	From string `json:"from,omitempty"`
	Node string `json:"node,omitempty"`
	Term uint64 `json:"term,omitempty"`
}

// NodeHeader is the request header whose value LoggedRequest.Node records.
const NodeHeader = participant.NodeHeader

// Service is one running demo participant. Create it with New; serve Handler(); Close it.
type Service struct {
	cfg     Config
	log     *slog.Logger
	db      *bolt.DB
	store   *participant.BoltStore
	lib     *participant.Handler
	mux     *http.ServeMux
	pools   []string
	outOf   string
	unit    int64
	exit    func(int)
	closed  chan struct{}
	once    sync.Once
	stopRun func()        // ends the library's inquiry loop (Handler.Run)
	runDone chan struct{} // closed when it has returned

	mu     sync.Mutex // guards the fields below
	faults Faults
	seed   uint64
	rng    *rand.Rand
	reqs   []LoggedRequest
}

// New opens (or creates) the service's database in cfg.DataDir and returns the service. It
// fails on an unknown kind, invalid knobs, or a database that cannot be opened.
func New(cfg Config) (*Service, error) {
	if cfg.Kind != KindFlight && cfg.Kind != KindHotel && cfg.Kind != KindPayment {
		return nil, fmt.Errorf("demo: kind %q is not %s, %s or %s", cfg.Kind, KindFlight, KindHotel, KindPayment)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("demo: DataDir is required")
	}
	if err := cfg.Faults.validate(); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	scale := int64(1)
	if cfg.Kind == KindPayment {
		scale = 100
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity * scale
	}
	if cfg.Unit <= 0 {
		cfg.Unit = scale
	}
	if cfg.Accounts <= 0 {
		cfg.Accounts = DefaultAccounts
	}
	if cfg.RequestLogLimit <= 0 {
		cfg.RequestLogLimit = DefaultRequestLogLimit
	}
	s := &Service{cfg: cfg, log: cfg.Logger, exit: cfg.Exit, closed: make(chan struct{}), faults: cfg.Faults}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("service", cfg.Kind)
	if s.exit == nil {
		s.exit = os.Exit
	}
	s.reseed(cfg.Seed)
	s.pools, s.outOf = pools(cfg.Kind, cfg.Accounts)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	db, err := bolt.Open(filepath.Join(cfg.DataDir, cfg.Kind+".db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("demo: open database: %w", err)
	}
	s.db = db
	if s.store, err = participant.NewBoltStore(db); err == nil {
		err = s.initDB()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	opts := []participant.Option{participant.WithLogger(s.log)}
	if cfg.InquiryGrace > 0 {
		opts = append(opts, participant.WithInquiryGrace(cfg.InquiryGrace))
	}
	s.lib = participant.NewHandler(participant.Callbacks{Prepare: s.prepare, Commit: s.commit, Rollback: s.rollback},
		s.store, opts...)
	// The service asks the cluster for outcomes that do not come (the Prepare's inquiry
	// list), as a service built on the library should; Close ends it.
	runCtx, stopRun := context.WithCancel(context.Background())
	s.stopRun, s.runDone = stopRun, make(chan struct{})
	go func() {
		defer close(s.runDone)
		_ = s.lib.Run(runCtx)
	}()
	s.mux = http.NewServeMux()
	for _, p := range []participant.Phase{participant.PhasePrepare, participant.PhaseCommit, participant.PhaseRollback} {
		s.mux.Handle("/"+string(p), s.phase(p))
	}
	s.mux.HandleFunc("GET /state", s.serveState)
	s.mux.HandleFunc("GET /requests", s.serveRequests)
	s.mux.HandleFunc("GET /control", s.serveControl)
	s.mux.HandleFunc("POST /control", s.serveControl)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return s, nil
}

// Handler returns the service's HTTP handler (routes in the package documentation).
func (s *Service) Handler() http.Handler { return s.mux }

// Kind returns the service's kind.
func (s *Service) Kind() string { return s.cfg.Kind }

// Close stops delayed requests (their connections are closed) and closes the database,
// waiting for the transactions in progress. Requests after Close get HTTP 500. Close is
// idempotent.
func (s *Service) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		s.stopRun()
		<-s.runDone // no inquiry may touch the store once it is closed
		err = s.db.Close()
	})
	return err
}

// Faults returns the current fault knobs.
func (s *Service) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// SetFaults replaces the fault knobs; it returns an error (and changes nothing) if a rate is
// outside [0, 1] or the delay is negative.
func (s *Service) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	return nil
}

// Requests returns a copy of the request log, oldest first.
func (s *Service) Requests() []LoggedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LoggedRequest(nil), s.reqs...)
}

func (s *Service) reseed(seed uint64) {
	s.seed = seed
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// roll draws one fault: true with the probability that pick returns from the current knobs.
// A rate of 0 draws nothing, so an idle knob does not shift the others' sequence.
func (s *Service) roll(pick func(Faults) float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rate := pick(s.faults)
	return rate > 0 && s.rng.Float64() < rate
}

func (s *Service) record(e LoggedRequest) {
	e.Done = time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) >= s.cfg.RequestLogLimit { // drop the oldest tenth at once
		s.reqs = append(s.reqs[:0], s.reqs[len(s.reqs)-s.cfg.RequestLogLimit+max(1, s.cfg.RequestLogLimit/10):]...)
	}
	s.reqs = append(s.reqs, e)
}

// phase serves one protocol phase through the fault knobs and the library.
func (s *Service) phase(p participant.Phase) http.HandlerFunc {
	lib := s.lib.Phase(p)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			lib.ServeHTTP(w, r) // the library's 405
			return
		}
		entry := LoggedRequest{Phase: p, Received: time.Now(), From: r.RemoteAddr, Node: r.Header.Get(NodeHeader)}
		entry.Term, _ = strconv.ParseUint(r.Header.Get(participant.TermHeader), 10, 64)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, participant.DefaultMaxBodyBytes))
		if err != nil {
			code, eb := http.StatusBadRequest, participant.ErrorBody{Error: "bad_request", Detail: "reading body: " + err.Error()}
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				code, eb = http.StatusRequestEntityTooLarge, participant.ErrorBody{Error: "body_too_large", Detail: err.Error()}
			}
			entry.Result = fmt.Sprintf("http %d", code)
			s.record(entry)
			writeJSON(w, code, eb)
			return
		}
		var req participant.Request
		_ = json.Unmarshal(body, &req) // the library reports malformed bodies
		entry.TransactionID = req.TransactionID
		// Process to the end even if the client leaves: a late request must land.
		ctx := context.WithoutCancel(r.Context())
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))

		if d := s.Faults().DelayMS; p == participant.PhasePrepare && d > 0 {
			t := time.NewTimer(time.Duration(d) * time.Millisecond)
			select {
			case <-t.C:
			case <-s.closed:
				t.Stop()
				entry.Result = "closed"
				s.record(entry)
				dropConnection(w)
				return
			}
		}
		if s.cfg.Gate != nil {
			s.cfg.Gate(ctx, p, req.TransactionID)
		}
		if s.roll(func(f Faults) float64 { return f.ErrorRate }) {
			entry.Result = "http 500"
			s.record(entry)
			writeJSON(w, http.StatusInternalServerError, participant.ErrorBody{Error: "injected_fault", Detail: "injected HTTP 500"})
			return
		}
		rec := &bufferedResponse{header: http.Header{}}
		lib.ServeHTTP(rec, r)
		entry.Result = rec.result()
		switch {
		case s.roll(func(f Faults) float64 { return f.ExitRate }):
			entry.Result = "exit"
			s.record(entry)
			s.log.Warn("fault knob: exiting abruptly after processing", "txn", req.TransactionID, "phase", string(p))
			s.exit(1)
			dropConnection(w)
		case s.roll(func(f Faults) float64 { return f.DropRate }):
			entry.Result = "dropped"
			s.record(entry)
			dropConnection(w)
		default:
			s.record(entry)
			rec.copyTo(w)
		}
	}
}

// dropConnection closes the client's connection without an answer.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // HTTP/2 or a wrapped writer: net/http resets the stream
}

// bufferedResponse holds the library's answer until the fault knobs decide its fate.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}
func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) result() string {
	if b.code == http.StatusOK {
		var rep participant.Reply
		if json.Unmarshal(b.body.Bytes(), &rep) == nil {
			return string(rep.Status)
		}
	}
	return fmt.Sprintf("http %d", b.code)
}

func (b *bufferedResponse) copyTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.code)
	_, _ = w.Write(b.body.Bytes())
}

func (s *Service) serveState(w http.ResponseWriter, _ *http.Request) {
	st, err := s.State()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, participant.ErrorBody{Error: "internal_error", Detail: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Service) serveRequests(w http.ResponseWriter, r *http.Request) {
	all := s.Requests()
	if id := r.URL.Query().Get("transactionId"); id != "" {
		var some []LoggedRequest
		for _, e := range all {
			if e.TransactionID == id {
				some = append(some, e)
			}
		}
		all = some
	}
	if all == nil {
		all = []LoggedRequest{}
	}
	writeJSON(w, http.StatusOK, map[string][]LoggedRequest{"requests": all})
}

func (s *Service) serveControl(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	cur := Control{Faults: s.faults, Seed: s.seed}
	s.mu.Unlock()
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, cur)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, participant.ErrorBody{Error: "bad_request", Detail: err.Error()})
		return
	}
	var seed struct {
		Seed *uint64 `json:"seed"`
	}
	next := cur
	if err = json.Unmarshal(body, &next); err == nil {
		err = json.Unmarshal(body, &seed)
	}
	if err == nil {
		err = next.Faults.validate()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, participant.ErrorBody{Error: "bad_request", Detail: err.Error()})
		return
	}
	s.mu.Lock()
	s.faults = next.Faults
	if seed.Seed != nil {
		s.reseed(*seed.Seed)
	}
	next.Seed = s.seed
	s.mu.Unlock()
	s.log.Info("fault knobs changed", "faults", fmt.Sprintf("%+v", next.Faults), "seed", next.Seed)
	exit := next.Exit
	next.Exit = false
	writeJSON(w, http.StatusOK, next)
	if exit {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.log.Warn("control: exiting abruptly")
		s.exit(1)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
