// Package coordinator is txcoord's two-phase-commit engine. It runs on the Raft leader only
// and drives each transaction through one step function, the same for a new transaction
// and for one a new leader resumes:
//
//	preparing     Prepare to every participant in parallel, bounded by the logged deadline;
//	              all ACK -> log commit; any NACK, error or the deadline -> log abort
//	              (presumed abort).
//	committing /  Commit or Rollback to every participant until each acknowledges, with
//	rolling_back  capped exponential backoff and jitter; then log completion. A participant
//	              that refuses past the attempt limit makes the outcome heuristic: failed.
//
// The engine reads state only from the FSM and writes only through Log.Apply, and it sends
// a phase-two message only after the decision entry is committed. Apply errors that leave
// the outcome unknown (raft.ErrLeadershipLost) or say this node no longer leads stop the
// transaction's driver: the next leader reads the log and continues. The package declares
// the small interfaces it needs (Log, Caller) and never imports cluster/.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/participant"
)

// Log proposes commands to the replicated log.
type Log interface {
	// Apply proposes cmd, waits until it is committed and applied to the local FSM, and
	// returns the FSM's Result. Errors wrap raft.ErrNotLeader or
	// raft.ErrLeadershipTransferInProgress when nothing was written, and
	// raft.ErrLeadershipLost when the entry may still commit under the next leader.
	Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error)
}

// State is the read side of the FSM the engine needs.
type State interface {
	Get(id string) (*fsm.Txn, bool)
	ByKey(key string) (*fsm.Txn, bool)
	Active() []*fsm.Txn
	// FeatureLevel is the cluster's enabled feature level (fsm.FSM.FeatureLevel): a Begin
	// carries its trace context only from level 4 on (fsm.RequiredLevel(fsm.CmdBeginTraced)).
	FeatureLevel() uint32
}

// Caller sends one protocol call to a participant (call.Client implements it).
type Caller interface {
	Call(ctx context.Context, url string, p participant.Phase, req participant.Request) (participant.Reply, error)
}

// Errors returned by Submit and the operator actions.
var (
	// ErrNotLeader: this node is not the leader (or is between leadership and readiness);
	// nothing was written.
	ErrNotLeader = errors.New("not the leader")
	// ErrBusy: the in-flight limit is reached; nothing was written. Retry later.
	ErrBusy = errors.New("too many transactions in flight")
	// ErrIndeterminate: the Begin entry was proposed but leadership was lost before it was
	// known to commit. The transaction may still run under the next leader; ask for it by
	// id (or retry with the same idempotency key).
	ErrIndeterminate = errors.New("outcome unknown: leadership lost while logging")
	// ErrKeyReused: the idempotency key names a transaction that is no longer kept, or one
	// with other participants or another timeout: answering with that transaction's outcome
	// would tell the client a request it never made succeeded.
	ErrKeyReused = errors.New("idempotency key already used")
)

