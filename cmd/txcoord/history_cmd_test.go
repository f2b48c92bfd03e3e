package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// clearCLIEnv keeps the developer's environment out of the CLI under test.
func clearCLIEnv(t *testing.T) {
	t.Setenv(envToken, "")
	t.Setenv(envAPITokens, "")
	t.Setenv(envClusterToken, "")
	t.Setenv("TXCOORD_NODE", "")
}

// submitMany submits n transactions to three fake participants; every third rolls back
// (the third participant votes NACK "sold out"). It returns each id's status.
func submitMany(t *testing.T, cl *servertest.Cluster, n int) map[string]string {
	t.Helper()
	fps := []*participanttest.FP{participanttest.New(t), participanttest.New(t), participanttest.New(t)}
	var urls []string
	for _, fp := range fps {
		urls = append(urls, fp.Endpoints().Prepare)
	}
	var nodes []string
	for i := 0; i < cl.Len(); i++ {
		nodes = append(nodes, cl.Node(i).URL())
	}
	c, err := client.New(nodes, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k := 0; k < n; k++ {
		if k%3 == 2 {
			fps[2].Set(participant.PhasePrepare, participanttest.NACK("sold out"))
		} else {
			fps[2].Set(participant.PhasePrepare, participanttest.ACK())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		o, err := c.Submit(ctx, client.Transaction{Services: client.Services(urls...), Timeout: 5 * time.Second})
		cancel()
		if err != nil {
			t.Fatalf("submit %d: %v", k, err)
		}
		out[o.TransactionID] = o.Status
	}
	return out
}

// exportHistory runs `txcoord history` with args and decodes its JSON lines.
func exportHistory(t *testing.T, args ...string) ([]httpapi.ArchivedView, string) {
	t.Helper()
	stdout, stderr, code := run(t, append([]string{"history"}, args...)...)
	if code != exitOK {
		t.Fatalf("history %v: exit %d: %s", args, code, stderr)
	}
	var out []httpapi.ArchivedView
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		var v httpapi.ArchivedView
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("history %v: line %q is not a transaction: %v", args, line, err)
		}
		out = append(out, v)
	}
	return out, stderr
}

func ids(vs []httpapi.ArchivedView) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.TransactionID)
	}
	return out
}

func createdMs(t *testing.T, v httpapi.ArchivedView) int64 {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, v.CreatedAt)
	if err != nil {
		t.Fatalf("%s: createdAt %q: %v", v.TransactionID, v.CreatedAt, err)
	}
	return at.UnixMilli()
}

