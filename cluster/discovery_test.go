package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestFormationThreeStartedAtOnce(t *testing.T) {
	rounds := 4
	if testing.Short() {
		rounds = 1
	}
	for r := 0; r < rounds; r++ {
		t.Run(fmt.Sprint("round", r), func(t *testing.T) {
			addrs := reservePorts(t, 3)
			ids := []string{"n1", "n2", "n3"}
			// Every node gets the same --join list (its own address included).
			dc := DiscoveryConfig{Join: addrs, BootstrapExpect: 3}
			f := newTestCluster(t, dc)
			nodes := f.startAll(ids, addrs, tempDirs(t, 3), dc)
			leader := f.waitCluster(nodes, ids, 15*time.Second)
			if b := bootstraps(nodes); b != 1 {
				t.Fatalf("%d nodes bootstrapped, want exactly 1", b)
			}
			if nodes[0].d.Bootstraps.Load() != 1 {
				t.Fatalf("the node with the lowest id did not bootstrap")
			}
			applyAndCheck(t, leader, nodes, "k1")
		})
	}
}

func TestFormationMoreNodesThanExpected(t *testing.T) {
	// Five nodes started at once with --bootstrap-expect 3 still form one cluster (of all
	// five: the founder bootstraps with its whole view, or the late ones join).
	addrs := reservePorts(t, 5)
	ids := []string{"a", "b", "c", "d", "e"}
	dc := DiscoveryConfig{Join: addrs, BootstrapExpect: 3}
	f := newTestCluster(t, dc)
	nodes := f.startAll(ids, addrs, tempDirs(t, 5), dc)
	leader := f.waitCluster(nodes, ids, 20*time.Second)
	if b := bootstraps(nodes); b != 1 {
		t.Fatalf("%d nodes bootstrapped, want exactly 1", b)
	}
	applyAndCheck(t, leader, nodes, "k")
}

func TestFormationStaggeredStart(t *testing.T) {
	// Nodes come up one by one (StatefulSet OrderedReady); the highest id starts first so
	// that the founder is the last to appear.
	addrs := reservePorts(t, 3)
	ids := []string{"n1", "n2", "n3"}
	dc := DiscoveryConfig{Join: addrs, BootstrapExpect: 3}
	f := newTestCluster(t, dc)
	dirs := tempDirs(t, 3)
	var nodes []*tnode
	for _, i := range []int{2, 1, 0} {
		nodes = append(nodes, f.start(ids[i], dirs[i], addrs[i], "", dc))
		time.Sleep(400 * time.Millisecond)
		if i > 0 && hasState(nodes[len(nodes)-1].n) {
			t.Fatalf("%s has state before %d nodes are present", ids[i], dc.BootstrapExpect)
		}
	}
	f.waitCluster(nodes, ids, 15*time.Second)
	if b := bootstraps(nodes); b != 1 {
		t.Fatalf("%d nodes bootstrapped, want exactly 1", b)
	}
}

func TestFormationByDNSName(t *testing.T) {
	// A headless Service: one name whose A records are every node, and each node advertised
	// by its own stable name (pod.svc). Fake DNS: peers.test -> 127.0.0.1-3, nK.test ->
	// 127.0.0.K, all on one port.
	port := freePortOnAll(t, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"})
	hosts := map[string]string{"n1.test": "127.0.0.1", "n2.test": "127.0.0.2", "n3.test": "127.0.0.3"}
	resolve := func(_ context.Context, host string) ([]string, error) {
		if host == "peers.test" {
			return []string{"127.0.0.3", "127.0.0.1", "127.0.0.2"}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	dc := DiscoveryConfig{Join: []string{"peers.test:" + port}, BootstrapExpect: 3, Resolve: resolve}
	f := newTestCluster(t, dc)
	f.dial = func(ctx context.Context, addr string) (net.Conn, error) {
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip, ok := hosts[host]; ok {
			host = ip
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort(host, p))
	}
	ids := []string{"n1", "n2", "n3"}
	nodes := make([]*tnode, 3)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i] = f.start(id, t.TempDir(), hosts[id+".test"]+":"+port, id+".test:"+port, dc)
		}()
	}
	wg.Wait()
	leader := f.waitCluster(nodes, ids, 15*time.Second)
	// The configuration names peers by DNS name, so a changed IP needs no membership change.
	for _, s := range leader.n.Raft.GetConfiguration().Configuration().Servers {
		if want := string(s.ID) + ".test:" + port; string(s.Address) != want {
			t.Fatalf("server %s has address %s, want %s", s.ID, s.Address, want)
		}
	}
	applyAndCheck(t, leader, nodes, "dns")
}

