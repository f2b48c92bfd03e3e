package participant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/txcoord/txcoord/participant/protocol"
)

// Defaults of the inquiry options.
const (
	// DefaultInquiryGrace is how long past a prepare deadline the Handler waits for phase
	// two before it asks (WithInquiryGrace). Phase two normally follows the deadline by
	// milliseconds; 2 s also covers a leader election (about 1 s) and a coordinator
	// clock a little ahead of ours.
	DefaultInquiryGrace = 2 * time.Second
	// DefaultInquiryBackoffMax caps the wait between two inquiries about one transaction
	// (WithInquiryBackoff).
	DefaultInquiryBackoffMax = 30 * time.Second
	// DefaultInquiryTimeout bounds one inquiry request, answer included.
	DefaultInquiryTimeout = 10 * time.Second
	// inquiryBackoffInitial is the first wait after an answer that is not a decision.
	inquiryBackoffInitial = 250 * time.Millisecond
	// maxRetryAfter bounds how long a Retry-After header can make the Handler wait, so
	// that a wrong header cannot silence inquiries for hours.
	maxRetryAfter = 5 * time.Minute
	// maxConcurrentInquiries bounds the inquiry requests in flight.
	maxConcurrentInquiries = 8
)

// WithInquiryGrace sets how long past a transaction's prepare deadline the Handler waits
// for a Commit or Rollback before Run starts asking for the outcome (default
// DefaultInquiryGrace; at least 1 ms).
func WithInquiryGrace(d time.Duration) Option {
	return func(h *Handler) { h.inq.grace = max(d, time.Millisecond) }
}

// WithInquiryBackoff sets the first and the longest wait between two inquiries about one
// transaction (defaults 250 ms and DefaultInquiryBackoffMax). Waits grow exponentially
// with ±50 % jitter; a Retry-After header lengthens a wait (up to 5 min), never shortens it.
func WithInquiryBackoff(initial, max time.Duration) Option {
	return func(h *Handler) {
		h.inq.initial, h.inq.max = initial, max
		if h.inq.initial <= 0 {
			h.inq.initial = inquiryBackoffInitial
		}
		if h.inq.max < h.inq.initial {
			h.inq.max = h.inq.initial
		}
	}
}

// WithInquiryClient sets the HTTP client used for inquiries (default: a client with a
// DefaultInquiryTimeout timeout that follows no redirects). Use it for TLS settings.
func WithInquiryClient(c *http.Client) Option { return func(h *Handler) { h.inq.hc = c } }

// WithInquiryToken sends "Authorization: Bearer <token>" with every inquiry, for a cluster
// that has API tokens configured (docs/security.md); empty sends none.
func WithInquiryToken(token string) Option { return func(h *Handler) { h.inq.token = token } }

// PreparedLister is implemented by stores that can list the transactions they hold
// (BoltStore and MemStore do). Handler.Run uses it once when it starts, so that it resumes
// asking about transactions prepared before a restart; with a Store that does not
// implement it, Run only asks about transactions prepared by this Handler.
type PreparedLister interface {
	// Prepared returns every record in StatePrepared.
	Prepared(ctx context.Context) ([]Record, error)
}

// inquirer is the Handler's memory of the transactions it may have to ask about: every
// record it holds in StatePrepared (with an inquiry list and a deadline), until a Commit
// or Rollback (by call or by inquiry) makes it final.
type inquirer struct {
	grace, initial, max time.Duration
	hc                  *http.Client
	token               string

	mu      sync.Mutex
	held    map[string]*held
	running bool
}

// held is one transaction the Handler holds.
type held struct {
	deadline string // as sent back to the coordinator
	urls     []string
	next     time.Time // when to ask next
	node     int       // index into urls of the node to ask next
	busy     bool      // an inquiry is in flight
	bo       *backoff.ExponentialBackOff
}

