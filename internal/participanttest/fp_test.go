package participanttest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

func send(t *testing.T, c *call.Client, fp *participanttest.FP, p participant.Phase, id string) (participant.Reply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Call(ctx, fp.Endpoints().URL(p), p, participant.Request{TransactionID: id, Deadline: participant.FormatDeadline(time.Now())})
}

func mustReply(t *testing.T, c *call.Client, fp *participanttest.FP, p participant.Phase, id string, want participant.Status) participant.Reply {
	t.Helper()
	r, err := send(t, c, fp, p, id)
	if err != nil || r.Status != want {
		t.Fatalf("%s %s: got %+v, %v; want %s", p, id, r, err, want)
	}
	return r
}

func TestLocksTombstonesAndOracles(t *testing.T) {
	fp := participanttest.New(t)
	c := call.NewClient(call.ClientOptions{})

	mustReply(t, c, fp, participant.PhasePrepare, "t1", participant.ACK)
	mustReply(t, c, fp, participant.PhasePrepare, "t2", participant.ACK)
	if got := fp.Held(); len(got) != 2 || fp.CheckO3() == nil {
		t.Fatalf("held %v after two prepares; O3 must fail", got)
	}
	mustReply(t, c, fp, participant.PhaseCommit, "t1", participant.ACK)
	mustReply(t, c, fp, participant.PhaseRollback, "t2", participant.ACK)
	if err := fp.CheckO3(); err != nil {
		t.Fatal(err)
	}
	// Tombstones: a late Prepare for a finished transaction is refused and takes no lock.
	r := mustReply(t, c, fp, participant.PhasePrepare, "t2", participant.NACK)
	if r.Reason != "already rolled back" {
		t.Fatalf("late prepare reason %q", r.Reason)
	}
	if err := fp.CheckO3(); err != nil {
		t.Fatal(err)
	}
	// C01: Rollback of a transaction never seen is acknowledged as a no-op.
	mustReply(t, c, fp, participant.PhaseRollback, "t3", participant.ACK)
	if calls := fp.Calls("t3"); len(calls) != 1 || calls[0].Outcome != "ACK: unknown txn, nothing to do" || calls[0].IdempotencyKey != "t3:rollback" {
		t.Fatalf("calls for t3: %+v", calls)
	}
	if err := fp.CheckO2(); err != nil {
		t.Fatal(err)
	}
	mustReply(t, c, fp, participant.PhaseCommit, "t2", participant.ACK)
	if err := fp.CheckO2(); err == nil || !strings.Contains(err.Error(), "t2") {
		t.Fatalf("O2 must name t2, got %v", err)
	}
	if fp.Count(participant.PhasePrepare) != 3 || fp.Count(participant.PhaseCommit) != 2 || fp.Count(participant.PhaseRollback) != 2 {
		t.Fatalf("counts: %+v", fp.Log())
	}

	// Without tombstones, the late Prepare holds a lock nobody will release (C02).
	fp.SetTombstones(false)
	mustReply(t, c, fp, participant.PhasePrepare, "t2", participant.ACK)
	if fp.CheckO3() == nil {
		t.Fatal("O3 must fail without tombstones")
	}
}

func TestStatusOverridesAndScript(t *testing.T) {
	fp := participanttest.New(t)
	c := call.NewClient(call.ClientOptions{})
	fp.Set(participant.PhasePrepare, participanttest.NACK("no rooms"))
	fp.FailFirst(participant.PhaseCommit, 3, participanttest.Status(500, "boom"), participanttest.NACK("busy"), participanttest.RetryAfter(429, 2))

	r := mustReply(t, c, fp, participant.PhasePrepare, "x", participant.NACK)
	if r.Reason != "no rooms" || len(fp.Held()) != 0 {
		t.Fatalf("NACK prepare: %+v held %v", r, fp.Held())
	}
	var ce *call.CallError
	if _, err := send(t, c, fp, participant.PhaseCommit, "x"); !errors.As(err, &ce) || ce.StatusCode != 500 || ce.Error() != "HTTP 500: boom" {
		t.Fatalf("first commit: %v", err)
	}
	mustReply(t, c, fp, participant.PhaseCommit, "x", participant.NACK)
	if _, err := send(t, c, fp, participant.PhaseCommit, "x"); !errors.As(err, &ce) || ce.StatusCode != 429 || ce.RetryAfter != 2*time.Second {
		t.Fatalf("third commit: %#v", err)
	}
	mustReply(t, c, fp, participant.PhaseCommit, "x", participant.ACK)

	fp.Set(participant.PhaseRollback, participanttest.Status(200, "<html>hi</html>"))
	if _, err := send(t, c, fp, participant.PhaseRollback, "x"); !errors.As(err, &ce) || ce.Kind != call.KindReply {
		t.Fatalf("HTML rollback: %v", err)
	}
	fp.Set(participant.PhaseRollback, participanttest.Status(200, ""))
	if _, err := send(t, c, fp, participant.PhaseRollback, "x"); err == nil || err.Error() != "invalid reply: empty body" {
		t.Fatalf("empty rollback: %v", err)
	}
}

func TestHoldReleaseAndDrop(t *testing.T) {
	fp := participanttest.New(t)
	c := call.NewClient(call.ClientOptions{})
	fp.Set(participant.PhasePrepare, participanttest.Hang())
	done := make(chan error, 1)
	go func() {
		_, err := send(t, c, fp, participant.PhasePrepare, "h")
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fp.Wait(ctx, func() bool { return fp.Count(participant.PhasePrepare) == 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("held call returned early: %v", err)
	default:
	}
	if len(fp.Held()) != 0 {
		t.Fatal("a held Prepare must not take its lock before it is processed")
	}
	fp.Release(participant.PhasePrepare)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := fp.Held(); len(got) != 1 || got[0] != "h" {
		t.Fatalf("held after release: %v", got)
	}

	// DropBefore: no effect; DropAfter: effect, no reply.
	fp.Set(participant.PhaseCommit, participanttest.Behavior{Drop: participanttest.DropBefore})
	if _, err := send(t, c, fp, participant.PhaseCommit, "h"); err == nil {
		t.Fatal("dropped commit returned no error")
	}
	if len(fp.Held()) != 1 {
		t.Fatal("DropBefore must not process the call")
	}
	fp.Set(participant.PhaseCommit, participanttest.Behavior{Drop: participanttest.DropAfter})
	if _, err := send(t, c, fp, participant.PhaseCommit, "h"); err == nil {
		t.Fatal("dropped commit returned no error")
	}
	if len(fp.Held()) != 0 {
		t.Fatal("DropAfter must process the call")
	}

	// Close releases held calls.
	fp.Set(participant.PhaseRollback, participanttest.Hang())
	go func() {
		_, err := send(t, c, fp, participant.PhaseRollback, "z")
		done <- err
	}()
	if err := fp.Wait(ctx, func() bool { return fp.Count(participant.PhaseRollback) == 1 }); err != nil {
		t.Fatal(err)
	}
	fp.Close()
	<-done
	if out := fp.Calls("z")[0].Outcome; out == "" {
		t.Fatal("held call not finished by Close")
	}
}
