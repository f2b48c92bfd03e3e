package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

func ackServer(t *testing.T) []string {
	ack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	t.Cleanup(ack.Close)
	return []string{ack.URL + "/a/prepare", ack.URL + "/b/prepare", ack.URL + "/c/prepare"}
}

func getJSON(t *testing.T, url, token string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, raw)
		}
	}
	return resp.StatusCode
}

// TestPrunedTransactionsStayReadable: with retention keeping only 5 finished transactions
// and snapshots compacting the log, every transaction can still be read on every node
// (from the archive, "archived": true), a crashed and restarted node (log replay over its
// snapshot) archives nothing twice, and /v1/history lists them all.
func TestPrunedTransactionsStayReadable(t *testing.T) {
	urls := ackServer(t)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.SnapshotThreshold = 64
		cfg.Cluster.TrailingLogs = 32
		cfg.Cluster.SnapshotInterval = 50 * time.Millisecond
		cfg.Engine.Retention = coordinator.Retention{MaxFinished: 5, Every: 30 * time.Millisecond}
	}})
	leader := c.WaitLeader(10 * time.Second)
	var ids []string
	for k := 0; k < 60; k++ {
		code, out := post(t, c.Node(leader).URL(), urls, 5000)
		if code != http.StatusOK || out.Status != "committed" {
			t.Fatalf("POST %d: %d %+v", k, code, out)
		}
		ids = append(ids, out.TransactionID)
	}
	servertest.PastDeadlines(5000*time.Millisecond, 6, func() { post(t, c.Node(leader).URL(), urls, 5000) })
	// Every node has pruned all but a few, and archived them.
	err := c.Eventually(30*time.Second, func() error {
		for i := 0; i < c.Len(); i++ {
			a := c.Node(i).Archive
			if err := a.Sync(); err != nil {
				return err
			}
			if n := a.Stats().Records; n < 50 {
				return fmt.Errorf("node %d archived %d", i, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(2)
	c.StartNode(2)
	c.WaitLeader(10 * time.Second)
	for i := 0; i < c.Len(); i++ {
		var archived int
		for _, id := range ids {
			var v struct {
				httpapi.TransactionView
				Archived bool `json:"archived"`
			}
			err := c.Eventually(10*time.Second, func() error {
				if code := getJSON(t, c.Node(i).URL()+"/v1/transactions/"+id+"?consistency=stale", "", &v); code != http.StatusOK {
					return fmt.Errorf("node %d: GET %s: %d", i, id, code)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if v.Status != "committed" || len(v.Participants) != 3 || !v.Participants[0].Acknowledged {
				t.Fatalf("node %d: %s read back as %+v", i, id, v)
			}
			if v.Archived {
				archived++
			}
		}
		if archived < 50 {
			t.Fatalf("node %d: only %d of 60 answered from the archive", i, archived)
		}
		// The list covers the archive: each archived id once.
		seen := map[string]int{}
		after := ""
		for page := 0; page < 100; page++ {
			var p httpapi.HistoryPage
			if code := getJSON(t, c.Node(i).URL()+"/v1/history?limit=7&after="+after, "", &p); code != http.StatusOK {
				t.Fatalf("node %d: history: %d", i, code)
			}
			for _, v := range p.Transactions {
				seen[v.TransactionID]++
			}
			if after = p.Next; after == "" {
				break
			}
		}
		if len(seen) != c.Node(i).Archive.Stats().Records {
			t.Fatalf("node %d: history lists %d ids, the archive holds %d records", i, len(seen), c.Node(i).Archive.Stats().Records)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("node %d: %s archived %d times", i, id, n)
			}
		}
		if st := c.Node(i).Archive.Stats(); len(st.Gaps) != 0 {
			t.Fatalf("node %d: gaps %v", i, st.Gaps)
		}
		// /metrics tells the same (polled: a late Prune may land between two reads): the
		// records kept, their size, no gap, damage or error; nodes 0 and 1 ran throughout
		// and wrote every record they hold.
		if err := c.Eventually(10*time.Second, func() error {
			st := c.Node(i).Archive.Stats()
			body := scrape(t, c.Node(i).URL())
			if c.Node(i).Archive.Stats().Records != st.Records {
				return fmt.Errorf("node %d: archiving", i)
			}
			if v := gaugeValue(t, body, "txcoord_archive_records"); v != float64(st.Records) {
				return fmt.Errorf("node %d: txcoord_archive_records %v, the archive holds %d", i, v, st.Records)
			}
			if v := gaugeValue(t, body, "txcoord_archive_bytes"); v != float64(st.Bytes) || v < float64(20*st.Records) {
				return fmt.Errorf("node %d: txcoord_archive_bytes %v for %d records (%d bytes)", i, v, st.Records, st.Bytes)
			}
			if v := gaugeValue(t, body, "txcoord_archive_records_written_total"); i < 2 && v != float64(st.Records) {
				return fmt.Errorf("node %d: txcoord_archive_records_written_total %v, holds %d", i, v, st.Records)
			}
			for _, zero := range []string{"txcoord_archive_gaps", "txcoord_archive_write_errors_total", "txcoord_archive_records_skipped_total"} {
				if v := gaugeValue(t, body, zero); v != 0 {
					return fmt.Errorf("node %d: %s = %v", i, zero, v)
				}
			}
			if v := gaugeValue(t, body, "txcoord_archive_oldest_record_age_seconds"); v <= 0 {
				return fmt.Errorf("node %d: txcoord_archive_oldest_record_age_seconds = %v with %d records", i, v, st.Records)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupUnderLoadRestoresIntoFreshCluster: a backup saved from the leader while
// clients keep posting restores (cluster.RestoreBackup, peers.json, the recovery at start)
// into a new one-node cluster that holds exactly the source's state as of the backup's
// index: every transaction whose last change is at or before it is there, identical, and
// nothing later. The route needs the cluster token. The new cluster then takes new
// transactions, and its archive records the gap before the backup.
func TestBackupUnderLoadRestoresIntoFreshCluster(t *testing.T) {
	urls := ackServer(t)
	const token = "cluster-token-0123456789"
	tune := func(i int, cfg *server.Config) {
		ts, _ := httpapi.NewTokenSet(token)
		cfg.API.Auth = &httpapi.Auth{Cluster: ts}
		cfg.Cluster.SnapshotThreshold = 128
		cfg.Cluster.SnapshotInterval = 50 * time.Millisecond
	}
	src := servertest.Start(t, servertest.Options{Tune: tune})
	leader := src.WaitLeader(10 * time.Second)
	base := src.Node(leader).URL()

	var stop atomic.Bool
	var posted atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 2000 && !stop.Load(); k++ {
				if code, _ := postNoFatal(base, urls, 5000); code == http.StatusOK {
					posted.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	if err := src.Eventually(30*time.Second, func() error {
		if posted.Load() < 50 {
			return fmt.Errorf("%d posted", posted.Load())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code := getJSON(t, base+httpapi.SnapshotPath, "", nil); code != http.StatusUnauthorized {
		t.Fatalf("backup without the cluster token: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodGet, base+httpapi.SnapshotPath, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cluster.backup")
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d %s", resp.StatusCode, raw)
	}
	os.WriteFile(file, raw, 0o600)
	meta, err := cluster.VerifyBackup(file)
	if err != nil {
		t.Fatal(err)
	}
	// A cut or damaged file is refused.
	bad := filepath.Join(t.TempDir(), "cut.backup")
	os.WriteFile(bad, raw[:len(raw)-1], 0o600)
	if _, err := cluster.RestoreBackup(bad, t.TempDir(), nil); err == nil {
		t.Fatal("a cut backup restored")
	}
	more := posted.Load()
	if err := src.Eventually(30*time.Second, func() error {
		if posted.Load() < more+20 {
			return fmt.Errorf("load stalled during the backup")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	src.WaitConverged(30 * time.Second)
	source, _ := src.Node(leader).Node.FSM.Query(fsm.ListQuery{})

	restored := false
	dst := servertest.Start(t, servertest.Options{Nodes: 1, Tune: func(i int, cfg *server.Config) {
		tune(i, cfg)
		if restored {
			return
		}
		restored = true
		if _, err := cluster.RestoreBackup(file, cfg.Cluster.DataDir, nil); err != nil {
			t.Fatal(err)
		}
		if err := cluster.WritePeersJSON(cfg.Cluster.DataDir, []cluster.Peer{{ID: cfg.Cluster.NodeID, RaftAddr: cfg.Cluster.RaftBind}}); err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.RecoverIfRequested(cfg.Cluster.DataDir, cfg.Cluster.NodeID, nil); err != nil {
			t.Fatal(err)
		}
	}})
	dst.WaitLeader(20 * time.Second)
	// What the file holds, read into a bare FSM: the source's state as of meta.Index.
	inFile := map[string]*fsm.Txn{}
	bf, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	fromFile := fsm.New()
	if err := cluster.ReadBackup(bf, func(_ cluster.BackupMeta, state io.Reader) error { return fromFile.Restore(io.NopCloser(state)) }); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	fileList, _ := fromFile.Query(fsm.ListQuery{})
	for _, x := range fileList {
		inFile[x.ID] = x
	}
	got := map[string]*fsm.Txn{}
	list, _ := dst.Node(0).Node.FSM.Query(fsm.ListQuery{})
	for _, x := range list {
		got[x.ID] = x
	}
	want := 0
	for _, s := range source {
		r, ok := got[s.ID]
		switch {
		case s.Index <= meta.Index:
			want++
			if !ok || !reflect.DeepEqual(r, s) {
				t.Fatalf("%s (last change at %d, backup at %d): restored %+v, source %+v", s.ID, s.Index, meta.Index, r, s)
			}
		case ok && r.Index > meta.Index:
			// Changed by the source after the backup, and again by the restored cluster's
			// leader, which resumes what the backup has unfinished (docs/operations.md):
			// the file itself must hold the version before the backup's index.
			if f, ok := inFile[s.ID]; !ok || f.Index > meta.Index || f.Status.Terminal() {
				t.Fatalf("%s restored with a change after the backup's index, and the file has %+v", s.ID, f)
			}
		}
	}
	for id, f := range inFile {
		if f.Index > meta.Index {
			t.Fatalf("the backup holds %s with a change at %d, after its index %d", id, f.Index, meta.Index)
		}
		if _, ok := got[id]; !ok {
			t.Fatalf("the backup holds %s, the restored cluster does not", id)
		}
	}
	for id := range got {
		found := false
		for _, s := range source {
			found = found || s.ID == id
		}
		if !found {
			t.Fatalf("restored %s, which the source never had", id)
		}
	}
	t.Logf("source: %d transactions (%d posted); backup at index %d holds %d, restored %d", len(source), posted.Load(), meta.Index, want, len(got))
	if want < 20 {
		t.Fatalf("backup holds only %d transactions", want)
	}
	if code, out := post(t, dst.Node(0).URL(), urls, 5000); code != http.StatusOK || out.Status != "committed" {
		t.Fatalf("new transaction on the restored cluster: %d %+v", code, out)
	}
	if err := dst.Node(0).Archive.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := dst.Node(0).Archive.Stats(); len(st.Gaps) != 1 || st.Gaps[0].From != 0 {
		t.Fatalf("restored archive: %+v, want one gap from 0 (the archive was not copied)", st)
	}
}

// TestLaggingFollowerArchiveGap is the documented limit of the archive (docs/operations.md,
// section 8b): a follower that is down while the others prune and compact their logs is
// caught up by a snapshot (InstallSnapshot), so the Prunes in between never reach it. Its
// archive records that gap, its 404s for the transactions pruned meanwhile say so, and
// every one of them is found on the nodes that were up, whose /v1/history lists the whole
// history; what was archived before it went down and what is pruned after it is back is
// on the follower too.
func TestLaggingFollowerArchiveGap(t *testing.T) {
	urls := ackServer(t)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		cfg.Cluster.SnapshotThreshold = 64
		cfg.Cluster.TrailingLogs = 16
		cfg.Cluster.SnapshotInterval = 50 * time.Millisecond
		cfg.Engine.Retention = coordinator.Retention{MaxFinished: 5, Every: 30 * time.Millisecond}
	}})
	leader := c.WaitLeader(10 * time.Second)
	lag := (leader + 1) % 3
	postN := func(n int) []string {
		var ids []string
		for k := 0; k < n; k++ {
			l := c.Leader()
			if l < 0 {
				l = leader
			}
			code, out := post(t, c.Node(l).URL(), urls, 5000)
			if code != http.StatusOK || out.Status != "committed" {
				t.Fatalf("POST: %d %+v", code, out)
			}
			ids = append(ids, out.TransactionID)
		}
		return ids
	}
	archivedOn := func(i int, min int) {
		t.Helper()
		if err := c.Eventually(30*time.Second, func() error {
			if n := c.Node(i).Archive.Stats().Records; n < min {
				return fmt.Errorf("node %d archived %d, want %d", i, n, min)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := postN(30)
	servertest.PastDeadlines(5000*time.Millisecond, 6, func() { postN(1) })
	archivedOn(lag, 15)
	if err := c.Node(lag).Archive.Sync(); err != nil {
		t.Fatal(err)
	}
	var held []string // what the follower had archived when it went down
	for _, id := range before {
		if _, ok, _ := c.Node(lag).Archive.Get(id); ok {
			held = append(held, id)
		}
	}
	c.Stop(lag)
	during := postN(150)
	c.StartNode(lag)
	c.WaitLeader(30 * time.Second)
	after := postN(30)
	servertest.PastDeadlines(5000*time.Millisecond, 6, func() { postN(1) })
	healthy := (lag + 1) % 3
	archivedOn(healthy, 30+150+30-10)
	// The follower applies the same Prunes (after its snapshot) as the healthy node.
	if err := c.Eventually(30*time.Second, func() error {
		if err := c.Node(lag).Archive.Sync(); err != nil {
			return err
		}
		if a, b := c.Node(lag).Archive.Through(), c.Node(healthy).Archive.Through(); a < b {
			return fmt.Errorf("follower's archive through %d, node %d's %d", a, healthy, b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st := c.Node(lag).Archive.Stats()
	if len(st.Gaps) != 1 {
		t.Fatalf("the follower that was sent a snapshot: archive %+v, want one gap", st)
	}
	for i := 0; i < c.Len(); i++ {
		if g := c.Node(i).Archive.Stats().Gaps; i != lag && len(g) != 0 {
			t.Fatalf("node %d, up throughout, has gaps %v", i, g)
		}
	}
	get := func(i int, id string) (int, string) {
		resp, err := http.Get(c.Node(i).URL() + "/v1/transactions/" + id + "?consistency=stale")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	// Every transaction can be read on the nodes that were up; on the follower, all but
	// some pruned while it was away, whose 404 names the gap.
	missing := 0
	for _, id := range append(append(append([]string(nil), before...), during...), after...) {
		for i := 0; i < c.Len(); i++ {
			code, body := get(i, id)
			switch {
			case code == http.StatusOK:
			case i == lag && code == http.StatusNotFound && strings.Contains(body, "misses the transactions pruned in Raft index ranges ["+st.Gaps[0].String()+"]"):
				missing++
			default:
				t.Fatalf("node %d (follower that lagged: node %d): GET %s: %d %s", i, lag, id, code, body)
			}
		}
	}
	if missing == 0 {
		t.Fatal("the follower misses nothing: it was not caught up by a snapshot, the test injected no gap")
	}
	for _, id := range append(append([]string(nil), held...), after...) {
		if code, body := get(lag, id); code != http.StatusOK {
			t.Fatalf("the follower lacks %s, archived before it went down or begun after it came back: %d %s", id, code, body)
		}
	}
	// /v1/history of the follower names the gap; a node that was up lists everything
	// pruned (the full history an auditor wants).
	var p httpapi.HistoryPage
	if code := getJSON(t, c.Node(lag).URL()+"/v1/history?limit=1", "", &p); code != http.StatusOK || len(p.Gaps) != 1 {
		t.Fatalf("follower's history: %d, gaps %v", code, p.Gaps)
	}
	listed := map[string]bool{}
	next := ""
	for {
		var p httpapi.HistoryPage
		if code := getJSON(t, c.Node(healthy).URL()+"/v1/history?limit=1000&after="+next, "", &p); code != http.StatusOK {
			t.Fatalf("history: %d", code)
		}
		for _, v := range p.Transactions {
			listed[v.TransactionID] = true
		}
		if next = p.Next; next == "" {
			break
		}
	}
	for _, id := range append(append([]string(nil), before...), during...) {
		if !listed[id] {
			t.Fatalf("node %d (up throughout) does not list %s in its history", healthy, id)
		}
	}
	t.Logf("follower node %d: gap %v, %d of %d transactions not on it", lag, st.Gaps, missing, len(before)+len(during)+len(after))
}