// inquiryDeadline renders a prepare deadline for the inquiry's ?deadline= parameter:
// RFC 3339 in UTC with milliseconds (protocol.DeadlineFormat), as the coordinator sent it,
// or with every digit when the coordinator sent more precision than that, so the cluster
// never hears of an earlier deadline than the one it gave.
func inquiryDeadline(t time.Time) string {
	if t.Equal(t.Truncate(time.Millisecond)) {
		return protocol.FormatDeadline(t)
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// hold notes that rec (just recorded as prepared) may have to be asked about.
func (h *Handler) hold(rec Record) {
	if rec.State != StatePrepared || len(rec.Inquiry) == 0 || rec.Deadline.IsZero() {
		return
	}
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(h.inq.initial),
		backoff.WithMaxInterval(h.inq.max),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithMaxElapsedTime(0), // a participant asks until it gets a decision
	)
	h.inq.mu.Lock()
	defer h.inq.mu.Unlock()
	if _, ok := h.inq.held[rec.TransactionID]; ok {
		return
	}
	h.inq.held[rec.TransactionID] = &held{deadline: inquiryDeadline(rec.Deadline), urls: rec.Inquiry,
		next: rec.Deadline.Add(h.inq.grace), bo: bo}
}

// release forgets id: it is final here.
func (h *Handler) release(id string) {
	h.inq.mu.Lock()
	delete(h.inq.held, id)
	h.inq.mu.Unlock()
}

// ErrAlreadyRunning is returned by a second concurrent call of Handler.Run.
var ErrAlreadyRunning = errors.New("participant: Handler.Run is already running")

// Run asks the coordinator cluster for the outcome of every transaction this Handler holds
// (voted ACK on) past its prepare deadline plus the grace period (WithInquiryGrace) without
// a Commit or Rollback, and applies each decision exactly as the Commit or Rollback call
// would have been: the same callback, under the same per-transaction lock, with the same
// record transitions, so a decision that arrives both by call and by inquiry runs its
// callback once (docs/participant-protocol.md, "Inquiry"). It asks the nodes of the
// Prepare's "inquiry" list in turn, with capped exponential backoff and jitter
// (WithInquiryBackoff), honouring Retry-After, and keeps asking until it gets committed
// or rolled_back: answers that are not a valid decision are logged and never applied.
// Transactions whose Prepare carried no inquiry list or no deadline are not asked about.
//
// Run blocks until ctx ends, then waits for its inquiries in flight to stop and returns
// ctx.Err(). Start it once, next to the HTTP server: go h.Run(ctx). It returns
// ErrAlreadyRunning if another Run is running. When it starts, it reads the transactions
// the store holds (PreparedLister) so that it resumes after a restart.
func (h *Handler) Run(ctx context.Context) error {
	h.inq.mu.Lock()
	if h.inq.running {
		h.inq.mu.Unlock()
		return ErrAlreadyRunning
	}
	h.inq.running = true
	h.inq.mu.Unlock()
	defer func() {
		h.inq.mu.Lock()
		h.inq.running = false
		h.inq.mu.Unlock()
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	if !h.loadHeld(ctx) {
		return ctx.Err()
	}
	sem := make(chan struct{}, maxConcurrentInquiries)
	tick := time.NewTicker(min(max(h.inq.grace/4, 10*time.Millisecond), 250*time.Millisecond))
	defer tick.Stop()
	for {
		now := h.now()
		h.inq.mu.Lock()
		for id, t := range h.inq.held {
			if t.busy || now.Before(t.next) {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // all slots busy: the next tick
			}
			t.busy = true
			wg.Add(1)
			go func(id string, t *held) {
				defer wg.Done()
				defer func() { <-sem }()
				h.inquire(ctx, id, t)
			}(id, t)
		}
		h.inq.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// loadHeld reads the prepared records of the store, retrying a store error with backoff
// until ctx ends (it then returns false).
func (h *Handler) loadHeld(ctx context.Context) bool {
	l, ok := h.store.(PreparedLister)
	if !ok {
		h.log.Warn("participant: the store cannot list its records; transactions prepared before this Handler started are not asked about")
		return true
	}
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(h.inq.max)), ctx)
	var recs []Record
	err := backoff.Retry(func() error {
		var err error
		if recs, err = l.Prepared(ctx); err != nil {
			h.log.Error("participant: listing prepared transactions failed; retrying", "err", err)
		}
		return err
	}, bo)
	if err != nil {
		return false
	}
	for _, rec := range recs {
		h.hold(rec)
	}
	if len(recs) > 0 {
		h.log.Info("participant: holding prepared transactions from before this start; asking for their outcome past deadline", "count", len(recs))
	}
	return true
}

// inquire makes one inquiry about id and applies a decision, or schedules the next one.
func (h *Handler) inquire(ctx context.Context, id string, t *held) {
	log := h.log.With("txn", id, "phase", "inquiry")
	wait, done := h.inquireOnce(ctx, log, id, t)
	h.inq.mu.Lock()
	defer h.inq.mu.Unlock()
	t.busy = false
	if done {
		if h.inq.held[id] == t {
			delete(h.inq.held, id)
		}
		return
	}
	t.next = h.now().Add(max(t.bo.NextBackOff(), wait))
}

// inquireOnce asks one node about id. It returns done when id is final here (by this answer
// or by a call meanwhile), else at least how long to wait before asking again (Retry-After).
func (h *Handler) inquireOnce(ctx context.Context, log *slog.Logger, id string, t *held) (wait time.Duration, done bool) {
	rec, found, err := h.store.Get(ctx, id)
	if err != nil {
		log.Warn("participant: reading the record before an inquiry failed; asking later", "err", err)
		return 0, false
	}
	if !found || rec.State != StatePrepared {
		return 0, true // decided by a call meanwhile
	}
	base := t.urls[t.node%len(t.urls)]
	o, retryAfter, err := h.ask(ctx, base, id, t.deadline)
	if err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		t.node++ // ask the next node of the list
		lvl := slog.LevelWarn
		if errors.Is(err, errNoOutcome) {
			lvl = slog.LevelError
		}
		log.Log(ctx, lvl, "participant: inquiry failed; asking again later", "node", base, "err", err)
		return retryAfter, false
	}
	if !o.Final() {
		log.Debug("participant: inquiry answered pending", "node", base, "retry_after", retryAfter)
		return retryAfter, false
	}
	p := PhaseRollback
	if o.Outcome == protocol.OutcomeCommitted {
		p = PhaseCommit
	}
	log.Info("participant: applying the outcome the cluster gave", "node", base, "outcome", o.Outcome)
	reply, err := h.Do(ctx, p, Request{TransactionID: id})
	switch {
	case err != nil:
		log.Warn("participant: applying the inquiry's outcome failed; asking again later", "outcome", o.Outcome, "err", err)
		return 0, false
	case reply.Status == NACK:
		// Do logged the conflict; the record is final, nothing more to ask.
		return 0, true
	}
	return 0, true
}

// errNoOutcome marks a 404 answer: the cluster no longer keeps the outcome, which an
// operator must settle (the participant keeps asking, and logs it at error level).
var errNoOutcome = errors.New("the cluster keeps no outcome for this transaction (404); an operator must settle it")

// ask sends one inquiry to base. It returns the answer, or an error for anything that is not
// a valid 200 answer about id, with the Retry-After of the answer when it carried one.
func (h *Handler) ask(ctx context.Context, base, id, deadline string) (protocol.Outcome, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, protocol.InquiryURL(base, id, deadline), nil)
	if err != nil {
		return protocol.Outcome{}, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if h.inq.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.inq.token)
	}
	resp, err := h.inq.hc.Do(req)
	if err != nil {
		return protocol.Outcome{}, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxReplyBytes+1))
	if err != nil {
		return protocol.Outcome{}, 0, fmt.Errorf("reading the answer: %w", err)
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), h.now())
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("HTTP %d%s", resp.StatusCode, snippet(raw))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %v", errNoOutcome, err)
		}
		return protocol.Outcome{}, retryAfter, err
	}
	o, err := protocol.ParseOutcome(raw, id)
	if err != nil {
		return protocol.Outcome{}, retryAfter, err
	}
	return o, retryAfter, nil
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most
// maxRetryAfter; 0 when absent or unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		d = time.Duration(min(secs, int(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil && t.After(now) {
		d = t.Sub(now)
	}
	return min(d, maxRetryAfter)
}

// snippet returns ": <first 120 bytes of body>" for log messages, or "".
func snippet(raw []byte) string {
	s := string(bytes.TrimSpace(raw))
	if s == "" {
		return ""
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return ": " + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func defaultInquiryClient() *http.Client {
	return &http.Client{
		Timeout: DefaultInquiryTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // an answer is the node's own, never a redirect's
		},
	}
}
