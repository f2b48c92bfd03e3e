package httpapi

// Reads (issue 13). Every GET of transactions names a consistency level:
//
//	default       never contradicts an answer a client was given: the leader serves from its
//	              FSM and what its engine has settled (phase two acknowledged by every
//	              participant, completion entry on its way); a follower serves a record that
//	              is final in its own FSM (committed or rolled_back: no later state exists)
//	              and forwards everything else, 404 included, to the leader.
//	stale         this node's FSM as it is, fastest; the answer says how far it may lag. A
//	              node that has not caught up since it started (applied the leader-confirmed
//	              commit index) forwards to the leader instead, or answers 503.
//	linearizable  the leader confirms its leadership with a quorum (read index) and has
//	              applied that index before it reads; followers forward.
//
// Every answer says which level served it, by which node, at which applied index (the
// "read" member and the X-Txcoord-* headers).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

// The consistency levels of GET /v1/transactions and /v1/transactions/{id}
// (?consistency=).
const (
	LevelDefault      = "default"
	LevelStale        = "stale"
	LevelLinearizable = "linearizable"
)

// Headers on every read answer.
const (
	// HeaderConsistency names the level that served the read.
	HeaderConsistency = "X-Txcoord-Consistency"
	// HeaderServedBy is the id of the node whose state answered.
	HeaderServedBy = "X-Txcoord-Served-By"
	// HeaderAppliedIndex is that node's applied Raft index when it read.
	HeaderAppliedIndex = "X-Txcoord-Applied-Index"
)

// readIndexPath is where a leader answers its read index to the other nodes.
const readIndexPath = "/v1/cluster/read-index"

// ReadInfo says how a read was served: the "read" member of a transaction or a page
// (api.ReadInfo).
type ReadInfo = api.ReadInfo

// ReadIndexAnswer is GET /v1/cluster/read-index (api.ReadIndexAnswer).
type ReadIndexAnswer = api.ReadIndexAnswer

// progressNode is implemented by *cluster.Node: what reads need of Raft, cheaply.
type progressNode interface {
	Progress() cluster.Progress
	ReadIndex(ctx context.Context) (uint64, error)
	AppliedIndex() uint64
}

// appliedIndex is this node's applied Raft index: Raft's own (which counts the no-op and
// barrier entries the FSM never sees) when the node reports it, else the FSM's.
func (s *Server) appliedIndex() uint64 {
	if pn, ok := s.node.(progressNode); ok {
		return pn.AppliedIndex()
	}
	return s.state.AppliedIndex()
}

// waitApplied waits until this node has applied index. Raft's applied index has no
// notification, so it is polled every millisecond (rqlite's WaitForAppliedIndex polls the
// same way); ctx bounds the wait.
func (s *Server) waitApplied(ctx context.Context, index uint64) error {
	if _, ok := s.node.(progressNode); !ok {
		return s.state.WaitApplied(ctx, index)
	}
	if s.appliedIndex() >= index {
		return nil
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if s.appliedIndex() >= index {
			return nil
		}
	}
}

func parseLevel(c echo.Context) (string, *apiError) {
	switch v := c.QueryParam("consistency"); v {
	case "", LevelDefault:
		return LevelDefault, nil
	case LevelStale, LevelLinearizable:
		return v, nil
	default:
		return "", badRequest(fmt.Sprintf(`"consistency" must be default, stale or linearizable, not %q`, v))
	}
}

// checkParams answers 400 naming the first query parameter that is not in allowed, or that
// is given more than once.
func checkParams(c echo.Context, allowed ...string) *apiError {
	for name, vs := range c.QueryParams() {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return badRequest(fmt.Sprintf("unknown query parameter %q (this route takes: %v)", name, allowed))
		}
		if len(vs) > 1 {
			return badRequest(fmt.Sprintf("query parameter %q given more than once", name))
		}
	}
	return nil
}

// progress returns this node's Raft progress; without a progressNode (tests' fakes), what
// Status says.
func (s *Server) progress() cluster.Progress {
	if pn, ok := s.node.(progressNode); ok {
		return pn.Progress()
	}
	st := s.node.Status()
	return cluster.Progress{Leader: s.node.LeaderReady(), CommitIndex: st.CommitIndex}
}