// Config tunes the engine. Zero values take the defaults in brackets.
type Config struct {
	// MaxInFlight bounds transactions between Begin and a terminal status that this leader
	// accepted [1024]. Resumed transactions always run but count against it.
	MaxInFlight int
	// PhaseTwoRetryFor is how long phase two keeps retrying a participant that refuses or
	// fails Commit or Rollback, counted from the decision (or an operator's Retry), before
	// the transaction becomes failed (a heuristic outcome that needs an operator)
	// [24h; negative: forever].
	PhaseTwoRetryFor time.Duration
	// PhaseTwoMaxAttempts, when positive, also caps the Commit or Rollback calls to one
	// participant: reaching it makes the transaction failed too [0: no cap, time alone].
	PhaseTwoMaxAttempts int
	// RetryInitial and RetryMax bound the phase-two backoff, exponential with jitter
	// [50ms, 1m]; RetryAfterMax caps a participant's Retry-After [60s].
	RetryInitial, RetryMax, RetryAfterMax time.Duration
	// CallTimeout bounds one phase-two call [10s]. Phase-one calls end at the deadline.
	CallTimeout time.Duration
	// VerifyLeader, when set, confirms that this node still leads (a round of heartbeats
	// to a quorum: raft.VerifyLeader); nil means no fencing. Before each participant call
	// the engine makes sure leadership was confirmed, by a committed entry or by
	// VerifyLeader, within FenceLease; a call it cannot confirm is not sent.
	VerifyLeader func(ctx context.Context) error
	// FenceLease is how old a confirmation of leadership may be for a call to go out
	// [250ms]. Keep it below Raft's heartbeat timeout: no other leader can be elected
	// sooner than that after a quorum last heard from this one.
	FenceLease time.Duration
	// ProgressEvery: after the first failed phase-two attempt of one participant, and every
	// this many after, the leader logs a Progress entry so the stuck transaction is visible
	// on every node [3].
	ProgressEvery int
	// CompleteLinger is how long the completion of a transaction may wait for others to
	// share its log entry [10ms; negative: none]. Clients are answered before it.
	CompleteLinger time.Duration
	// Retention bounds what the FSM keeps of finished transactions and idempotency keys.
	Retention Retention
	// Observer receives measurements [none].
	Observer Observer
	// Now is the clock [time.Now]; tests replace it.
	Now func() time.Time
	// ClockBound, when set, returns the latest wall-clock time the replicated log vouches
	// for (cluster.Node.ClockBound); retention never prunes as of a later time. ok false:
	// unknown, and only the count limit prunes.
	ClockBound func() (bound time.Time, ok bool)
	// InquirySkew is how long past a transaction's deadline, on the leader's clock, an
	// inquiry about an id the cluster has no record of is still answered pending rather
	// than presumed aborted [1s]: it covers the skew between the clock of the leader that
	// stamped the deadline and this one's. Safety never depends on it (the log orders a
	// presumed abort against a decision); it only spares a transaction whose decision is
	// being logged right at its deadline.
	InquirySkew time.Duration
	// FeatureGate, when set, returns nil once the cluster has enabled feature level need,
	// else an error naming what waits for it (cluster.Node.FeatureError); the engine asks
	// it before an inquiry logs a presumed abort and before a fast transaction sends
	// anything. nil: every level is taken as enabled (tests).
	FeatureGate func(need uint32, what string) error
	// Archived, when set, looks up a transaction pruned from the FSM in this node's
	// archive (archive.Archive.Get): an inquiry about a pruned id answers from it.
	Archived func(id string) (*fsm.Txn, bool, error)
	// InquiryURLs, when set, returns the base URLs of the cluster's nodes' HTTP APIs, sent
	// to participants as "inquiry" in every Prepare: where to ask for an outcome.
	InquiryURLs func() []string
	Logger      hclog.Logger
	// TracerProvider, when set, records the spans of every transaction (tracing.go names
	// them) [nil: tracing off, no span is made].
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1024
	}
	switch {
	case c.PhaseTwoRetryFor == 0:
		c.PhaseTwoRetryFor = 24 * time.Hour
	case c.PhaseTwoRetryFor < 0:
		c.PhaseTwoRetryFor = 0 // forever
	}
	if c.PhaseTwoMaxAttempts < 0 {
		c.PhaseTwoMaxAttempts = 0
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = 50 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Minute
	}
	if c.FenceLease <= 0 {
		c.FenceLease = 250 * time.Millisecond
	}
	if c.RetryAfterMax <= 0 {
		c.RetryAfterMax = 60 * time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 3
	}
	c.Retention.defaults()
	switch {
	case c.CompleteLinger == 0:
		c.CompleteLinger = 10 * time.Millisecond
	case c.CompleteLinger < 0:
		c.CompleteLinger = 0
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.InquirySkew <= 0 {
		c.InquirySkew = time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Engine drives transactions while this node leads. Create it with New; it is idle until
// Lead is called.
type Engine struct {
	cfg    Config
	log    Log
	state  State
	caller Caller
	lg     hclog.Logger
	tracer trace.Tracer // nil: tracing off

	mu      sync.Mutex
	lead    *term // nil while not leading
	driving map[string]struct{}
	nudges  map[string]chan struct{} // closed to cut a phase-two backoff short
	settled map[string]chan struct{} // closed when phase two is acknowledged by all

	live map[string]*phaseTwoRun // phase-two progress of the transactions being driven

	// fastUnlogged holds the fast transactions this leader has sent Prepare for and not
	// logged yet (fast.go); fastKeys maps their idempotency keys to them.
	fastUnlogged map[string]*fastRun
	fastKeys     map[string]*fastRun

	inflight atomic.Int64
	// Hooks lets tests observe the engine; nil in production.
	hooks *Hooks

	// Fencing (fence.go): epoch is the engine's start on cfg.Now's clock, confirmed the
	// latest time (since epoch) leadership is known to have held, verifying the
	// VerifyLeader round in flight.
	epoch     time.Time
	confirmed atomic.Int64
	vmu       sync.Mutex
	verifying *verifyFlight
}

// Hooks are test seams called at protocol steps; any may be nil.
type Hooks struct {
	// BeforeDecide runs after phase one, before the decision is proposed.
	BeforeDecide func(id string, d fsm.Decision)
	// AfterDecide runs once the decision entry is committed, before any phase-two call.
	AfterDecide func(id string, d fsm.Decision)
}

// term is one period of leadership.
type term struct {
	ctx         context.Context
	term        uint64 // the Raft term, for logs and spans
	wg          sync.WaitGroup
	completions chan completionReq
}

// New returns an engine that writes through log, reads state and calls participants
// through caller.
func New(cfg Config, log Log, state State, caller Caller) *Engine {
	cfg.defaults()
	caller = observedCaller{Caller: caller, obs: cfg.Observer}
	e := &Engine{cfg: cfg, log: log, state: state, caller: caller, lg: cfg.Logger.Named("2pc"), driving: map[string]struct{}{}, nudges: map[string]chan struct{}{}, settled: map[string]chan struct{}{},
		live: map[string]*phaseTwoRun{}, fastUnlogged: map[string]*fastRun{}, fastKeys: map[string]*fastRun{}, epoch: cfg.Now()}
	if cfg.TracerProvider != nil {
		e.tracer = cfg.TracerProvider.Tracer("github.com/txcoord/txcoord/coordinator")
	}
	return e
}

// SetHooks installs test hooks; call before Lead.
func (e *Engine) SetHooks(h *Hooks) { e.hooks = h }

// Lead runs the engine for one term of leadership: it resumes every non-terminal
// transaction in the FSM (the caller must have issued a Raft barrier first, so the FSM holds
// all that earlier leaders committed), accepts Submit calls, and when ctx ends waits for
// every driver to stop before it returns. After Lead returns this node sends nothing more.
// raftTerm is the Raft term this node leads in; every log line of the term names it.
func (e *Engine) Lead(ctx context.Context, raftTerm uint64) {
	ctx = call.WithFence(ctx, e.fence)
	t := &term{ctx: ctx, term: raftTerm, completions: make(chan completionReq, maxCompleteBatch)}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		e.completeLoop(ctx, e.lg.With("term", raftTerm), t.completions)
	}()
	e.mu.Lock()
	e.lead = t
	e.mu.Unlock()
	active := e.state.Active()
	for _, txn := range active {
		if txn.Status.Terminal() {
			continue
		}
		e.inflight.Add(1)
		e.startDriver(t, txn.ID, false, e.resumeSpan(txn, raftTerm))
	}
	if len(active) > 0 {
		e.lg.Info("resumed in-flight transactions", "count", len(active), "term", raftTerm)
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		e.pruneLoop(ctx, e.lg.With("term", raftTerm))
	}()
	<-ctx.Done()
	e.mu.Lock()
	e.lead = nil
	e.mu.Unlock()
	t.wg.Wait()
}

// Leading reports whether Lead is running.
func (e *Engine) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lead != nil
}