// freePortOnAll finds a port free on every given loopback IP.
func freePortOnAll(t *testing.T, ips []string) string {
	t.Helper()
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ips[0], err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ok := true
		var others []net.Listener
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", ip+":"+port)
			if err != nil {
				ok = false
				break
			}
			others = append(others, l)
		}
		ln.Close()
		for _, l := range others {
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Skip("no port free on every loopback address")
	return ""
}

// formThree forms a 3-node cluster n1..n3 and writes one entry.
func formThree(t *testing.T) (*testCluster, []*tnode, []string, DiscoveryConfig) {
	addrs := reservePorts(t, 4)
	dc := DiscoveryConfig{Join: addrs, BootstrapExpect: 3}
	f := newTestCluster(t, dc)
	ids := []string{"n1", "n2", "n3"}
	nodes := f.startAll(ids, addrs[:3], tempDirs(t, 3), dc)
	leader := f.waitCluster(nodes, ids, 15*time.Second)
	applyAndCheck(t, leader, nodes, "before")
	return f, nodes, addrs, dc
}

func TestFormationRestartedNodeNeverBootstraps(t *testing.T) {
	f, nodes, _, dc := formThree(t)
	ids := []string{"n1", "n2", "n3"}

	// One node restarts with its data and the same flags.
	old := nodes[0]
	f.stop(old)
	nodes[0] = f.start(old.id, old.dir, old.bind, "", dc)
	leader := f.waitCluster(nodes, ids, 15*time.Second)
	if b := nodes[0].d.Bootstraps.Load(); b != 0 {
		t.Fatalf("restarted node bootstrapped %d times", b)
	}
	applyAndCheck(t, leader, nodes, "after-one")

	// The whole cluster restarts at once (a full `docker compose restart`).
	for _, n := range nodes {
		f.stop(n)
	}
	dirs := []string{nodes[0].dir, nodes[1].dir, nodes[2].dir}
	binds := []string{nodes[0].bind, nodes[1].bind, nodes[2].bind}
	nodes = f.startAll(ids, binds, dirs, dc)
	leader = f.waitCluster(nodes, ids, 15*time.Second)
	if b := bootstraps(nodes); b != 0 {
		t.Fatalf("%d restarted nodes bootstrapped", b)
	}
	for _, n := range nodes {
		if _, ok := n.n.FSM.Members()["after-one"]; !ok {
			waitFor(t, 5*time.Second, func() bool { _, ok := n.n.FSM.Members()["after-one"]; return ok }, n.id+" replays its log")
		}
	}
	applyAndCheck(t, leader, nodes, "after-all")
}

func TestFormationFourthNodeJoins(t *testing.T) {
	f, nodes, addrs, dc := formThree(t)
	// n4 starts later with the same flags; its join list includes the others.
	n4 := f.start("n4", t.TempDir(), addrs[3], "", dc)
	all := append(nodes, n4)
	leader := f.waitCluster(all, []string{"n1", "n2", "n3", "n4"}, 15*time.Second)
	if b := n4.d.Bootstraps.Load(); b != 0 {
		t.Fatalf("the joining node bootstrapped")
	}
	applyAndCheck(t, leader, all, "with-four")
	if _, ok := n4.n.FSM.Members()["before"]; !ok {
		t.Fatalf("n4 does not hold the entries written before it joined")
	}
}

func TestFormationWipedNodeRejoins(t *testing.T) {
	f, nodes, _, dc := formThree(t)
	ids := []string{"n1", "n2", "n3"}
	// n1 (the founder) loses its data and comes back even with --bootstrap-expect 1: it
	// must rejoin the existing cluster, not found a second one.
	old := nodes[0]
	f.stop(old)
	if err := os.RemoveAll(old.dir); err != nil {
		t.Fatal(err)
	}
	dc1 := dc
	dc1.BootstrapExpect = 1
	nodes[0] = f.start(old.id, t.TempDir(), old.bind, "", dc1)
	leader := f.waitCluster(nodes, ids, 15*time.Second)
	if b := nodes[0].d.Bootstraps.Load(); b != 0 {
		t.Fatalf("the wiped node bootstrapped a new cluster")
	}
	waitFor(t, 5*time.Second, func() bool { _, ok := nodes[0].n.FSM.Members()["before"]; return ok }, "wiped node catches up")
	applyAndCheck(t, leader, nodes, "after-wipe")
}

