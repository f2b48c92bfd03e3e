package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
	"github.com/txcoord/txcoord/version"
)

// level3Probe makes n3 look like a build of feature level 3 (fast mode, no traced Begin) to
// its peers while level3 is set; n3 itself reaches nobody meanwhile, so that it never
// raises the level as leader (as in oldBuildProbe).
func level3Probe(i int, level3 *atomic.Bool) func(ctx context.Context, addr string, timeout time.Duration) (cluster.PeerInfo, error) {
	return func(ctx context.Context, addr string, timeout time.Duration) (cluster.PeerInfo, error) {
		if i == 2 && level3.Load() {
			return cluster.PeerInfo{}, errors.New("n3 pretends to be a level-3 build")
		}
		pi, err := cluster.Probe(ctx, addr, timeout)
		if err == nil && pi.ID == "n3" && level3.Load() {
			pi.FeatureLevel = 3
		}
		return pi, err
	}
}

// TestTracedBeginWaitsForLevel4 (issue 16): while one server runs a build of level 3, the
// cluster enables level 3 and not 4, so no node ever receives a traced Begin (type 16,
// which a level-3 build could not apply): a traced leader logs its Begin untraced (no node's
// record has a trace context), still traces the transaction itself, and a type-16 entry
// proposed anyway is refused before it is written, naming that server. Once the server is
// "upgraded" the level rises to 4 and the next Begin carries its trace context on every node.
func TestTracedBeginWaitsForLevel4(t *testing.T) {
	if version.FeatureLevel != 4 || fsm.RequiredLevel(fsm.CmdBeginTraced) != 4 {
		t.Fatalf("this build: level %d, traced Begin needs %d", version.FeatureLevel, fsm.RequiredLevel(fsm.CmdBeginTraced))
	}
	var level3 atomic.Bool
	level3.Store(true)
	sr := tracetest.NewSpanRecorder()
	tr := tracing.New(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	_, urls := participants(t)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.ProbeInterval = 50 * time.Millisecond
		cfg.Cluster.Probe = level3Probe(i, &level3)
		cfg.Tracing = tr
	}})
	levels := func(want uint32) error {
		for i := 0; i < c.Len(); i++ {
			if lv := c.Node(i).Node.FSM.FeatureLevel(); lv != want {
				return fmt.Errorf("%s at level %d, want %d", c.Node(i).Node.ID(), lv, want)
			}
		}
		return nil
	}
	if err := c.Eventually(60*time.Second, func() error { return levels(3) }); err != nil {
		t.Fatalf("level 3 (every server's) not enabled: %v", err)
	}
	// Every node must hold id with the given trace context ("" or not).
	recordsEverywhere := func(id string, traced bool) error {
		for i := 0; i < c.Len(); i++ {
			rec, ok := c.Node(i).Node.FSM.Get(id)
			if !ok {
				return fmt.Errorf("%s has no record of %s", c.Node(i).Node.ID(), id)
			}
			if (rec.Trace != "") != traced {
				return fmt.Errorf("%s: record of %s has trace context %q, want traced %v", c.Node(i).Node.ID(), id, rec.Trace, traced)
			}
		}
		return nil
	}

	leader := c.WaitLeader(30 * time.Second)
	code, out := post(t, c.Node(leader).URL(), urls, 5000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("POST at level 3: %d %+v", code, out)
	}
	if err := c.Eventually(30*time.Second, func() error { return recordsEverywhere(out.TransactionID, false) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Eventually(30*time.Second, func() error {
		for _, s := range sr.Ended() {
			if s.Name() == coordinator.SpanTransaction {
				for _, a := range s.Attributes() {
					if a.Key == coordinator.AttrTxnID && a.Value.AsString() == out.TransactionID {
						return nil
					}
				}
			}
		}
		return errors.New("no transaction span yet")
	}); err != nil {
		t.Fatalf("the transaction begun at level 3 is not traced on its leader: %v", err)
	}
	// A type-16 entry is refused before it is proposed: nothing is written.
	ld := c.Node(c.WaitLeader(30 * time.Second)).Node
	before := ld.Raft.LastIndex()
	_, err := ld.Apply(context.Background(), &fsm.Begin{ID: "traced-at-3", CreatedAt: 1, Deadline: 2,
		Participants: []fsm.Participant{{Prepare: "http://p/prepare", Commit: "http://p/commit", Rollback: "http://p/rollback"}},
		Trace:        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if !errors.Is(err, cluster.ErrFeatureUnavailable) || !strings.Contains(err.Error(), "n3") {
		t.Fatalf("traced Begin at level 3: %v, want ErrFeatureUnavailable naming n3", err)
	}
	if ld.Raft.LastIndex() != before {
		t.Fatalf("the refused entry moved the log from %d to %d", before, ld.Raft.LastIndex())
	}

	level3.Store(false) // n3 "upgraded"
	if err := c.Eventually(60*time.Second, func() error { return levels(4) }); err != nil {
		t.Fatalf("level 4 not enabled after every server supports it: %v", err)
	}
	code, out = post(t, c.Node(c.WaitLeader(30*time.Second)).URL(), urls, 5000)
	if code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("POST at level 4: %d %+v", code, out)
	}
	if err := c.Eventually(30*time.Second, func() error { return recordsEverywhere(out.TransactionID, true) }); err != nil {
		t.Fatal(err)
	}
}