// InFlight returns the number of transactions this leader is driving.
func (e *Engine) InFlight() int64 { return e.inflight.Load() }

// startDriver starts one driver for id unless one already runs. The caller has counted
// the transaction in inflight; the driver releases it.
//
// A Submit whose term ended while its Begin was in flight finds e.lead != t and starts
// nothing. The transaction is not stranded: if this node leads again, the new term's
// barrier comes after the Begin in the log, so the Begin is applied before Lead scans the
// FSM and the new term drives it; if another node leads, that node's scan does.
//
// fresh says that this term logged the transaction's Begin (Submit): no earlier leader can
// have sent it a Prepare, so a participant this leader never reached holds nothing. span,
// the transaction span (nil with tracing off), is ended by the driver, or here when none
// is started.
func (e *Engine) startDriver(t *term, id string, fresh bool, span trace.Span) {
	if !e.startRun(t, id, func(ctx context.Context) { e.drive(ctx, t.term, id, &driveState{fresh: fresh}, span) }) {
		endTxnSpan(span, nil, "not driven here: another driver runs it or the term ended")
	}
}

// startRun starts run as the one driver of id unless one already runs (startDriver; the
// fast path, fast.go, drives a transaction the FSM does not hold yet). The caller has
// counted the transaction in inflight; the driver releases it. It reports whether run was
// started.
func (e *Engine) startRun(t *term, id string, run func(ctx context.Context)) bool {
	e.mu.Lock()
	if _, ok := e.driving[id]; ok || e.lead != t {
		e.mu.Unlock()
		e.inflight.Add(-1)
		return false
	}
	e.driving[id] = struct{}{}
	t.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer func() {
			e.mu.Lock()
			delete(e.driving, id)
			delete(e.nudges, id)
			delete(e.settled, id) // waiters fall back to the FSM, which is terminal or moves on
			delete(e.live, id)
			e.mu.Unlock()
			e.inflight.Add(-1)
			t.wg.Done()
		}()
		run(t.ctx)
	}()
	return true
}

