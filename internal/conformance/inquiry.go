package conformance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// DefaultInquiryWithin is Config.InquiryWithin's default: the documented bound on how long
// past its deadline a participant may take to ask about a transaction it holds, and to ask
// again after a pending answer.
const DefaultInquiryWithin = 10 * time.Second

// NotInquiring is what the "inquires" check reports for a participant that never asked.
const NotInquiring = "does not inquire (required for fast mode)"

// inquiryServer is the kit acting as the coordinator cluster's inquiry route: it answers
// the first inquiry about the check's transaction pending and every later one rolled_back,
// and any other id 404.
type inquiryServer struct {
	addr string
	srv  *http.Server

	mu     sync.Mutex
	id     string // the transaction the check runs
	asked  []asked
	signal chan struct{} // closed and replaced on every inquiry about id
}

type asked struct {
	at       time.Time
	deadline string
	answer   string
}

func startInquiryServer(listen string) (*inquiryServer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("inquiry listener: %w", err)
	}
	s := &inquiryServer{addr: ln.Addr().String(), signal: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/transactions/{id}/outcome", s.outcome)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *inquiryServer) close() { _ = s.srv.Close() }

func (s *inquiryServer) outcome(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	w.Header().Set("Content-Type", "application/json")
	s.mu.Lock()
	if id == "" || id != s.id {
		s.mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"not_found","detail":"the conformance kit knows no transaction %q"}`+"\n", id)
		return
	}
	out := protocol.OutcomeRolledBack
	if len(s.asked) == 0 {
		out = protocol.OutcomePending
		w.Header().Set("Retry-After", "1")
	}
	s.asked = append(s.asked, asked{at: time.Now(), deadline: r.URL.Query().Get("deadline"), answer: out})
	close(s.signal)
	s.signal = make(chan struct{})
	s.mu.Unlock()
	fmt.Fprintf(w, `{"transactionId":%q,"outcome":%q}`+"\n", id, out)
}

// waitAsked waits until the participant has asked n times about the check's transaction, or
// until by; it returns the inquiries so far.
func (s *inquiryServer) waitAsked(ctx context.Context, n int, by time.Time) []asked {
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	for {
		s.mu.Lock()
		got, sig := append([]asked(nil), s.asked...), s.signal
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-sig:
		case <-t.C:
			return got
		case <-ctx.Done():
			return got
		}
	}
}

// inquiry runs the checks "inquires" and "inquiry-applied".
func (ck *checker) inquiry(ctx context.Context, s *inquiryServer) []Result {
	const (
		nameAsks    = "inquires"
		nameApplied = "inquiry-applied"
	)
	within := ck.cfg.InquiryWithin
	wantAsks := fmt.Sprintf("GET {inquiry URL}/v1/transactions/{id}/outcome?deadline=<the Prepare's> within %v past the deadline of an ACKed Prepare that gets no decision", within)
	wantApplied := fmt.Sprintf("asks again within %v after pending, and applies rolled_back: a Prepare of it is then refused (NACK)", within)
	result := func(name, want, saw string, pass bool) Result {
		return Result{Name: name, Want: want, Saw: saw, Pass: pass, Warning: !pass && !ck.cfg.FastMode}
	}
	id := newID()
	s.mu.Lock()
	s.id = id
	s.mu.Unlock()
	deadline := time.Now().Add(ck.cfg.InquiryDeadline)
	dl := participant.FormatDeadline(deadline)
	// The call itself may take CallTimeout; only its deadline is short.
	p := ck.send(ctx, participant.PhasePrepare, participant.Request{TransactionID: id, Deadline: dl, Inquiry: []string{ck.cfg.InquiryURL}})
	if !p.ack() {
		why := "the Prepare was not ACKed: " + p.String()
		return []Result{{Name: nameAsks, Want: wantAsks, Saw: why, Skipped: true}, {Name: nameApplied, Want: wantApplied, Saw: why, Skipped: true}}
	}
	// release sends the Rollback the kit, as coordinator, owes a participant it left holding.
	release := func() { ck.call(ctx, participant.PhaseRollback, id) }

	got := s.waitAsked(ctx, 1, deadline.Add(within))
	if len(got) == 0 {
		release()
		return []Result{result(nameAsks, wantAsks, NotInquiring+fmt.Sprintf(": no inquiry within %v past the deadline", within), false),
			{Name: nameApplied, Want: wantApplied, Saw: "it did not inquire", Skipped: true}}
	}
	first := got[0]
	sawAsks := fmt.Sprintf("asked %v after the deadline, deadline=%q", first.at.Sub(deadline).Round(time.Millisecond), first.deadline)
	asksOK := true
	if first.deadline != dl {
		asksOK = false
		sawAsks += fmt.Sprintf("; the Prepare's deadline was %q (an earlier one can get a transaction presumed aborted)", dl)
	}
	rs := []Result{result(nameAsks, wantAsks, sawAsks, asksOK)}

	got = s.waitAsked(ctx, 2, first.at.Add(within))
	if len(got) < 2 {
		release()
		return append(rs, result(nameApplied, wantApplied, fmt.Sprintf("asked once, answered pending, then not again within %v", within), false))
	}
	// The participant may apply the answer a moment after reading it: poll with Prepare.
	var last answer
	for by := time.Now().Add(within); ; {
		last = ck.call(ctx, participant.PhasePrepare, id)
		if last.nack() || !time.Now().Before(by) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if !last.nack() {
		release()
		return append(rs, result(nameApplied, wantApplied, "after the rolled_back answer, a Prepare still got "+last.String(), false))
	}
	return append(rs, result(nameApplied, wantApplied, fmt.Sprintf("asked %d times; a Prepare then got %s", len(got), strings.TrimSpace(last.String())), true))
}
