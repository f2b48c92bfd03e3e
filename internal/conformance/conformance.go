// Package conformance checks a live participant against txcoord's participant protocol
// (docs/participant-protocol.md), whatever its language: it sends the calls a coordinator
// may send, in the orders a coordinator may send them, each on a fresh transaction id, and
// reports what the participant answered next to what the protocol requires.
//
// The checks (Result.Name):
//   - reply-format: a Prepare is answered 200 with a JSON body whose "status" is ACK or NACK
//     (a NACK with a reason);
//   - repeated-prepare: a second Prepare of the same transaction gets the same vote;
//   - commit-after-prepare, repeated-commit: Commit of an ACKed Prepare is ACKed, and so is a
//     repeat (without effect);
//   - rollback-after-prepare, repeated-rollback: the same for Rollback;
//   - rollback-unknown: Rollback of a transaction never prepared is ACKed;
//   - tombstone: a Prepare arriving after that Rollback is refused with NACK (case C02);
//   - commit-unprepared: Commit of a transaction never prepared is not ACKed (NACK or an
//     error);
//   - inquires: a participant that ACKed a Prepare (deadline InquiryDeadline ahead, with the
//     kit's own inquiry URL in its "inquiry" list) and gets no decision asks
//     GET {kit}/v1/transactions/{id}/outcome?deadline=<the Prepare's deadline> within
//     InquiryWithin past the deadline (docs/participant-protocol.md, "Inquiry"); the kit
//     answers pending (Retry-After: 1);
//   - inquiry-applied: it asks again after pending, within InquiryWithin, and applies the
//     rolled_back the kit then answers: a Prepare of it is refused afterwards, as after a
//     Rollback.
//
// A participant that does not inquire is safe in the default mode and not fit for fast
// mode, so the two inquiry checks only warn (Result.Warning) unless Config.FastMode is set;
// "inquires" then says "does not inquire (required for fast mode)".
//
// Checks that need an ACKed Prepare are skipped when the participant votes NACK (it may be
// out of stock); run it against a participant that can say yes. Every transaction id starts
// with "conformance-", so a participant can tell these calls apart.
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// Config says which participant to check and how.
type Config struct {
	// Endpoints are the participant's URLs (participant.Derive from a prepare URL).
	Endpoints participant.Endpoints
	// HTTPClient sends the calls [a client that never follows redirects].
	HTTPClient *http.Client
	// CallTimeout bounds each call [10 s]; the deadline sent is this far ahead too.
	CallTimeout time.Duration
	// InquiryListen is where the kit listens for the participant's inquiries
	// ["127.0.0.1:0": a free loopback port].
	InquiryListen string
	// InquiryURL is the base URL the kit sends in the Prepare's "inquiry" list
	// ["http://" + the address InquiryListen got]; set it when the participant reaches the
	// kit by another address (a container).
	InquiryURL string
	// InquiryDeadline is how far ahead the deadline of the inquiry check's Prepare is [1 s].
	InquiryDeadline time.Duration
	// InquiryWithin bounds how long past that deadline the kit waits for the first inquiry,
	// and then for the next one after its pending answer [10 s: the Go library asks 2 s past
	// the deadline, and again 1 s after pending]. Negative skips the inquiry checks.
	InquiryWithin time.Duration
	// FastMode makes the inquiry checks failures instead of warnings: the participant is
	// meant for transactions run in fast mode, which rely on its inquiries.
	FastMode bool
}

// Result is one check.
type Result struct {
	Name    string // see the package doc
	Want    string // what the protocol requires
	Saw     string // what the participant did, e.g. `200 {"status":"ACK"}`
	Pass    bool
	Skipped bool // not run: an earlier call did not set up what it needs (Saw says why)
	// Warning: not passed, but not required in the mode checked (the inquiry checks
	// without Config.FastMode); it does not fail the run.
	Warning bool
}

// Passed reports whether no check failed (skipped ones and warnings do not fail).
func Passed(rs []Result) bool {
	for _, r := range rs {
		if !r.Pass && !r.Skipped && !r.Warning {
			return false
		}
	}
	return true
}

// answer is one call's outcome.
type answer struct {
	code   int
	body   string
	reply  participant.Reply
	valid  bool // 200 and a JSON body with status ACK or NACK
	netErr error
}

func (a answer) String() string {
	if a.netErr != nil {
		return "error: " + a.netErr.Error()
	}
	b := strings.TrimSpace(a.body)
	if len(b) > 120 {
		b = b[:120] + "..."
	}
	return fmt.Sprintf("%d %s", a.code, b)
}

func (a answer) ack() bool  { return a.valid && a.reply.Status == participant.ACK }
func (a answer) nack() bool { return a.valid && a.reply.Status == participant.NACK }

type checker struct {
	cfg Config
	hc  *http.Client
}