// currentTerm returns the running term or ErrNotLeader.
func (e *Engine) currentTerm() (*term, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lead == nil || e.lead.ctx.Err() != nil {
		return nil, ErrNotLeader
	}
	return e.lead, nil
}

// Request is a client's transaction as the engine takes it, already validated.
type Request struct {
	Participants []fsm.Participant
	Timeout      time.Duration // phase one's bound, > 0
	Key          string        // idempotency key, "" for none
	// Payloads, when non-nil, has one compact JSON text per participant ("" for none),
	// sent as "payload" in its Prepare. A request with payloads logs a Begin of command
	// type 13, which needs cluster feature level 2 (Log.Apply refuses it before that);
	// without, the Begin every build reads.
	Payloads []string
	// Mode is ModeDefault ("" too) or ModeFast (fast.go), which needs cluster feature level
	// 3 (Config.FeatureGate's error before that, nothing sent).
	Mode Mode
}

// Submit logs Begin for a new transaction and starts driving it; it returns the logged
// record as soon as Begin is committed (wait on the FSM for the outcome). With a Key that
// is already bound it returns the earlier transaction and starts nothing; with the Key of a
// fast transaction this leader is running, it waits for that one's decision and returns
// it. In fast mode (r.Mode, fast.go) nothing is logged before phase one: Submit returns
// once the decision entry is applied. Errors: ErrNotLeader and ErrBusy (nothing written),
// ErrIndeterminate (the returned record has the id that may yet run), ErrKeyReused, and
// in fast mode Config.FeatureGate's error (nothing sent).
func (e *Engine) Submit(ctx context.Context, r Request) (_ *fsm.Txn, err error) {
	t, err := e.currentTerm()
	if err != nil {
		return nil, err
	}
	if r.Mode == ModeFast {
		return e.submitFast(ctx, t, r)
	}
	if r.Key != "" {
		if txn, ok := e.state.ByKey(r.Key); ok {
			return sameRequest(txn, r)
		}
		e.mu.Lock()
		run, ok := e.fastKeys[r.Key]
		e.mu.Unlock()
		if ok {
			return e.joinFast(ctx, run, r)
		}
	}
	if e.inflight.Add(1) > int64(e.cfg.MaxInFlight) {
		e.inflight.Add(-1)
		return nil, ErrBusy
	}
	id, err := uuid.NewV7()
	if err != nil {
		e.inflight.Add(-1)
		return nil, fmt.Errorf("minting transaction id: %w", err)
	}
	// The transaction span, a child of the client's span context. It is handed to the
	// driver once Begin is committed; on any earlier return it ends here.
	// A request answered from its idempotency key before this point makes none.
	span := e.startTxnSpan(ctx, t.term)
	driven := false
	if span != nil {
		defer func() {
			if driven {
				return
			}
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	refs := e.refs(ctx, r.Participants) // before the clock: a first-use Define takes a round
	now := e.cfg.Now()
	begin := &fsm.Begin{
		ID: id.String(), Key: r.Key, CreatedAt: now.UnixMilli(),
		Deadline:     now.Add(r.Timeout).UnixMilli(),
		Participants: r.Participants,
		Refs:         refs,
	}
	if slices.ContainsFunc(r.Payloads, func(p string) bool { return p != "" }) {
		begin.Payloads = r.Payloads
	}
	var bspan trace.Span
	if span != nil {
		span.SetAttributes(AttrTxnID.String(begin.ID))
		if e.state.FeatureLevel() >= fsm.RequiredLevel(fsm.CmdBeginTraced) {
			// Kept with the transaction so that a leader resuming it links to this trace.
			begin.Trace = traceparent(span)
		}
		_, bspan = e.tracer.Start(trace.ContextWithSpan(ctx, span), SpanBegin)
	}
	applyStart := e.cfg.Now()
	res, err := e.log.Apply(ctx, begin)
	if err == nil {
		e.markConfirmed(applyStart)
	}
	if bspan != nil {
		if err != nil {
			bspan.SetStatus(codes.Error, err.Error())
		} else if res.Txn != nil {
			bspan.SetAttributes(AttrIndex.Int64(int64(res.Txn.Index)))
		}
		bspan.End()
	}
	if err != nil {
		e.inflight.Add(-1)
		if errors.Is(err, raft.ErrLeadershipLost) {
			return &fsm.Txn{ID: begin.ID, Key: r.Key}, fmt.Errorf("%w: %v", ErrIndeterminate, err)
		}
		if isNotLeader(err) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, err
	}
	if errors.Is(res.Err, fsm.ErrKeyExists) {
		e.inflight.Add(-1)
		if span != nil {
			span.AddEvent("idempotency key already bound: nothing begun")
		}
		if res.Txn != nil {
			return sameRequest(res.Txn, r)
		}
		// The key is still kept but its transaction was pruned: starting another one
		// would run the client's request twice.
		return nil, fmt.Errorf("%w: its transaction finished and was pruned", ErrKeyReused)
	}
	if res.Err != nil {
		e.inflight.Add(-1)
		return nil, res.Err
	}
	driven = true
	e.startDriver(t, begin.ID, true, span)
	return res.Txn, nil
}

// sameRequest returns txn, the transaction an idempotency key is bound to, when r asks for
// the same thing (participants in order, and timeout); otherwise ErrKeyReused.
func sameRequest(txn *fsm.Txn, r Request) (*fsm.Txn, error) {
	same := len(txn.Participants) == len(r.Participants) && txn.Deadline-txn.CreatedAt == r.Timeout.Milliseconds()
	for i := 0; same && i < len(r.Participants); i++ {
		same = txn.Participants[i] == r.Participants[i]
		if txn.Status == fsm.StatusPreparing { // payloads are kept until the decision only
			var want string
			if i < len(r.Payloads) {
				want = r.Payloads[i]
			}
			same = same && txn.Payload(i) == want
		}
	}
	if !same {
		return nil, fmt.Errorf("%w by transaction %s, with other participants or another timeout", ErrKeyReused, txn.ID)
	}
	return txn, nil
}

func isNotLeader(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, ErrNotLeader)
}

// errStop ends a driver without an error worth logging: leadership ended.
var errStop = errors.New("leadership ended")

// driveState is what one driver knows beyond the FSM.
type driveState struct {
	// fresh: this term began the transaction (Submit, or the fast path), so no earlier
	// leader can have sent it a Prepare.
	fresh bool
	// reached[i]: participant i may have received a call of this transaction. Known only
	// for a fresh transaction (nil otherwise: assume every participant may have).
	reached []bool
	// early, when set, has one report per participant of the Rollback calls the fast path
	// sent before its abort entry was logged (fast.go): phase two counts those acknowledged.
	early []fsm.Report
}

// drive runs the step function until the transaction is terminal or this term ends. A
// step whose calls the fence refused (leadership could not be confirmed) is run again after
// a pause: a node that no longer leads sends nothing until its term ends, and one that
// still does goes on.
//
// span is the transaction span (nil with tracing off): the driver's calls are its children,
// and it ends when the driver does.
func (e *Engine) drive(ctx context.Context, term uint64, id string, ds *driveState, span trace.Span) {
	if span != nil {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	lg := &lazyLog{e: e, id: id, term: term, span: span}
	var last *fsm.Txn
	stopped := "leadership ended"
	defer func() { endTxnSpan(span, last, stopped) }()
	fenceWait := e.cfg.RetryInitial
	for stepped := false; ctx.Err() == nil; stepped = true {
		txn, ok := e.state.Get(id)
		last = txn
		if !ok || txn.Status.Terminal() {
			if ok && stepped {
				e.observeFinished(txn)
			}
			stopped = ""
			return
		}
		var err error
		switch txn.Status {
		case fsm.StatusPreparing:
			if ds.fresh && ds.reached == nil {
				ds.reached = make([]bool, len(txn.Participants))
			}
			err = e.phaseOne(ctx, lg, txn, ds.reached)
		case fsm.StatusCommitting, fsm.StatusRollingBack:
			err = e.phaseTwo(ctx, lg, txn, ds.reached, ds.early)
			ds.early = nil // counted once: a later pass (after an operator's Retry) reads the FSM
		}
		if errors.Is(err, errFenced) {
			lg.L().Warn("leadership not confirmed: participant calls held back", "wait", fenceWait)
			if !e.pause(ctx, fenceWait) {
				return
			}
			fenceWait = min(2*fenceWait, time.Second)
			continue
		}
		if err != nil {
			if !errors.Is(err, errStop) {
				lg.L().Warn("transaction driver stopped", "error", err)
				stopped = err.Error()
			}
			return
		}
	}
}

// pause waits d, or returns false when ctx ends first.
func (e *Engine) pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// apply proposes cmd and maps errors that mean "stop driving" to errStop. Any other error
// from the log (raft.ErrEnqueueTimeout under load, a transient storage error) leaves this
// node leading, so giving up would strand the transaction, and its participants' locks,
// until the next election: apply proposes again after a capped, growing pause until the
// entry commits or the term ends. That is safe for the commands the driver logs: a repeated
// Decide with the same decision, Complete or Fail changes nothing in the FSM. Refusals by
// the FSM come back in Result.Err, not here.
//
// lg names the transaction (or batch) and the term in its lines.
func (e *Engine) apply(ctx context.Context, lg *lazyLog, cmd fsm.Command) (fsm.Result, error) {
	wait := e.cfg.RetryInitial
	for {
		start := e.cfg.Now()
		res, err := e.log.Apply(ctx, cmd)
		if err == nil {
			e.markConfirmed(start)
			return res, nil
		}
		if ctx.Err() != nil || errors.Is(err, raft.ErrLeadershipLost) || isNotLeader(err) || errors.Is(err, raft.ErrRaftShutdown) {
			return res, fmt.Errorf("%w: %v", errStop, err)
		}
		lg.L().Warn("logging failed; will propose again", "command", fmt.Sprintf("%T", cmd), "error", err, "wait", wait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return res, fmt.Errorf("%w: %v", errStop, err)
		case <-timer.C:
		}
		wait = min(2*wait, e.cfg.RetryMax)
	}
}
