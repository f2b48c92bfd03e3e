package cluster

// Bootstrap with a static peer list (--peers): ask first.
//
// hashicorp/raft's rule is to bootstrap exactly once, never over a cluster that exists. A
// node that opens with Raft state never bootstraps. A node with an empty store that was
// given Peers does not bootstrap at once (as builds before issue 12 did: after a lost
// quorum and a peers.json recovery, two wiped nodes restarted with their original --peers
// formed a new, empty cluster and took the survivor in as a follower). It runs rounds in
// the background, every Interval, until it has state:
//
//  1. It probes every other listed peer on its Raft port (the discovery protocol's "info",
//     which every node answers, whatever its mode).
//  2. If any peer that answered has Raft state or knows a leader, a cluster exists: this
//     node never bootstraps. It asks that cluster's leader to add it (Node.Join: a
//     non-voter first, promoted by autopilot once caught up and stable), and waits for the
//     leader's log to reach it. An operator may add it instead (txcoord cluster join).
//  3. Otherwise, once every listed peer answered in the same round, as the id the list
//     gives it, with no state and no leader, it bootstraps with exactly the list. Every
//     node of a new cluster may do so; they all write the same configuration, which raft
//     accepts (the classic static bootstrap), and a node that receives the configuration
//     from another's AppendEntries first simply has state and stops.
//
// So a node never bootstraps while a listed peer is down or unreachable: a new cluster
// forms only when all its listed nodes are up and empty (Consul's bootstrap_expect with
// the whole list). Why no second cluster forms: a node bootstraps only after every other
// listed node answered "no state, no leader" in that round. A node with state (a survivor,
// a recovered node) answers "state" as long as it runs, and while it is down it answers
// nothing, which stops every bootstrap until it is back; so an empty node can bootstrap
// only when no listed node has state, i.e. when no cluster of these nodes exists. Nodes
// that bootstrap together write the same configuration. What this cannot catch is lists
// that differ between nodes (a misconfiguration): every node must get the same --peers.
// Peers that run a build without the discovery protocol never answer, so an empty node
// waits for them; add it with txcoord cluster join instead.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// staticInterval is the pause between two rounds of the static bootstrap.
const staticInterval = time.Second

// bootstrapStatic writes the static configuration (every peer a voter).
func (n *Node) bootstrapStatic() error {
	conf := raft.Configuration{}
	for _, p := range n.cfg.Peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if err := n.Raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap: %w", err)
	}
	n.bootstrapped.Store(true)
	n.lg.Info("bootstrapped a new cluster: every listed peer answered with no state", "peers", len(n.cfg.Peers))
	return nil
}

// Bootstrapped reports whether this process bootstrapped a new cluster from the static
// peer list (Config.Peers); formation by discovery counts in Discovery.Bootstraps.
func (n *Node) Bootstrapped() bool { return n.bootstrapped.Load() }

// formStatic runs the rounds of the package doc above until this node has state or stops.
func (n *Node) formStatic() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	interval := n.cfg.StaticBootstrapInterval
	for i := 0; ; i++ {
		if hasState(n) {
			n.lg.Info("node is a cluster member", "last_index", n.Raft.LastIndex())
			return
		}
		if done := n.staticRound(ctx, i); done {
			return
		}
		if !sleep(ctx, jitter(interval)) {
			return
		}
	}
}

// staticRound runs one round; it reports whether the node bootstrapped.
func (n *Node) staticRound(ctx context.Context, i int) bool {
	var (
		mu      sync.Mutex
		answers = map[string]PeerInfo{}
		errs    = map[string]string{}
		wg      sync.WaitGroup
	)
	for _, p := range n.cfg.Peers {
		if p.ID == n.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func(p Peer) {
			defer wg.Done()
			pi, err := n.probe(ctx, p.RaftAddr, 2*time.Second)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs[p.ID] = err.Error()
			case !pi.Ready:
				errs[p.ID] = "still starting"
			case pi.ID != p.ID:
				errs[p.ID] = fmt.Sprintf("%s answers as %q: check --peers", p.RaftAddr, pi.ID)
			default:
				answers[p.ID] = pi
			}
		}(p)
	}
	wg.Wait()
	if ctx.Err() != nil || hasState(n) {
		return false
	}
	var members []PeerInfo
	for _, pi := range answers {
		if pi.HasState || pi.LeaderID != "" {
			members = append(members, pi)
		}
	}
	if len(members) > 0 {
		sort.Slice(members, func(a, b int) bool { return members[a].ID < members[b].ID })
		if i%10 == 0 {
			n.lg.Info("a cluster exists among the listed peers: not bootstrapping; asking its leader to add this node",
				"peer", members[0].ID, "leader", members[0].LeaderID)
		}
		n.askStaticJoin(ctx, members)
		return false
	}
	if len(errs) > 0 {
		if i%10 == 0 {
			var why []string
			for id, e := range errs {
				why = append(why, id+": "+e)
			}
			sort.Strings(why)
			n.lg.Info("not bootstrapping yet: every listed peer must answer with no state first", "waiting_for", strings.Join(why, "; "))
		}
		return false
	}
	if err := n.bootstrapStatic(); err != nil {
		n.lg.Error("bootstrap failed", "error", err)
		return false
	}
	return true
}

// askStaticJoin asks the leader of the cluster the members belong to to add this node.
func (n *Node) askStaticJoin(ctx context.Context, members []PeerInfo) {
	if n.dial == nil {
		return // a test transport: an operator (or the test) joins it
	}
	req := discoveryRequest{Op: "join", From: ViewEntry{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAdvertise}, HTTPAddr: n.cfg.HTTPAdvertise, LastIndex: n.Raft.LastIndex()}
	for _, pi := range members {
		target := pi.RaftAddr
		if pi.LeaderRaftAddr != "" {
			target = pi.LeaderRaftAddr
		}
		for hop := 0; hop < 3 && target != ""; hop++ {
			ok, next := askToJoin(ctx, n.dial, n.lg, target, req)
			if ok {
				return
			}
			target = next
		}
	}
}
