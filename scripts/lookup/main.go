// Command lookup is scripts/million.sh's check that every transaction can still be looked
// up on every node (issue 18): it collects the ids the first node knows (its state,
// GET /v1/transactions, and its archive, GET /v1/history), checks there are as many as
// were submitted, then asks every node for every id with GET /v1/transactions/{id}
// ?consistency=stale (the node's own state, or its archive for a pruned one) and counts
// the answers that are not 200 with that id and a terminal status. It prints one summary
// line per node and each node's archive figures (GET /v1/archive), and exits 1 on any
// failure.
//
//	go run ./scripts/lookup -nodes http://127.0.0.1:8401,http://127.0.0.1:8402 -expect 1000000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type view struct {
	TransactionID string `json:"transactionId"`
	Status        string `json:"status"`
	Archived      bool   `json:"archived"`
}

type page struct {
	Transactions []view `json:"transactions"`
	Next         string `json:"next"`
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

func getJSON(ctx context.Context, u string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		return resp.StatusCode, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

// collect pages through path (a list route with limit and after) and adds every id.
func collect(ctx context.Context, base, path string, ids map[string]struct{}) error {
	after := ""
	for {
		var p page
		u := base + path + "&after=" + url.QueryEscape(after)
		if code, err := getJSON(ctx, u, &p); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET %s: %d %v", u, code, err)
		}
		for _, v := range p.Transactions {
			ids[v.TransactionID] = struct{}{}
		}
		if p.Next == "" {
			return nil
		}
		after = p.Next
	}
}

func main() {
	nodes := flag.String("nodes", "", "comma-separated API base URLs; ids are collected from the first")
	expect := flag.Int("expect", 0, "how many transactions were submitted (0: no count check)")
	conc := flag.Int("concurrency", 32, "concurrent lookups")
	flag.Parse()
	bases := strings.Split(*nodes, ",")
	if *nodes == "" {
		fmt.Fprintln(os.Stderr, "lookup: -nodes is required")
		os.Exit(64)
	}
	ctx := context.Background()
	t0 := time.Now()
	set := map[string]struct{}{}
	for _, path := range []string{"/v1/transactions?consistency=stale&limit=1000", "/v1/history?limit=1000"} {
		if err := collect(ctx, bases[0], path, set); err != nil {
			fmt.Fprintln(os.Stderr, "lookup:", err)
			os.Exit(1)
		}
	}
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	fmt.Printf("lookup: %s knows %d distinct transactions (state and archive), listed in %.1f s\n", bases[0], len(ids), time.Since(t0).Seconds())
	failed := false
	if *expect > 0 && len(ids) != *expect {
		fmt.Printf("lookup: FAIL: %d submitted, %d known\n", *expect, len(ids))
		failed = true
	}
	for _, base := range bases {
		t1 := time.Now()
		var bad, archived atomic.Int64
		var mu sync.Mutex
		var examples []string
		work := make(chan string, 1024)
		var wg sync.WaitGroup
		for w := 0; w < *conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range work {
					var v view
					code, err := getJSON(ctx, base+"/v1/transactions/"+id+"?consistency=stale", &v)
					if err != nil || code != http.StatusOK || v.TransactionID != id || (v.Status != "committed" && v.Status != "rolled_back") {
						bad.Add(1)
						mu.Lock()
						if len(examples) < 5 {
							examples = append(examples, fmt.Sprintf("%s: HTTP %d %v %+v", id, code, err, v))
						}
						mu.Unlock()
						continue
					}
					if v.Archived {
						archived.Add(1)
					}
				}
			}()
		}
		for _, id := range ids {
			work <- id
		}
		close(work)
		wg.Wait()
		var st struct {
			Bytes   int64 `json:"bytes"`
			Records int64 `json:"records"`
			Segs    int   `json:"segments"`
			Gaps    []any `json:"gaps"`
		}
		_, _ = getJSON(ctx, base+"/v1/archive", &st)
		per := 0.0
		if st.Records > 0 {
			per = float64(st.Bytes) / float64(st.Records)
		}
		fmt.Printf("lookup: %s: %d looked up in %.1f s, %d failed, %d answered from the archive; archive %d records in %d segments, %d bytes (%.1f bytes per transaction), %d gaps\n",
			base, len(ids), time.Since(t1).Seconds(), bad.Load(), archived.Load(), st.Records, st.Segs, st.Bytes, per, len(st.Gaps))
		for _, e := range examples {
			fmt.Println("  e.g.", e)
		}
		if bad.Load() > 0 {
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