func TestFormationNeverBootstrapsWithoutExpect(t *testing.T) {
	addrs := reservePorts(t, 2)
	dc := DiscoveryConfig{Join: addrs}
	f := newTestCluster(t, dc)
	a := f.start("a", t.TempDir(), addrs[0], "", dc)
	b := f.start("b", t.TempDir(), addrs[1], "", dc)
	time.Sleep(time.Second)
	if hasState(a.n) || hasState(b.n) {
		t.Fatalf("a node without --bootstrap-expect formed a cluster")
	}
	// Too few nodes for --bootstrap-expect 3 does not form one either.
	f.stop(a)
	f.stop(b)
	addrs = reservePorts(t, 3)
	dc = DiscoveryConfig{Join: addrs, BootstrapExpect: 3}
	a = f.start("a2", t.TempDir(), addrs[0], "", dc)
	b = f.start("b2", t.TempDir(), addrs[1], "", dc)
	time.Sleep(time.Second)
	if hasState(a.n) || hasState(b.n) {
		t.Fatalf("2 nodes formed a cluster with --bootstrap-expect 3")
	}
	// Probing shows why.
	pi, err := Probe(context.Background(), a.adv, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pi.HasState || pi.ID != "a2" || len(pi.View) != 2 || pi.BootstrapExpect != 3 {
		t.Fatalf("probe: %+v", pi)
	}
}

func TestParseJoin(t *testing.T) {
	got, err := ParseJoin(" 10.0.0.1:7000, txcoord-peers.ns.svc.cluster.local:7000 ,,")
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:7000", "txcoord-peers.ns.svc.cluster.local:7000"}) {
		t.Fatalf("ParseJoin = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.1", "host:", ":7000", "a:b:c"} {
		if _, err := ParseJoin(bad); err == nil {
			t.Errorf("ParseJoin(%q) accepted", bad)
		}
	}
}

func TestCheckAdvertise(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:7000", "txcoord-0.txcoord-peers:7000", "[::1]:7000"} {
		if err := CheckAdvertise(ok); err != nil {
			t.Errorf("CheckAdvertise(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:7000", "[::]:7000", ":7000", "host", "host:0", "host:x"} {
		if err := CheckAdvertise(bad); err == nil {
			t.Errorf("CheckAdvertise(%q) accepted", bad)
		}
	}
}

func TestStreamLayerRoutesRaftAndDiscovery(t *testing.T) {
	s, err := NewStreamLayer("127.0.0.1:0", "node-a.example:0", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, port, _ := net.SplitHostPort(s.ListenAddr().String())
	if got := s.Addr().String(); got != "node-a.example:"+port {
		t.Fatalf("Addr = %s", got)
	}
	got := make(chan string, 1)
	s.SetDiscoveryHandler(func(c net.Conn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	// A raft connection (first byte: an RPC type) reaches Accept with every byte.
	c1, err := net.Dial("tcp", s.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c1.Write([]byte{1, 'x', 'y'})
	rc, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(rc, buf); err != nil || string(buf) != "\x01xy" {
		t.Fatalf("raft conn read %q, %v", buf, err)
	}
	rc.Close()
	c1.Close()
	// A discovery connection goes to the handler without the magic byte.
	c2, err := net.Dial("tcp", s.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c2.Write([]byte{discoveryMagic, 'h', 'i'})
	c2.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "hi" {
			t.Fatalf("handler got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("discovery handler not called")
	}
	c2.Close()
	if _, err := NewStreamLayer("127.0.0.1:0", "0.0.0.0:7000", hclog.NewNullLogger()); err == nil {
		t.Fatal("0.0.0.0 accepted as advertise address")
	}
}

func TestRemovePeerScaleDown(t *testing.T) {
	f, nodes, addrs, dc := formThree(t)
	n4 := f.start("n4", t.TempDir(), addrs[3], "", dc)
	all := append(nodes, n4)
	leader := f.waitCluster(all, []string{"n1", "n2", "n3", "n4"}, 15*time.Second)
	// Ask a follower: it forwards to the leader.
	via := nodes[0]
	if via == leader {
		via = nodes[1]
	}
	ctx := context.Background()
	if err := RemovePeer(ctx, via.adv, "n4", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := RemovePeer(ctx, via.adv, "n4", 5*time.Second); err != nil {
		t.Fatalf("second removal: %v", err)
	}
	leader = f.waitCluster(nodes, []string{"n1", "n2", "n3"}, 10*time.Second)
	// The removed node, still running with its state, does not rejoin by itself.
	time.Sleep(time.Second)
	if got := voters(leader.n); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("voters after removal: %v", got)
	}
	applyAndCheck(t, leader, nodes, "after-remove")
	if err := RemovePeer(ctx, "127.0.0.1:1", "n4", time.Second); err == nil {
		t.Fatal("removal through an unreachable address succeeded")
	}
}

func TestRecoverAfterLostQuorum(t *testing.T) {
	f, nodes, _, dc := formThree(t)
	for _, n := range nodes {
		f.stop(n)
	}
	// n2 and n3 are gone for good. n1 alone has no quorum; peers.json naming only n1
	// makes it a cluster of one with its data.
	n1 := nodes[0]
	if err := WritePeersJSON(n1.dir, []Peer{{ID: "n1", RaftAddr: n1.adv}}); err != nil {
		t.Fatal(err)
	}
	lg := f.logger("recover")
	if _, err := RecoverIfRequested(n1.dir, "n2", lg); err == nil {
		t.Fatal("a peers.json that does not name the node was applied")
	}
	done, err := RecoverIfRequested(n1.dir, "n1", lg)
	if err != nil || !done {
		t.Fatalf("recover: %v, %v", done, err)
	}
	if done, err := RecoverIfRequested(n1.dir, "n1", lg); done || err != nil {
		t.Fatalf("peers.json applied twice: %v %v", done, err)
	}
	if m, _ := filepath.Glob(filepath.Join(n1.dir, PeersJSON+".applied-*")); len(m) != 1 {
		t.Fatalf("applied file: %v", m)
	}
	r := f.start("n1", n1.dir, n1.bind, "", dc)
	leader := f.waitCluster([]*tnode{r}, []string{"n1"}, 10*time.Second)
	if r.d.Bootstraps.Load() != 0 {
		t.Fatal("the recovered node bootstrapped")
	}
	if _, ok := leader.n.FSM.Members()["before"]; !ok {
		t.Fatal("the recovered node lost its data")
	}
	applyAndCheck(t, leader, []*tnode{r}, "after-recovery")
}

func TestRestoreFromSnapshotBackup(t *testing.T) {
	f, nodes, _, dc := formThree(t)
	leader := f.waitCluster(nodes, []string{"n1", "n2", "n3"}, 5*time.Second)
	applyAndCheck(t, leader, nodes, "in-backup")
	if err := nodes[1].n.Raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(nodes[1].dir, "snapshots", "*"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot directory")
	}
	slices.Sort(snaps)
	backup := snaps[len(snaps)-1] // the newest: term-index-time sorts by term, then index
	for _, n := range nodes {
		f.stop(n)
	}
	// Restore into a fresh data dir from a backup holding only snapshots/<backup>/, with a
	// peers.json naming the node that will hold it.
	from := t.TempDir()
	dst := filepath.Join(from, "snapshots", filepath.Base(backup))
	if err := os.MkdirAll(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"meta.json", "state.bin"} {
		raw, err := os.ReadFile(filepath.Join(backup, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), raw, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := RestoreDataDir(from, dir); err != nil {
		t.Fatal(err)
	}
	if err := RestoreDataDir(from, dir); err == nil {
		t.Fatal("restored twice into the same directory")
	}
	if err := RestoreDataDir(t.TempDir(), t.TempDir()); err == nil {
		t.Fatal("restored from an empty backup")
	}
	addr := reservePorts(t, 1)[0]
	if err := WritePeersJSON(dir, []Peer{{ID: "r1", RaftAddr: addr}}); err != nil {
		t.Fatal(err)
	}
	if done, err := RecoverIfRequested(dir, "r1", f.logger("recover")); err != nil || !done {
		t.Fatalf("recover: %v %v", done, err)
	}
	dc.Join = []string{addr}
	r := f.start("r1", dir, addr, "", dc)
	leader = f.waitCluster([]*tnode{r}, []string{"r1"}, 10*time.Second)
	if _, ok := leader.n.FSM.Members()["in-backup"]; !ok {
		t.Fatal("the restored node does not hold the backup's data")
	}
	applyAndCheck(t, leader, []*tnode{r}, "after-restore")
}
