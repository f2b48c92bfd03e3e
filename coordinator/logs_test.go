package coordinator_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
)

// lockedBuffer is a bytes.Buffer safe to read while loggers write to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns every JSON log line written so far.
func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", ln, err)
		}
		out = append(out, m)
	}
	return out
}

// TestEngineLogLinesNameTxnAndTerm: every line the engine logs about a transaction names
// it and the Raft term, and, with tracing on, the trace and span ids of its span; without
// tracing there are no trace fields.
func TestEngineLogLinesNameTxnAndTerm(t *testing.T) {
	for _, traced := range []bool{true, false} {
		name := "untraced"
		if traced {
			name = "traced"
		}
		t.Run(name, func(t *testing.T) {
			r, sr, tp := tracedRig(t)
			var buf lockedBuffer
			a, b := participanttest.New(t), participanttest.New(t)
			// Two refused Commits: the engine warns about each before the third is acknowledged.
			b.FailFirst(participant.PhaseCommit, 2, participanttest.Status(503, "busy"))
			cfg := fastCfg()
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true, Level: hclog.Debug})
			if traced {
				cfg.TracerProvider = tp
			}
			l := r.lead(cfg, nil)
			txn := l.submit(t, roomy, a, b)
			if got := r.waitTerminal(t, txn.ID); got.Status != fsm.StatusCommitted {
				t.Fatalf("status %s", got.Status)
			}
			var traceID, spanID string
			if traced {
				root, _ := txnSpan(t, sr, txn.ID, false)
				traceID, spanID = root.SpanContext().TraceID().String(), root.SpanContext().SpanID().String()
			}
			refused := 0
			for _, ln := range buf.lines(t) {
				if ln["@module"] != "2pc" {
					continue
				}
				if _, ok := ln["term"]; !ok {
					t.Errorf("engine line without the term: %v", ln)
				}
				if ln["@message"] != "phase-two call refused; will retry" && ln["@message"] != "decided" {
					continue
				}
				if ln["@message"] == "phase-two call refused; will retry" {
					refused++
				}
				if ln["txn"] != txn.ID || ln["term"] != float64(1) {
					t.Errorf("line %v: want txn %s and term 1", ln, txn.ID)
				}
				if ln["trace_id"] != nil && ln["trace_id"] != traceID || ln["span_id"] != nil && ln["span_id"] != spanID || traced && ln["trace_id"] == nil {
					t.Errorf("line %v: want trace_id %q span_id %q", ln, traceID, spanID)
				}
			}
			if refused < 2 {
				t.Errorf("%d refusal lines, want 2 or more:\n%s", refused, buf.b.String())
			}
		})
	}
}
