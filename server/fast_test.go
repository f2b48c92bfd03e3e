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
	"github.com/txcoord/txcoord/participant/participanttest"
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
