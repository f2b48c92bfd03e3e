package coordinator_test

import (
	"context"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchC1 runs one transaction at a time (concurrency 1) over three in-process FPs through
// the engine with a synchronous in-memory log, each until terminal, and reports the median
// latency and the process CPU per transaction (engine, FPs and the HTTP between them). The
// completion entry is logged without lingering, so the latency is the protocol's.
func benchC1(b *testing.B, cfg coordinator.Config) {
	fps := newFPs(b, 3)
	r := newRig(b)
	cfg.CompleteLinger = -1
	l := r.lead(cfg, nil)
	ps := parts(fps...)
	run := func() time.Duration {
		start := time.Now()
		txn, err := l.eng.Submit(context.Background(), coordinator.Request{Participants: ps, Timeout: roomy})
		if err != nil {
			b.Fatal(err)
		}
		if got := r.waitTerminal(b, txn.ID); got.Status != fsm.StatusCommitted {
			b.Fatalf("%s", describe(got))
		}
		return time.Since(start)
	}
	for range 50 { // warm connections and the endpoint table
		run()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		lat = append(lat, run())
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/txn")
}

// BenchmarkC1Untraced is the engine at concurrency 1 without tracing; it builds on
// earlier commits too, so the same benchmark compares a build from before tracing existed.
func BenchmarkC1Untraced(b *testing.B) { benchC1(b, fastCfg()) }
