package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/fsm"
)

// stuckTransport is a Raft transport whose AppendEntries, once stuck is set, never
// returns until the test ends, whatever the deadline or a Close: a replication goroutine
// parked for good, as seen under load.
type stuckTransport struct {
	raft.Transport
	stuck   atomic.Bool
	parked  atomic.Int64 // calls parked so far
	release chan struct{}
}

func (s *stuckTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if s.stuck.Load() {
		s.parked.Add(1)
		<-s.release
		return errors.New("stuck transport released")
	}
	return s.Transport.AppendEntries(id, target, args, resp)
}

func (s *stuckTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (s *stuckTransport) Close() error { return s.Transport.(raft.WithClose).Close() }

// TestStopReturnsWhenRaftShutdownIsStuck: the leader's sends to its followers park for
// good, so Raft's Shutdown would wait for its replication goroutines forever. Stopping the
// node (Kill, and Close as on an operator's SIGTERM) still returns, within the grace
// periods, with ErrShutdownAbandoned, and the other two nodes elect a leader and commit.
func TestStopReturnsWhenRaftShutdownIsStuck(t *testing.T) {
	for _, stop := range []string{"Kill", "Close"} {
		t.Run(stop, func(t *testing.T) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) }) // runs after the cluster's cleanup
			trs := make([]*stuckTransport, 3)
			c := startCluster(t, clusterOptions{config: func(i int, cfg *Config) {
				trs[i] = &stuckTransport{Transport: cfg.Transport, release: release}
				cfg.Transport = trs[i]
			}})
			l := c.waitReadyLeader(30*time.Second, nil, "a ready leader")
			var lt *stuckTransport
			for i, tn := range c.nodes {
				if tn == l {
					lt = trs[i]
				}
			}
			lt.stuck.Store(true)
			waitFor(t, 10*time.Second, func() bool { return lt.parked.Load() > 0 }, "a send of the leader to park")
			start := time.Now()
			var err error
			if stop == "Kill" {
				err = l.n.Kill()
			} else {
				err = l.n.Close()
			}
			took := time.Since(start)
			if !errors.Is(err, ErrShutdownAbandoned) {
				t.Fatalf("%s of the stuck leader: %v after %s, want ErrShutdownAbandoned", stop, err, took)
			}
			// The grace periods, plus Close's leadership transfer, plus slack for a loaded
			// machine: bounded, not forever.
			if limit := shutdownGrace + shutdownAbandon + 30*time.Second; took > limit {
				t.Fatalf("%s took %s, more than %s", stop, took, limit)
			}
			t.Logf("%s of the stuck leader returned after %s", stop, took)
			other := c.waitOtherLeader(l, 30*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := other.n.Apply(ctx, &fsm.SetMember{NodeID: "after-stop", HTTPAddr: "10.9.9.9:8080"}); err != nil {
				t.Fatalf("the remaining nodes cannot commit: %v", err)
			}
		})
	}
}
