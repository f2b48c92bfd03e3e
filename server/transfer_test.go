package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestPostDuringLeadershipTransfersIsBounded sends transactions from 64 concurrent clients,
// each to the node that leads when it sends, while leadership is handed from node to node
// again and again. During a transfer the old leader is still Raft's leader but refuses
// writes; it used to forward such a POST to itself, recursively, without pause (goroutine
// stacks grew to 103 MiB). Now every answer is 200 or a 503 with Retry-After, and the
// process's goroutines and stack memory stay within a bound fixed before the load started.
func TestPostDuringLeadershipTransfersIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const clients = 64
	fp := participanttest.New(t)
	urls := []string{fp.URL() + "/prepare"}
	// While a transfer runs, every log write takes 30 ms (a slow disk): the target catches
	// up slowly, so the old leader refuses writes for a while, as it does between real
	// machines (in one process a transfer is otherwise over in a millisecond or two).
	var slow atomic.Bool
	c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) {
		cfg.Cluster.WrapLogStore = func(ls raft.LogStore) raft.LogStore { return &slowLogs{LogStore: ls, slow: &slow} }
	}})
	c.WaitLeader(20 * time.Second)

	base := sample()
	var (
		stop     = make(chan struct{})
		peak     atomic.Int64 // goroutines
		peakSt   atomic.Uint64
		mu       sync.Mutex
		byStatus = map[int]int{}
		bad      []string
	)
	sampler, clientsDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampler)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			s := sample()
			if int64(s.goroutines) > peak.Load() {
				peak.Store(int64(s.goroutines))
			}
			if s.stack > peakSt.Load() {
				peakSt.Store(s.stack)
			}
			select {
			case <-clientsDone:
				return
			case <-tick.C:
			}
		}
	}()
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: clients}}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 500; n++ { // bounded; normally ends when the transfers are done
				select {
				case <-stop:
					return
				default:
				}
				target := c.Leader()
				if target < 0 {
					target = (i + n) % c.Len()
				}
				code, retryAfter, body := postRaw(hc, c.Node(target).URL(), urls, 5000)
				mu.Lock()
				byStatus[code]++
				if code != http.StatusOK && code != http.StatusServiceUnavailable {
					bad = append(bad, fmt.Sprintf("%d %s", code, body))
				}
				if code == http.StatusServiceUnavailable && retryAfter == "" {
					bad = append(bad, "503 without Retry-After: "+body)
				}
				mu.Unlock()
			}
		}()
	}

	const transfers = 6
	done := 0
	for round := 0; round < 50 && done < transfers; round++ {
		var leader int
		if err := c.Eventually(20*time.Second, func() error {
			if leader = c.Leader(); leader < 0 {
				return fmt.Errorf("no leader")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Let the clients reach the new leader before the next transfer starts.
		target := counted(&mu, byStatus) + clients
		_ = c.Eventually(10*time.Second, func() error {
			if counted(&mu, byStatus) < target {
				return fmt.Errorf("waiting for answers")
			}
			return nil
		})
		slow.Store(true)
		err := c.Node(leader).Node.TransferLeadership("")
		slow.Store(false)
		if err != nil {
			t.Logf("transfer from %d: %v", leader, err)
			continue
		}
		done++
	}
	close(stop)
	go func() { wg.Wait(); close(clientsDone) }()
	select {
	case <-clientsDone:
	case <-time.After(90 * time.Second):
		close(clientsDone)
		t.Errorf("clients still waiting 90 s after the last transfer")
	}
	<-sampler
	if done < transfers {
		t.Errorf("only %d of %d leadership transfers succeeded", done, transfers)
	}
	t.Logf("answers %v; goroutines %d before, peak %d; stacks %.1f MiB before, peak %.1f MiB; %d transfers",
		byStatus, base.goroutines, peak.Load(), mib(base.stack), mib(peakSt.Load()), done)
	if len(bad) > 0 {
		t.Errorf("%d answers other than 200 or 503 with Retry-After, e.g. %q", len(bad), bad[0])
	}
	if byStatus[http.StatusOK] == 0 {
		t.Errorf("no transaction committed: %v", byStatus)
	}
	// Per client, on each of the 3 nodes over the run: a kept-alive connection of the test
	// client, of the forwarder and of the participant client (3 goroutines each, both
	// ends), the handler, the transaction's driver and its call: under 48 in all. The
	// pools are bounded, so this does not grow with the number of requests.
	if lim := int64(base.goroutines + 48*clients); peak.Load() > lim {
		t.Errorf("goroutines peaked at %d, bound %d", peak.Load(), lim)
	}
	// 32 MiB is three times what the run needs when idle (about 10 MiB); the recursion this
	// guards against took over 100 MiB.
	if lim := base.stack + 32<<20; peakSt.Load() > lim {
		t.Errorf("goroutine stacks peaked at %.1f MiB, bound %.1f MiB", mib(peakSt.Load()), mib(lim))
	}
}

// slowLogs is a log store whose writes take 30 ms while slow is set.
type slowLogs struct {
	raft.LogStore
	slow *atomic.Bool
}

func (s *slowLogs) StoreLogs(ls []*raft.Log) error {
	if s.slow.Load() {
		time.Sleep(30 * time.Millisecond) // fault injection: a slow disk, not a wait
	}
	return s.LogStore.StoreLogs(ls)
}

func (s *slowLogs) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

type memSample struct {
	goroutines int
	stack      uint64
}

func sample() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{goroutines: runtime.NumGoroutine(), stack: ms.StackInuse}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func counted(mu *sync.Mutex, m map[int]int) int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// postRaw sends one transaction and returns the status, the Retry-After header and the body.
func postRaw(hc *http.Client, base string, services []string, timeoutMs int) (int, string, string) {
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
	resp, err := hc.Post(base+"/v1/transactions", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(raw)
}

// A node removed from the configuration keeps its API up; a POST on it answers 503
// unavailable at once (it used to wait about 15 s for a leader it would never see), and so
// does a node whose Raft has shut down.
func TestRemovedNodeAnswers503AtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	fp := participanttest.New(t)
	urls := []string{fp.URL() + "/prepare"}
	c := servertest.Start(t, servertest.Options{})
	leader := c.WaitLeader(20 * time.Second)
	gone := c.Follower()
	if err := c.Node(leader).Node.Remove(context.Background(), c.Node(gone).Node.ID()); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	var code int
	var retryAfter, body string
	// The removed node learns of its removal from the configuration entry; until then it
	// may still forward to the leader, which serves the request (200).
	err := c.Eventually(20*time.Second, func() error {
		start := time.Now()
		code, retryAfter, body = postRaw(hc, c.Node(gone).URL(), urls, 1000)
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("answer %d %s", code, body)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the 503 took %s", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error, Detail string }
	_ = json.Unmarshal([]byte(body), &e)
	if e.Error != "unavailable" || retryAfter == "" {
		t.Errorf("answer %d %q (Retry-After %q), want 503 unavailable with Retry-After", code, body, retryAfter)
	}
	t.Logf("removed node: %d %s", code, body)

	// Raft shut down under a running API (what a leader that removed itself does).
	other := -1
	for i := 0; i < c.Len(); i++ {
		if i != gone && i != c.Leader() {
			other = i
		}
	}
	if err := c.Node(other).Node.Raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, body = postRaw(hc, c.Node(other).URL(), urls, 1000)
	if code != http.StatusServiceUnavailable || !bytes.Contains([]byte(body), []byte(`"unavailable"`)) || time.Since(start) > 5*time.Second {
		t.Errorf("shut-down node: %d %s after %s, want 503 unavailable at once", code, body, time.Since(start))
	}
}
