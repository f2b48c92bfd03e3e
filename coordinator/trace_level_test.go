package coordinator_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
)

// TestTraceBelowLevel4LogsNoContext: at feature level 3 (a server may run a build that
// cannot apply a traced Begin, type 16) a traced leader logs an untraced Begin (type 1) and
// still records the transaction's spans.
func TestTraceBelowLevel4LogsNoContext(t *testing.T) {
	r := newLevel3Rig(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	a := participanttest.New(t)
	cfg := fastCfg()
	cfg.TracerProvider = tp
	l := r.lead(cfg, nil)
	_, txn := submitTraced(t, l, tp, coordinator.ModeDefault, a)
	r.waitTerminal(t, txn.ID)
	txnSpan(t, sr, txn.ID, false)
	for _, e := range entriesFor(r.log, txn.ID) {
		if b, ok := e.Cmd.(*fsm.Begin); ok && (b.Trace != "" || b.Type() != fsm.CmdBegin) {
			t.Fatalf("Begin %+v (type %d) at level 3", b, b.Type())
		}
	}
	if n := countType(r.log, fsm.CmdBeginTraced); n != 0 {
		t.Fatalf("%d traced Begins at level 3", n)
	}
}
