package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkFloor measures, on one in-process 3-node cluster (loopback TCP, raft-boltdb with
// fsync, the server's Raft configuration) and 3 built-in fast participants, the floor that
// Raft and loopback HTTP set and then txcoord's transactions against it:
//
//	go test -run '^$' -bench Floor -benchtime 3s ./internal/bench/
//
// raft-apply and participant-* are the floor; txn/c=1 reports its p50 as a ratio to the
// floor (2 commits + 2 rounds; x-floor) and to the 3-commit floor of a design that logs
// completion before answering (x-3commit-floor), txn/c=64
// its throughput. The sub-benchmarks must run in order (the txn ratios use the floor's
// p50s), so do not filter out the floor ones. `txcoord bench --floor` prints the same
// comparison with percentiles and per-phase times.
func BenchmarkFloor(b *testing.B) {
	cl, err := startCluster(b.TempDir(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ps, err := StartParticipants("127.0.0.1", 0, 3, 0, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ps.Close()
	ctx := context.Background()
	ops := NewFloorOps(cl.Node(cl.Leader()).Node, ps.PrepareURLs)
	var applyP50, roundP50 float64

	// serial runs fn b.N times and reports its p50 in ms.
	serial := func(b *testing.B, fn func() error) float64 {
		ds := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t := time.Now()
			if err := fn(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t))
		}
		b.StopTimer()
		p50 := Summarize(ds).P50
		b.ReportMetric(p50, "p50-ms")
		return p50
	}
	// parallel runs fn b.N times from 64 goroutines and reports ops/s.
	parallel := func(b *testing.B, unit string, fn func(i int) error) {
		b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
		var mu sync.Mutex
		next := 0
		start := time.Now()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			for pb.Next() {
				if err := fn(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
	}

	b.Run("raft-apply/c=1", func(b *testing.B) { applyP50 = serial(b, func() error { return ops.Apply(ctx) }) })
	b.Run("raft-apply/c=64", func(b *testing.B) { parallel(b, "applies/s", func(int) error { return ops.Apply(ctx) }) })
	b.Run("participant-call/c=1", func(b *testing.B) { serial(b, func() error { return ops.CallNth(ctx, 0) }) })
	b.Run("participant-round/c=1", func(b *testing.B) { roundP50 = serial(b, func() error { return ops.Round(ctx) }) })
	b.Run("participant-call/c=64", func(b *testing.B) { parallel(b, "calls/s", func(i int) error { return ops.CallNth(ctx, i) }) })

	body, _ := json.Marshal(map[string]any{"services": ps.PrepareURLs, "timeout": 5000})
	hc := NewHTTPClient(64)
	entry := cl.Node(cl.Leader()).URL()
	post := func(w *worker) error {
		lc := &LoadConfig{HTTP: hc, RequestTimeout: 20 * time.Second}
		before := w.committed
		if !w.one(ctx, lc, entry, body) || w.committed != before+1 {
			return fmt.Errorf("transaction not committed: errors %v, outcomes %v", w.errs, w.outcomes)
		}
		return nil
	}
	b.Run("txn/c=1", func(b *testing.B) {
		w := newWorker()
		p50 := serial(b, func() error { return post(w) })
		if applyP50 > 0 && roundP50 > 0 {
			b.ReportMetric(p50/(2*applyP50+2*roundP50), "x-floor")
			b.ReportMetric(p50/(3*applyP50+2*roundP50), "x-3commit-floor")
		}
	})
	b.Run("txn/c=64", func(b *testing.B) {
		workers := make([]*worker, 64)
		for i := range workers {
			workers[i] = newWorker()
		}
		parallel(b, "txn/s", func(i int) error { return post(workers[i%len(workers)]) })
	})
}