// readInfo describes a read this node serves at level.
func (s *Server) readInfo(level string) *ReadInfo {
	p := s.progress()
	ri := &ReadInfo{Consistency: level, NodeID: s.node.ID(), Role: "follower", AppliedIndex: s.appliedIndex()}
	if p.Leader {
		ri.Role = "leader"
		return ri
	}
	ri.CommitIndex = max(p.CommitIndex, s.catch.known.Load())
	lc := int64(-1)
	if !p.LastContact.IsZero() {
		lc = time.Since(p.LastContact).Milliseconds()
	}
	ri.LastContactMs = &lc
	return ri
}

func setReadHeaders(c echo.Context, ri *ReadInfo) {
	h := c.Response().Header()
	h.Set(HeaderConsistency, ri.Consistency)
	h.Set(HeaderServedBy, ri.NodeID)
	h.Set(HeaderAppliedIndex, strconv.FormatUint(ri.AppliedIndex, 10))
}

// readPlan is how this node serves a read at level.
type readPlan int

const (
	planLocal   readPlan = iota // this node's FSM (with the engine's settled outcomes on the leader)
	planForward                 // ask the leader
)

// plan decides where a read at level is served. For a linearizable read on the leader it
// first confirms leadership and waits until the FSM holds the read index.
func (s *Server) plan(ctx context.Context, level string) (readPlan, *apiError) {
	leader := s.node.LeaderReady()
	switch level {
	case LevelStale:
		if leader || s.caughtUp() {
			return planLocal, nil
		}
		return planForward, nil
	case LevelLinearizable:
		if !leader {
			return planForward, nil
		}
		pn, ok := s.node.(progressNode)
		if !ok {
			return planLocal, nil
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		idx, err := pn.ReadIndex(rctx)
		if err != nil {
			return planForward, nil // leadership just moved: the new leader answers
		}
		if err := s.waitApplied(rctx, idx); err != nil {
			return 0, &apiError{Code: codeUnavailable, retryAfter: "1", Detail: "applying the read index: " + err.Error()}
		}
		return planLocal, nil
	default:
		if leader {
			return planLocal, nil
		}
		return planForward, nil
	}
}

// forwardRead passes a GET to the leader, as it came (path and query), and copies the
// answer back. It retries briefly while no leader is known; a read a node forwarded is
// never forwarded again (503 no_leader instead).
func (s *Server) forwardRead(c echo.Context) error {
	r := c.Request()
	if by := r.Header.Get(forwardedHeader); by != "" {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "read forwarded by " + by + " but this node does not lead or has not caught up"})
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadForwardWait)
	defer cancel()
	delay := 20 * time.Millisecond
	var last string
	for {
		id, addr := s.node.Leader()
		switch {
		case id == s.node.ID():
			last = "this node was just elected and is still establishing leadership"
		case addr == "":
			last = "no leader is known (election in progress or no quorum)"
		default:
			resp, err := s.fwd.get(ctx, baseURL(addr)+r.URL.RequestURI())
			if err == nil && !isNoLeader(resp) {
				return copyResponse(c, resp)
			}
			if err != nil {
				last = "forwarding the read to leader " + addr + ": " + err.Error()
			} else {
				last = "leader " + addr + " answered no_leader"
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: last})
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func isNoLeader(r *fwdResponse) bool {
	if r.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	var ae apiError
	return json.Unmarshal(r.body, &ae) == nil && ae.Code == codeNoLeader
}

// settledOverlay returns the view of t as the client was told it: on the leader, a
// transaction in phase two whose participants all acknowledged (the engine settled it) is
// committed or rolled_back although its completion entry is not applied yet.
func (s *Server) settledOverlay(t *fsm.Txn) (TransactionView, bool) {
	if t.Status != fsm.StatusCommitting && t.Status != fsm.StatusRollingBack {
		return TransactionView{}, false
	}
	st, ok := s.sub.(Settler)
	if !ok {
		return TransactionView{}, false
	}
	ch := st.Settled(t.ID)
	if ch == nil || !isClosed(ch) {
		return TransactionView{}, false
	}
	v := viewOf(t)
	v.Status = settledOutcome(t).Status
	for i := range v.Participants {
		v.Participants[i].Acknowledged = true
		v.Participants[i].LastError = ""
	}
	v.Errors = t.VoteErrors()
	if v.Errors == nil {
		v.Errors = []string{}
	}
	return v, true
}

// leaderView is the view of id the leader serves: its FSM with the settled outcomes. The
// FSM is read again when the engine no longer drives id, since the completion may have
// been applied in between.
func (s *Server) leaderView(t *fsm.Txn) TransactionView {
	if v, ok := s.settledOverlay(t); ok {
		return v
	}
	if !t.Status.Terminal() {
		if t2, ok := s.state.Get(t.ID); ok {
			if v, ok := s.settledOverlay(t2); ok {
				return v
			}
			t = t2
		}
	}
	return s.liveView(t) // phase-two acknowledgements as the engine knows them now
}

// catchUp tracks whether this node has caught up since it started: applied a commit index
// the leader confirmed after the start. Until then stale reads are forwarded.
type catchUp struct {
	done  atomic.Bool
	known atomic.Uint64 // highest leader-confirmed commit index learnt
	mu    sync.Mutex    // one leader query at a time
}

func (s *Server) caughtUp() bool {
	if s.catch.done.Load() {
		return true
	}
	if s.node.LeaderReady() {
		// Establishing leadership ran a barrier: the FSM holds all that was committed.
		s.catch.done.Store(true)
		return true
	}
	return false
}

// CaughtUp reports whether this node has, since it started, applied everything the leader
// had committed when this node asked it (or established leadership itself). Until then it
// serves no stale read.
func (s *Server) CaughtUp() bool { return s.caughtUp() }

// checkCaughtUp asks the leader for its read index and waits up to wait for this node to
// apply it. It returns the index learnt (0 when none) and whether this node has applied it.
func (s *Server) checkCaughtUp(ctx context.Context, wait time.Duration) (uint64, error) {
	if s.node.LeaderReady() {
		s.catch.done.Store(true)
		return s.appliedIndex(), nil
	}
	idx, err := s.leaderReadIndex(ctx)
	if errors.Is(err, errNoReadIndex) {
		// The leader runs a build from before read indexes (a rolling upgrade is under way):
		// fall back to what those builds promised, this node's own view of the commit
		// index, which may lag right after a restart (docs/reads.md).
		if idx = s.node.Status().CommitIndex; idx == 0 {
			return 0, errors.New("no commit index known yet")
		}
		err = nil
	}
	if err != nil {
		return 0, err
	}
	for {
		old := s.catch.known.Load()
		if idx <= old || s.catch.known.CompareAndSwap(old, idx) {
			break
		}
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.waitApplied(wctx, idx); err != nil {
		return idx, fmt.Errorf("applied index %d is behind the leader's commit index %d", s.appliedIndex(), idx)
	}
	s.catch.done.Store(true)
	return idx, nil
}

// errNoReadIndex: the leader's build has no read-index route (it answers 404).
var errNoReadIndex = errors.New("the leader runs a build without read indexes")

// leaderReadIndex asks the leader (over its HTTP API, with the cluster token when one is
// configured) for its read index.
func (s *Server) leaderReadIndex(ctx context.Context) (uint64, error) {
	id, addr := s.node.Leader()
	if id == "" || addr == "" {
		return 0, errors.New("no leader is known")
	}
	if id == s.node.ID() {
		return 0, errors.New("this node is still establishing leadership")
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.fwd.getPlain(rctx, baseURL(addr)+readIndexPath)
	if err != nil {
		return 0, fmt.Errorf("asking leader %s for its commit index: %w", id, err)
	}
	if resp.StatusCode == http.StatusNotFound { // this build never answers 404 here: an earlier one
		return 0, fmt.Errorf("%w: leader %s", errNoReadIndex, id)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("leader %s answered %d to the read-index request: %s", id, resp.StatusCode, resp.body)
	}
	var a ReadIndexAnswer
	if err := json.Unmarshal(resp.body, &a); err != nil {
		return 0, fmt.Errorf("leader %s: read index: %w", id, err)
	}
	return a.CommitIndex, nil
}

// RunCatchUp asks the leader for its read index until this node has applied one (or leads),
// then returns; it also returns when ctx ends. server.Start runs it once per node.
func (s *Server) RunCatchUp(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !s.caughtUp() {
		if _, err := s.checkCaughtUp(ctx, 2*time.Second); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// getReadIndex serves GET /v1/cluster/read-index on the leader.
func (s *Server) getReadIndex(c echo.Context) error {
	pn, ok := s.node.(progressNode)
	if !ok || !s.node.LeaderReady() {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: "node " + s.node.ID() + " does not lead"})
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	idx, err := pn.ReadIndex(ctx)
	if err != nil {
		return writeError(c, &apiError{Code: codeNoLeader, retryAfter: "1", Detail: err.Error()})
	}
	return c.JSON(http.StatusOK, ReadIndexAnswer{LeaderID: s.node.ID(), CommitIndex: idx})
}
