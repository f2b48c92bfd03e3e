package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

const (
	urlA = "http://a.test:9001/prepare"
	urlB = "http://b.test:9002/prepare"
)

// consistent returns a quiet, correct world: c1 committed at A and B; r1 rolled back (A
// rolled back, B never heard of it); r2 rolled back (A voted NACK, B has a tombstone).
func consistent() ([]Txn, map[string]*demo.State) {
	txns := []Txn{
		{ID: "c1", Status: "committed", Participants: []string{urlA, urlB}},
		{ID: "r1", Status: "rolled_back", Participants: []string{urlA, urlB}},
		{ID: "r2", Status: "ROLLED_BACK", Participants: []string{urlA, urlB}},
	}
	a := &demo.State{Kind: demo.KindFlight, Unit: 1,
		Inventory: map[string]demo.Inventory{"seats": {Capacity: 10, Free: 9, Sold: 1}},
		Holds:     map[string]demo.Hold{},
		Ledger:    map[string]participant.State{"c1": participant.StateCommitted, "r1": participant.StateRolledBack, "r2": participant.StateRefused}}
	b := &demo.State{Kind: demo.KindPayment, Unit: 100,
		Inventory: map[string]demo.Inventory{"acct-0": {Capacity: 1000, Free: 900, Sold: 100}, "acct-1": {Capacity: 1000, Free: 1000}},
		Holds:     map[string]demo.Hold{},
		Ledger:    map[string]participant.State{"c1": participant.StateCommitted, "r2": participant.StateRolledBack}}
	return txns, map[string]*demo.State{"a": a, "b": b}
}

func run(txns []Txn, st map[string]*demo.State, opts Options) Report {
	return Check(txns, []Participant{{URL: urlA, State: *st["a"]}, {URL: "http://B.test:9002/", State: *st["b"]}}, opts)
}

func kinds(r Report) []string {
	var ks []string
	for _, v := range r.Violations {
		ks = append(ks, v.Kind)
	}
	slices.Sort(ks)
	return slices.Compact(ks)
}

func TestConsistentDataPasses(t *testing.T) {
	txns, st := consistent()
	r := run(txns, st, Options{})
	if !r.OK() || len(r.Warnings) != 0 {
		t.Fatalf("consistent data:\n%s", r)
	}
	if r.ByStatus[StatusCommitted] != 1 || r.ByStatus[StatusRolledBack] != 2 || !strings.Contains(r.String(), "0 violations") {
		t.Fatalf("report: %+v\n%s", r.ByStatus, r)
	}
}

func TestEachViolationIsDetected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(txns []Txn, a, b *demo.State) []Txn
		opts   Options
		want   []string // violation kinds, sorted
		detail string   // a phrase the report must contain
	}{
		{"one committed, one rolled back", func(txns []Txn, a, b *demo.State) []Txn {
			b.Ledger["c1"] = participant.StateRolledBack
			b.Inventory["acct-0"] = demo.Inventory{Capacity: 1000, Free: 1000}
			return txns
		}, Options{}, []string{KindAgreement, KindAtomicity}, "committed at " + urlA + " but " + urlB + " is rolled_back"},
		{"committed while another never heard of it", func(txns []Txn, a, b *demo.State) []Txn {
			a.Ledger["r1"] = participant.StateCommitted
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Sold: 2}
			return txns
		}, Options{}, []string{KindAgreement, KindAtomicity}, "is absent"},
		{"coordinator committed, all participants rolled back", func(txns []Txn, a, b *demo.State) []Txn {
			txns[2].Status = "committed"
			return txns
		}, Options{}, []string{KindAgreement}, "coordinator decided commit"},
		{"participant committed a txn the coordinator does not know", func(txns []Txn, a, b *demo.State) []Txn {
			a.Ledger["ghost"] = participant.StateCommitted
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Sold: 2}
			return txns
		}, Options{}, []string{KindAgreement}, "does not know"},
		{"pruned coordinator history tolerates unknown commits", func(txns []Txn, a, b *demo.State) []Txn {
			a.Ledger["old"] = participant.StateCommitted
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Sold: 2}
			return txns
		}, Options{Pruned: true}, nil, "0 violations"},
		{"committed during preparing", func(txns []Txn, a, b *demo.State) []Txn {
			txns[0].Status = "preparing"
			return txns
		}, Options{InFlight: true}, []string{KindAgreement}, "status is preparing"},
		{"unknown status", func(txns []Txn, a, b *demo.State) []Txn {
			txns[0].Status = "done"
			return txns
		}, Options{}, []string{KindAgreement}, `"done"`},
		{"unfinished when quiet", func(txns []Txn, a, b *demo.State) []Txn {
			txns[0].Status = "committing"
			return txns
		}, Options{}, []string{KindUnfinished}, `still "committing"`},
		{"hold left (late prepare after rollback)", func(txns []Txn, a, b *demo.State) []Txn {
			b.Ledger["r1"] = participant.StatePrepared
			b.Holds["r1"] = demo.Hold{Pool: "acct-1", Units: 100}
			b.Inventory["acct-1"] = demo.Inventory{Capacity: 1000, Free: 900, Held: 100}
			return txns
		}, Options{}, []string{KindHold}, `still holds 100 units of acct-1 (coordinator status "rolled_back")`},
		{"hold without a prepared record", func(txns []Txn, a, b *demo.State) []Txn {
			a.Holds["r1"] = demo.Hold{Pool: "seats", Units: 1}
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Held: 1, Sold: 1}
			return txns
		}, Options{InFlight: true}, []string{KindHold}, "not prepared"},
		{"prepared record without a hold", func(txns []Txn, a, b *demo.State) []Txn {
			a.Ledger["p"] = participant.StatePrepared
			return txns
		}, Options{InFlight: true}, []string{KindHold}, "nothing is held"},
		{"capacity not conserved", func(txns []Txn, a, b *demo.State) []Txn {
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 10, Sold: 1}
			return txns
		}, Options{}, []string{KindConservation}, "not its capacity 10"},
		{"negative count", func(txns []Txn, a, b *demo.State) []Txn {
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 12, Held: -3, Sold: 1}
			return txns
		}, Options{}, []string{KindConservation}, "negative"},
		{"balances changed without a committed charge", func(txns []Txn, a, b *demo.State) []Txn {
			b.Inventory["acct-1"] = demo.Inventory{Capacity: 1000, Free: 900, Sold: 100}
			return txns
		}, Options{}, []string{KindConservation}, "charged (balances went down by) 200 units, but 1 committed"},
		{"held does not match the holds", func(txns []Txn, a, b *demo.State) []Txn {
			a.Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Held: 1, Sold: 1}
			return txns
		}, Options{}, []string{KindConservation}, "holds add up to 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			txns, st := consistent()
			txns = tc.mutate(txns, st["a"], st["b"])
			r := run(txns, st, tc.opts)
			if got := kinds(r); !slices.Equal(got, tc.want) {
				t.Fatalf("violation kinds %v, want %v:\n%s", got, tc.want, r)
			}
			if !strings.Contains(r.String(), tc.detail) {
				t.Fatalf("report does not say %q:\n%s", tc.detail, r)
			}
		})
	}
}

