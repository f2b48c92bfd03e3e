package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

// BenchmarkListingAt100k is the listing benchmark of docs/performance.md:
//
//	go test -run '^$' -bench ListingAt100k -benchtime 1x ./httpapi/
//
// It fills an FSM with 100,000 retained transactions (committed, rolled back and a few
// hundred in flight), then measures through the HTTP handler: a newest-first limit=100
// page (alone, and while Apply runs), a participant-filtered page, /v1/stuck, and the
// latency of FSM applies with and without a reader paging in a loop. Every loop is bounded
// by a count.
func BenchmarkListingAt100k(b *testing.B) {
	const n = 100_000
	f := fsm.New()
	var idx atomic.Uint64
	apply := func(c fsm.Command) { f.ApplyCommand(idx.Add(1), c) }
	base := time.Now().Add(-time.Hour).UnixMilli()
	mk := func(i int) string {
		id := uuid.Must(uuid.NewV7()).String()
		host := fmt.Sprintf("http://svc%d.example:9000/", i%50)
		p := []fsm.Participant{{Prepare: host + "prepare", Commit: host + "commit", Rollback: host + "rollback"},
			{Prepare: "http://pay.example:9000/prepare", Commit: "http://pay.example:9000/commit", Rollback: "http://pay.example:9000/rollback"}}
		at := base + int64(i/30)
		apply(&fsm.Begin{ID: id, CreatedAt: at, Deadline: at + 5000, Participants: p})
		return id
	}
	finish := func(id string, i int) {
		d := fsm.DecisionCommit
		if i%2 == 1 {
			d = fsm.DecisionAbort
		}
		at := base + int64(i/30)
		apply(&fsm.Decide{ID: id, Decision: d, At: at, Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteYes}, Reasons: []string{"", ""}})
		apply(&fsm.Complete{At: at, Items: []fsm.Completion{{ID: id, Attempts: []uint32{1, 1}}}})
	}
	for i := 0; i < n; i++ {
		id := mk(i)
		if i%400 != 0 { // 250 stay in flight
			finish(id, i)
		}
	}
	node := &fakeNode{id: "bench", leaderReady: true, status: cluster.Status{NodeID: "bench", Role: "leader", Ready: true}}
	srv := New(Config{}, node, f, benchOperator{&fakeSubmitter{}})
	get := func(path string) time.Duration {
		start := time.Now()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		d := time.Since(start)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		return d
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	report := func(name string, ds []time.Duration) {
		fmt.Printf("%-44s n=%-6d p50 %-10v p99 %-10v max %v\n", name, len(ds), pct(ds, 0.50), pct(ds, 0.99), pct(ds, 1))
	}
	pages := func(k int, path string) []time.Duration {
		ds := make([]time.Duration, k)
		for i := range ds {
			ds[i] = get(path)
		}
		return ds
	}
	// Applies: Begin, Decide and Complete of new transactions, each timed.
	applies := func(k int) []time.Duration {
		ds := make([]time.Duration, 0, 3*k)
		for i := 0; i < k; i++ {
			at := time.Now().UnixMilli()
			id := uuid.Must(uuid.NewV7()).String()
			p := []fsm.Participant{{Prepare: "http://x.example/prepare", Commit: "http://x.example/commit", Rollback: "http://x.example/rollback"}}
			for _, c := range []fsm.Command{
				&fsm.Begin{ID: id, CreatedAt: at, Deadline: at + 5000, Participants: p},
				&fsm.Decide{ID: id, Decision: fsm.DecisionCommit, At: at, Votes: []fsm.Vote{fsm.VoteYes}, Reasons: []string{""}},
				&fsm.Complete{At: at, Items: []fsm.Completion{{ID: id, Attempts: []uint32{1}}}},
			} {
				start := time.Now()
				f.ApplyCommand(idx.Add(1), c)
				ds = append(ds, time.Since(start))
			}
		}
		return ds
	}
	b.ResetTimer()
	for range b.N {
		fmt.Printf("retained: %d transactions\n", n)
		report("GET /v1/transactions?limit=100", pages(2000, "/v1/transactions?limit=100"))
		report("GET ?limit=100&order=asc", pages(500, "/v1/transactions?limit=100&order=asc"))
		report("GET ?limit=100&status=rolled_back", pages(500, "/v1/transactions?limit=100&status=rolled_back"))
		report("GET ?limit=100&participant=svc7.example", pages(500, "/v1/transactions?limit=100&participant=svc7.example"))
		report("GET /v1/stuck", pages(500, "/v1/stuck"))
		legacy := make([]time.Duration, 50)
		for i := range legacy {
			start := time.Now()
			f.List(0, "", 100)
			legacy[i] = time.Since(start)
		}
		report("FSM.List (sort every id, as before)", legacy)

		report("Apply, no reader", applies(20_000))
		var stop atomic.Bool
		var wg sync.WaitGroup
		var during []time.Duration
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000 && !stop.Load(); i++ {
				during = append(during, get("/v1/transactions?limit=100"))
			}
		}()
		report("Apply, a reader paging in a loop", applies(20_000))
		stop.Store(true)
		wg.Wait()
		report("GET ?limit=100 while applying", during)
	}
}

// benchOperator serves the operator routes (/v1/stuck) in the benchmark.
type benchOperator struct{ *fakeSubmitter }

func (benchOperator) Retry(context.Context, string, string) (*fsm.Txn, error)   { return nil, nil }
func (benchOperator) Resolve(context.Context, string, string) (*fsm.Txn, error) { return nil, nil }