// Run runs every check against cfg.Endpoints and returns the results in the order of the
// package doc. It returns an error only for a bad Config; a participant that cannot be
// reached fails the checks.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.Endpoints.Validate(); err != nil {
		return nil, err
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.InquiryDeadline <= 0 {
		cfg.InquiryDeadline = time.Second
	}
	if cfg.InquiryWithin == 0 {
		cfg.InquiryWithin = DefaultInquiryWithin
	}
	if cfg.InquiryListen == "" {
		cfg.InquiryListen = "127.0.0.1:0"
	}
	var inq *inquiryServer
	if cfg.InquiryWithin > 0 {
		var err error
		if inq, err = startInquiryServer(cfg.InquiryListen); err != nil {
			return nil, err
		}
		defer inq.close()
		if cfg.InquiryURL == "" {
			cfg.InquiryURL = "http://" + inq.addr
		}
		if _, err := protocol.ValidateURL(cfg.InquiryURL); err != nil {
			return nil, fmt.Errorf("inquiry URL: %w", err)
		}
	}
	ck := &checker{cfg: cfg, hc: cfg.HTTPClient}
	if ck.hc == nil {
		ck.hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var rs []Result
	add := func(name, want string, a answer, pass bool) {
		rs = append(rs, Result{Name: name, Want: want, Saw: a.String(), Pass: pass})
	}
	skip := func(name, want, why string) {
		rs = append(rs, Result{Name: name, Want: want, Saw: why, Skipped: true})
	}

	// A prepared transaction, then its commit.
	t1 := newID()
	p1 := ck.call(ctx, participant.PhasePrepare, t1)
	add("reply-format", `200 {"status":"ACK"} or {"status":"NACK","reason":...}`, p1, p1.valid && (p1.reply.Status == participant.ACK || p1.reply.Reason != ""))
	p1b := ck.call(ctx, participant.PhasePrepare, t1)
	add("repeated-prepare", "the same vote as the first Prepare ("+string(p1.reply.Status)+")", p1b, p1.valid && p1b.valid && p1b.reply.Status == p1.reply.Status)
	// twice sends phase two to a transaction the participant prepared, then once more:
	// both must be ACKed, the second without doing anything again.
	twice := func(first, repeated string, phase participant.Phase, id string, prepare answer) {
		if !prepare.ack() {
			why := "the Prepare was not ACKed: " + prepare.String()
			skip(first, "ACK", why)
			skip(repeated, "ACK", why)
			return
		}
		a := ck.call(ctx, phase, id)
		add(first, "ACK", a, a.ack())
		b := ck.call(ctx, phase, id)
		add(repeated, "ACK (without doing anything again)", b, b.ack())
	}
	twice("commit-after-prepare", "repeated-commit", participant.PhaseCommit, t1, p1)

	// A prepared transaction, then its rollback.
	t2 := newID()
	twice("rollback-after-prepare", "repeated-rollback", participant.PhaseRollback, t2, ck.call(ctx, participant.PhasePrepare, t2))

	// Rollback before Prepare (the Prepare was slow): tombstone.
	t3 := newID()
	r3 := ck.call(ctx, participant.PhaseRollback, t3)
	add("rollback-unknown", "ACK (and remember a tombstone)", r3, r3.ack())
	p3 := ck.call(ctx, participant.PhasePrepare, t3)
	add("tombstone", "NACK: a Prepare after the transaction's Rollback is refused", p3, p3.nack())
	if p3.ack() {
		// Release what the late Prepare holds, as the coordinator's repeated Rollback would.
		ck.call(ctx, participant.PhaseRollback, t3)
	}

	// Commit of a transaction never prepared.
	t4 := newID()
	c4 := ck.call(ctx, participant.PhaseCommit, t4)
	add("commit-unprepared", "not ACK (NACK or an error)", c4, !c4.ack())

	if inq != nil {
		rs = append(rs, ck.inquiry(ctx, inq)...)
	}
	return rs, nil
}

func newID() string { return "conformance-" + strings.ToLower(rand.Text()) }

// call sends one call as a coordinator would: the JSON body, Idempotency-Key
// "<id>:<phase>", and the Txcoord-Node and Txcoord-Term headers.
func (ck *checker) call(ctx context.Context, p participant.Phase, id string) answer {
	return ck.send(ctx, p, participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now().Add(ck.cfg.CallTimeout))})
}

// send sends req as phase p, as call does.
func (ck *checker) send(ctx context.Context, p participant.Phase, req participant.Request) answer {
	id := req.TransactionID
	ctx, cancel := context.WithTimeout(ctx, ck.cfg.CallTimeout)
	defer cancel()
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, ck.cfg.Endpoints.URL(p), bytes.NewReader(body))
	if err != nil {
		return answer{netErr: err}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Txcoord-Node", "participant-check")
	hreq.Header.Set("Txcoord-Term", "0")
	hreq.Header.Set(participant.IdempotencyKeyHeader, id+":"+string(p))
	resp, err := ck.hc.Do(hreq)
	if err != nil {
		return answer{netErr: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxReplyBytes+1))
	if err != nil {
		return answer{netErr: err}
	}
	a := answer{code: resp.StatusCode, body: string(raw)}
	if resp.StatusCode == http.StatusOK && len(raw) <= protocol.MaxReplyBytes && json.Unmarshal(raw, &a.reply) == nil {
		a.valid = a.reply.Status == participant.ACK || a.reply.Status == participant.NACK
	}
	return a
}