func TestInFlightToleratesWorkInProgress(t *testing.T) {
	txns, st := consistent()
	txns = append(txns, Txn{ID: "p", Status: "preparing", Participants: []string{urlA}})
	st["a"].Ledger["p"] = participant.StatePrepared
	st["a"].Holds["p"] = demo.Hold{Pool: "seats", Units: 1}
	st["a"].Inventory["seats"] = demo.Inventory{Capacity: 10, Free: 8, Held: 1, Sold: 1}
	if r := run(txns, st, Options{InFlight: true}); !r.OK() {
		t.Fatalf("in flight:\n%s", r)
	}
	if got := kinds(run(txns, st, Options{})); !slices.Equal(got, []string{KindHold, KindUnfinished}) {
		t.Fatalf("quiet: %v", got)
	}
}

func TestWarnings(t *testing.T) {
	txns, st := consistent()
	txns = append(txns, Txn{ID: "f", Status: "failed", Participants: []string{urlA, "http://c.test/prepare"}})
	r := run(txns, st, Options{})
	if !r.OK() || len(r.Warnings) != 2 || !strings.Contains(r.String(), "http://c.test/prepare") {
		t.Fatalf("warnings:\n%s", r)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"http://H:1/prepare":         "http://h:1",
		"http://h:1/":                "http://h:1",
		"http://h:1":                 "http://h:1",
		"https://h/svc/tx/prepare?x": "https://h/svc/tx",
	} {
		if got := Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFetch(t *testing.T) {
	_, st := consistent()
	pages := map[string]string{
		"":   `{"transactions":[{"transactionId":"c1","status":"committed","participants":[{"prepare":"URL/prepare","commit":"x","rollback":"y"}]}],"next":"c1"}`,
		"c1": `{"transactions":[{"transactionId":"r1","status":"rolled_back","participants":["URL/prepare"],"extra":1}],"next":""}`,
		"r1": `{"transactions":[],"next":"c1"}`,
	}
	var srvURL string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/transactions", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") != fmt.Sprint(PageLimit) {
			http.Error(w, "limit", 400)
			return
		}
		page, ok := pages[r.URL.Query().Get("after")]
		if !ok {
			http.Error(w, "no such page", 404)
			return
		}
		fmt.Fprint(w, strings.ReplaceAll(page, "URL", srvURL))
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(st["a"]) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	srvURL = srv.URL
	ctx := context.Background()

	txns, err := FetchTransactions(ctx, srv.Client(), srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) != 2 || txns[0].ID != "c1" || txns[1].Participants[0] != srv.URL+"/prepare" || txns[0].Participants[0] != srv.URL+"/prepare" {
		t.Fatalf("transactions %+v", txns)
	}
	got, err := FetchState(ctx, srv.Client(), srv.URL+"/prepare")
	if err != nil || got.Ledger["c1"] != participant.StateCommitted {
		t.Fatalf("state %+v %v", got, err)
	}
	r, err := Run(ctx, srv.Client(), srv.URL, []string{srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The fake state holds r2 (a NACK) that the fake coordinator does not list: fine.
	if !r.OK() || r.Transactions != 2 {
		t.Fatalf("run:\n%s", r)
	}

	pages[""] = `{"transactions":[],"next":"r1"}` // r1 -> c1 -> "" would be fine; loop instead
	pages["c1"] = `{"transactions":[],"next":"r1"}`
	if _, err := FetchTransactions(ctx, srv.Client(), srv.URL); err == nil || !strings.Contains(err.Error(), "does not advance") {
		t.Fatalf("looping pages: %v", err)
	}
	if _, err := FetchState(ctx, srv.Client(), srv.URL+"/nowhere/prepare"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing state: %v", err)
	}
}