// `txcoord history` run as an auditor would against a cluster that prunes all but 5
// finished transactions: every pruned transaction comes out once, as a JSON line with its
// outcome, votes and NACK reason and "archived": true, the same on every node; --from and
// --to (RFC 3339 or unix ms) split the export exactly at a creation time; a small --page
// gives the same lines; bad flags and an unreachable node give a clear error and the
// documented exit status.
func TestHistoryCommand(t *testing.T) {
	clearCLIEnv(t)
	cl := servertest.Start(t, servertest.Options{Tune: func(_ int, c *server.Config) {
		c.Cluster.SnapshotThreshold = 64
		c.Cluster.TrailingLogs = 32
		c.Cluster.SnapshotInterval = 50 * time.Millisecond
		c.Engine.Retention = coordinator.Retention{MaxFinished: 5, Every: 30 * time.Millisecond}
	}})
	leader := cl.WaitLeader(30 * time.Second)
	follower := (leader + 1) % 3
	posted := submitMany(t, cl, 30)
	// From feature level 3 a record is kept until its deadline is also before the prune's
	// cut-off (the retention horizon, docs/fast-path.md), and the count limit's cut-off is
	// the finish of the 6th newest. Once every posted deadline (5 s after its creation, on
	// this machine's clock) has passed, six more transactions move that cut-off past all 30,
	// and no deadline of theirs has passed it: the archive then holds exactly the 30.
	servertest.PastDeadlines(5*time.Second, 1, func() { maps.Copy(posted, submitMany(t, cl, 6)) })
	// Each node archives as it applies the Prunes.
	if err := cl.Eventually(60*time.Second, func() error {
		for i := 0; i < cl.Len(); i++ {
			if n := cl.Node(i).Archive.Stats().Records; n < 30 {
				return fmt.Errorf("node %d archived %d of %d", i, n, len(posted))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Once no Prune is in flight, every node exports the same transactions, one line per
	// record its archive holds.
	node := cl.Node(follower).URL()
	var all []httpapi.ArchivedView
	if err := cl.Eventually(60*time.Second, func() error {
		arc := cl.Node(follower).Archive
		if err := arc.Sync(); err != nil {
			return err
		}
		held := arc.Stats().Records
		var stderr string
		all, stderr = exportHistory(t, "--node", node)
		if stderr != "" {
			t.Fatalf("history of a node without gaps wrote to stderr: %s", stderr)
		}
		if len(all) != held || arc.Stats().Records != held {
			return fmt.Errorf("history printed %d lines, the node's archive holds %d records", len(all), held)
		}
		want := ids(all)
		slices.Sort(want)
		for i := 0; i < cl.Len(); i++ {
			other, _ := exportHistory(t, "--node", cl.Node(i).URL())
			got := ids(other)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("node %d exports %d transactions, node %d %d, or other ones", i, len(got), follower, len(want))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var sawReason bool
	for _, v := range all {
		status, ok := posted[v.TransactionID]
		switch {
		case !ok:
			t.Fatalf("history printed %s, which was never submitted", v.TransactionID)
		case seen[v.TransactionID]:
			t.Fatalf("history printed %s twice", v.TransactionID)
		case !v.Archived || v.Status != status || len(v.Participants) != 3 || v.FinishedAt == "":
			t.Fatalf("history line %+v: want archived, %s, 3 participants, finished", v, status)
		}
		seen[v.TransactionID] = true
		if status == api.StatusRolledBack {
			p := v.Participants[2]
			sawReason = sawReason || (p.Vote == "NACK" && p.Reason == "sold out")
			if p.Vote != "NACK" || p.Reason != "sold out" {
				t.Fatalf("rolled-back %s: third participant %+v, want its NACK and reason", v.TransactionID, p)
			}
		} else if !v.Participants[0].Acknowledged || v.Participants[0].Vote != "ACK" {
			t.Fatalf("committed %s: participant %+v, want ACK and acknowledged", v.TransactionID, v.Participants[0])
		}
	}
	if !sawReason {
		t.Fatal("no rolled-back transaction was exported (retention kept them all?)")
	}
	// The archive only grows at its end (a late Prune appends), so every later export
	// starts with these lines. A small page gives the same lines in the same order.
	if paged, _ := exportHistory(t, "--node", node, "--page", "3"); len(paged) < len(all) || !reflect.DeepEqual(paged[:len(all)], all) {
		t.Fatalf("--page 3 exported %d lines, not starting with the %d of --page 1000 in their order", len(paged), len(all))
	}

	// --from and --to select by creation time, [from, to): split at the median.
	times := make([]int64, 0, len(all))
	for _, v := range all {
		times = append(times, createdMs(t, v))
	}
	slices.Sort(times)
	split := times[len(times)/2]
	if split == times[0] {
		t.Fatalf("every archived transaction was created in the same ms %d: nothing to split", split)
	}
	splitRFC := time.UnixMilli(split).UTC().Format(time.RFC3339Nano)
	before, _ := exportHistory(t, "--node", node, "--to", splitRFC)
	after, _ := exportHistory(t, "--node", node, "--from", strconv.FormatInt(split, 10))
	got := map[string]bool{}
	for _, v := range before {
		if createdMs(t, v) >= split {
			t.Fatalf("--to %s printed %s, created at %s", splitRFC, v.TransactionID, v.CreatedAt)
		}
		got[v.TransactionID] = true
	}
	for _, v := range after {
		if createdMs(t, v) < split {
			t.Fatalf("--from %d printed %s, created at %s", split, v.TransactionID, v.CreatedAt)
		}
		got[v.TransactionID] = true
	}
	for _, v := range all {
		if !got[v.TransactionID] {
			t.Fatalf("%s (created %s) is in neither --to %s (%d lines) nor --from %d (%d lines)", v.TransactionID, v.CreatedAt, splitRFC, len(before), split, len(after))
		}
	}
	if len(before) == 0 || len(after) == 0 {
		t.Fatalf("split at the median creation time: %d before, %d after", len(before), len(after))
	}
	future := time.Now().Add(time.Hour).UnixMilli()
	if window, _ := exportHistory(t, "--node", node, "--from", strconv.FormatInt(times[0], 10), "--to", strconv.FormatInt(future, 10)); len(window) < len(all) {
		t.Fatalf("--from the oldest --to an hour from now: %d lines, want at least the %d", len(window), len(all))
	}
	if none, _ := exportHistory(t, "--node", node, "--from", strconv.FormatInt(future, 10)); len(none) != 0 {
		t.Fatalf("--from an hour from now: %d lines, want none", len(none))
	}

	// Bad flags, arguments and nodes: an error naming the problem, the documented status.
	for _, c := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"--node", node, "--from", "yesterday"}, exitUsage, "RFC 3339"},
		{[]string{"--node", node, "--to", "-5"}, exitUsage, "positive"},
		{[]string{"--node", node, "--page", "0"}, exitUsage, "--page"},
		{[]string{"--node", node, "--page", "1001"}, exitUsage, "--page"},
		{[]string{"--node", node, "--bogus"}, exitUsage, "unknown flag"},
		{[]string{"--node", node, "some-id"}, exitUsage, "unknown command"},
		{[]string{"--node", "http://127.0.0.1:1"}, exitError, "127.0.0.1:1"},
		{[]string{"--node", "::not a url"}, exitError, "--node"},
	} {
		stdout, stderr, code := run(t, append([]string{"history"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.say) || stdout != "" {
			t.Errorf("history %v: exit %d, stderr %q, stdout %q; want exit %d and %q", c.args, code, stderr, stdout, c.code, c.say)
		}
	}
}

// listAll returns `txcoord txn list --all -o json` of a node, sorted by id, without the
// read information (which names the node that answered).
func listAll(t *testing.T, node string) []api.TransactionView {
	t.Helper()
	stdout, stderr, code := run(t, "txn", "list", "--node", node, "--all", "-o", "json")
	var l api.TransactionList
	if code != exitOK || json.Unmarshal([]byte(stdout), &l) != nil {
		t.Fatalf("txn list --all on %s: exit %d: %s%s", node, code, stdout, stderr)
	}
	slices.SortFunc(l.Transactions, func(a, b api.TransactionView) int { return strings.Compare(a.TransactionID, b.TransactionID) })
	for i := range l.Transactions {
		l.Transactions[i].Read = nil
	}
	return l.Transactions
}

// noRaftState fails the test unless dir is empty or absent: a refused restore leaves the
// data directory as it found it (docs/operations.md), not even an empty snapshots/.
func noRaftState(t *testing.T, dir string) {
	t.Helper()
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %v after a refused restore, want nothing", dir, names)
	}
}

// `txcoord snapshot save` and `restore` as an operator runs them: save through a follower
// takes the leader's snapshot (the cluster token is needed; without it nothing is
// written), --local takes the follower's; damaged, cut or foreign files and bad flags are
// refused with a clear error and leave the data directory empty; the saved file restores
// (CLI restore, then the peers.json recovery txcoord serve runs at start) into a fresh
// cluster whose `txcoord txn list --all` equals the source's, which takes new
// transactions, and whose `txcoord history` warns that its archive lacks what the source
// pruned before the backup.
func TestSnapshotSaveRestoreCommands(t *testing.T) {
	clearCLIEnv(t)
	const token = "cli-cluster-token-0123456789"
	auth := func(c *server.Config) {
		k, _ := httpapi.NewTokenSet(token)
		c.API.Auth = &httpapi.Auth{Cluster: k}
	}
	src := servertest.Start(t, servertest.Options{Tune: func(_ int, c *server.Config) { auth(c) }})
	leader := src.WaitLeader(30 * time.Second)
	follower := (leader + 1) % 3
	submitMany(t, src, 20)
	node := src.Node(follower).URL()
	// An outcome is answered at the decision; wait for phase two to finish everywhere, so
	// that the restored cluster has nothing to resume and its list can equal the source's.
	var want []api.TransactionView
	if err := src.Eventually(30*time.Second, func() error {
		want = listAll(t, node)
		for _, v := range want {
			if v.Status != api.StatusCommitted && v.Status != api.StatusRolledBack {
				return fmt.Errorf("%s is %s", v.TransactionID, v.Status)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	src.WaitConverged(30 * time.Second)
	want = listAll(t, node)
	if len(want) != 20 {
		t.Fatalf("source lists %d transactions, want 20", len(want))
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.txcb")
	if _, stderr, code := run(t, "snapshot", "save", "--node", node, file); code != exitError || !strings.Contains(stderr, "401") {
		t.Fatalf("save without the cluster token: exit %d, %s", code, stderr)
	}
	if left, _ := filepath.Glob(file + "*"); len(left) != 0 {
		t.Fatalf("a refused save left %v", left)
	}
	t.Setenv(envClusterToken, token)
	stdout, stderr, code := run(t, "snapshot", "save", "--node", node, file)
	leaderID := src.Peer(leader).ID
	if code != exitOK || !strings.Contains(stdout, "saved "+file+": snapshot of node "+leaderID+" at index") {
		t.Fatalf("save: exit %d, %s%s (want the leader %s's snapshot)", code, stdout, stderr, leaderID)
	}
	local := filepath.Join(dir, "local.txcb")
	if stdout, stderr, code := run(t, "snapshot", "save", "--local", "--node", node, local); code != exitOK || !strings.Contains(stdout, "snapshot of node "+src.Peer(follower).ID+" ") {
		t.Fatalf("save --local: exit %d, %s%s (want the follower's own)", code, stdout, stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("save left %v", left)
	}

	// Refused: damaged files, bad flags. The data directory stays without Raft state.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(raw)
	flipped[len(flipped)/2] ^= 0x40
	bad := map[string][]byte{
		"cut.txcb":     raw[:len(raw)-1],
		"half.txcb":    raw[:len(raw)/2],
		"flipped.txcb": flipped,
		"empty.txcb":   nil,
		"foreign.txcb": []byte("PK\x03\x04 not a backup at all"),
		"longer.txcb":  append(slices.Clone(raw), 0),
	}
	restoreDir := filepath.Join(t.TempDir(), "n1")
	for name, b := range bad {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := run(t, "snapshot", "restore", p, "--data-dir", restoreDir, "--servers", "n1=127.0.0.1:7000")
		if code != exitError || !strings.Contains(stderr, "not a valid txcoord backup") || !strings.Contains(stderr, name) {
			t.Errorf("restore of %s: exit %d, %q; want exit 1 naming the file as not a valid backup", name, code, stderr)
		}
		noRaftState(t, restoreDir)
	}
	for _, c := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{file, "--servers", "n1=127.0.0.1:7000"}, exitUsage, "--data-dir"},
		{[]string{file, "--data-dir", restoreDir}, exitUsage, "--servers"},
		{[]string{file, "--data-dir", restoreDir, "--servers", "n1"}, exitUsage, "--servers"},
		{[]string{file, "--data-dir", restoreDir, "--servers", "n1=127.0.0.1:7000", "--archive-from", filepath.Join(dir, "no-such")}, exitUsage, "--archive-from"},
		{[]string{"--data-dir", restoreDir, "--servers", "n1=127.0.0.1:7000"}, exitUsage, "accepts 1 arg"},
		{[]string{filepath.Join(dir, "no-such.txcb"), "--data-dir", restoreDir, "--servers", "n1=127.0.0.1:7000"}, exitError, "no such file"},
	} {
		if _, stderr, code := run(t, append([]string{"snapshot", "restore"}, c.args...)...); code != c.code || !strings.Contains(stderr, c.say) {
			t.Errorf("restore %v: exit %d, %q; want exit %d and %q", c.args, code, stderr, c.code, c.say)
		}
		noRaftState(t, restoreDir)
	}
	if _, stderr, code := run(t, "snapshot", "save", "--node", node); code != exitUsage || !strings.Contains(stderr, "accepts 1 arg") {
		t.Errorf("save without FILE: exit %d, %q", code, stderr)
	}

	// The saved file restores, through the CLI, into a fresh one-node cluster.
	started := false
	dst := servertest.Start(t, servertest.Options{Nodes: 1, Tune: func(_ int, c *server.Config) {
		auth(c)
		if started {
			return
		}
		started = true
		stdout, stderr, code := run(t, "snapshot", "restore", file, "--data-dir", c.Cluster.DataDir, "--servers", c.Cluster.NodeID+"="+c.Cluster.RaftBind)
		if code != exitOK || !strings.Contains(stdout, "restored the snapshot of node "+leaderID) {
			t.Fatalf("restore: exit %d, %s%s", code, stdout, stderr)
		}
		// A second restore into the same directory is refused.
		if _, stderr, code := run(t, "snapshot", "restore", file, "--data-dir", c.Cluster.DataDir, "--servers", c.Cluster.NodeID+"="+c.Cluster.RaftBind); code != exitError || !strings.Contains(stderr, "already holds raft state") {
			t.Fatalf("restore into a restored directory: exit %d, %q", code, stderr)
		}
		// What txcoord serve does first with a data directory holding peers.json.
		if _, err := cluster.RecoverIfRequested(c.Cluster.DataDir, c.Cluster.NodeID, nil); err != nil {
			t.Fatal(err)
		}
	}})
	dst.WaitLeader(30 * time.Second)
	got := listAll(t, dst.Node(0).URL())
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("restored cluster lists %d transactions, the source %d, or different ones:\nrestored %+v\nsource   %+v", len(got), len(want), got, want)
	}
	if more := submitMany(t, dst, 1); len(more) != 1 {
		t.Fatal("the restored cluster took no transaction")
	}
	if err := dst.Node(0).Archive.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, stderr := exportHistory(t, "--node", dst.Node(0).URL()); !strings.Contains(stderr, "misses transactions pruned") {
		t.Fatalf("history of the restored node: stderr %q, want the gap before the backup named", stderr)
	}
}
