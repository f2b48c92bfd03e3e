package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestFastModeThroughTheAPI: with --default-mode fast, concurrent transactions through the
// leader's API all commit (once the cluster has enabled feature level 3), each participant
// is prepared and committed once, and the log holds no Begin.
func TestFastModeThroughTheAPI(t *testing.T) {
	fps := []*participanttest.FP{participanttest.New(t), participanttest.New(t), participanttest.New(t)}
	c := servertest.Start(t, servertest.Options{LogLevel: "info", Tune: func(_ int, cfg *server.Config) { cfg.API.DefaultMode = coordinator.ModeFast }})
	leader := c.WaitLeader(10 * time.Second)
	if err := c.Eventually(10*time.Second, func() error { return c.Node(leader).Node.FeatureError(3, "fast mode") }); err != nil {
		t.Fatal(err)
	}
	services := make([]string, len(fps))
	for i, fp := range fps {
		services[i] = fp.Endpoints().Prepare
	}
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": 5000})
	const n, conc = 120, 12
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []string
		work = make(chan int, n)
	)
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := http.Post(c.Node(leader).URL()+"/v1/transactions", "application/json", bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct{ Status string }
				_ = json.Unmarshal(b, &out)
				if resp.StatusCode != http.StatusOK || out.Status != "committed" {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, b))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d transactions not committed: %q", len(bad), n, bad[:min(len(bad), 5)])
	}
	for _, fp := range fps {
		if p, cm := fp.Count("prepare"), fp.Count("commit"); p != n || cm != n {
			t.Errorf("%s: %d prepares, %d commits, want %d each", fp.URL(), p, cm, n)
		}
	}
}

// inquireAndApply plays the participant's side of the inquiry: each FP still holding id
// asks a node (GET .../outcome?deadline=) until the answer is not pending, then applies it
// with the Commit or Rollback call the coordinator would have sent. It returns the outcome.
func inquireAndApply(t *testing.T, c *servertest.Cluster, node int, id string, deadline time.Time, fps ...*participanttest.FP) string {
	t.Helper()
	outcome := ""
	for _, fp := range fps {
		if len(fp.Held()) == 0 {
			continue
		}
		url := c.Node(node).URL() + "/v1/transactions/" + id + "/outcome?deadline=" + deadline.UTC().Format("2006-01-02T15:04:05.000Z")
		err := c.Eventually(20*time.Second, func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var a struct{ Outcome string }
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK {
				return fmt.Errorf("HTTP %d (%v)", resp.StatusCode, err)
			}
			if a.Outcome == "pending" {
				return fmt.Errorf("pending")
			}
			outcome = a.Outcome
			return nil
		})
		if err != nil {
			t.Fatalf("inquiry about %s: %v", id, err)
		}
		e := fp.Endpoints()
		target := e.Rollback
		if outcome == "committed" {
			target = e.Commit
		}
		body := fmt.Sprintf(`{"transactionId":%q,"deadline":%q}`, id, deadline.UTC().Format("2006-01-02T15:04:05.000Z"))
		resp, err := http.Post(target, "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	return outcome
}

// TestFastFailover is the failover kill-point matrix in fast mode, on a real cluster: the
// leader is killed with a vote in flight (before the decision entry), or during phase two
// (after it). The participants that inquire learn one outcome, the same for all, and none
// is left holding.
func TestFastFailover(t *testing.T) {
	for _, kp := range []struct {
		name  string
		phase string // the call held at the last participant when the leader dies
		want  string
	}{
		{"vote in flight, before the decision entry", "prepare", "rolled_back"},
		{"during phase two, after the decision entry", "commit", "committed"},
	} {
		t.Run(kp.name, func(t *testing.T) {
			fps := []*participanttest.FP{participanttest.New(t), participanttest.New(t), participanttest.New(t)}
			held := fps[2]
			held.Script(participantPhase(kp.phase), participanttest.Hang())
			c := servertest.Start(t, servertest.Options{Tune: func(_ int, cfg *server.Config) { cfg.API.DefaultMode = coordinator.ModeFast }})
			leader := c.WaitLeader(10 * time.Second)
			if err := c.Eventually(10*time.Second, func() error { return c.Node(leader).Node.FeatureError(3, "fast mode") }); err != nil {
				t.Fatal(err)
			}
			services := []string{fps[0].Endpoints().Prepare, fps[1].Endpoints().Prepare, fps[2].Endpoints().Prepare}
			body, _ := json.Marshal(map[string]any{"services": services, "timeout": 2000})
			sent := time.Now()
			go func() {
				if resp, err := http.Post(c.Node(leader).URL()+"/v1/transactions", "application/json", bytes.NewReader(body)); err == nil {
					resp.Body.Close()
				}
			}()
			if err := c.Eventually(10*time.Second, func() error {
				if held.Count(participantPhase(kp.phase)) == 0 {
					return fmt.Errorf("no %s yet", kp.phase)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			id := held.Log()[0].TxnID
			c.Kill(leader)
			held.Release(participantPhase(kp.phase)) // processed after the leader died; the reply is lost
			next := c.WaitLeader(10 * time.Second)
			// A deadline no earlier than the Prepare's: the request's send time plus its timeout.
			deadline := sent.Add(2 * time.Second).Add(100 * time.Millisecond)
			got := inquireAndApply(t, c, next, id, deadline, fps...)
			if err := c.Eventually(20*time.Second, func() error {
				for _, fp := range fps {
					if h := fp.Held(); len(h) > 0 {
						return fmt.Errorf("%s holds %v", fp.URL(), h)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			rec, ok := c.Node(next).Node.FSM.Get(id)
			if !ok {
				t.Fatalf("no record of %s after the inquiry", id)
			}
			if want := map[string]string{"rolled_back": "abort", "committed": "commit"}[kp.want]; rec.Decision.String() != want || (got != "" && got != kp.want) {
				t.Fatalf("decision %v (inquiry said %q), want %s", rec.Decision, got, kp.want)
			}
			for _, fp := range fps {
				if err := fp.CheckO2(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func participantPhase(s string) participant.Phase { return participant.Phase(s) }
