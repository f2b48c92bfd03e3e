package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// ErrStorage marks a failed write to this node's Raft log (raft.db: disk full, I/O error).
// An Apply that fails with it wrote nothing: hashicorp/raft stores an entry on the leader
// before it replicates it, and on a failed store answers the entry's future with the error
// and steps down. Clients get 503 unavailable for it, never 500.
var ErrStorage = errors.New("raft storage write failed")

// WriteProber is optionally implemented by a LogStore that Config.WrapLogStore returns
// (tests inject faults with one): ProbeWrite says whether a write would succeed now. Without
// it the node probes by writing a small key to the stable store, which lives in the same
// raft.db file.
type WriteProber interface {
	ProbeWrite() error
}

// storageOutOfElections is the heartbeat and election timeout a node runs with while its log
// writes fail: in effect it never starts an election (raft reloads these at run time), so a
// leader that stepped down because it could not write does not win the next election and
// step down again, over and over. It still votes and follows. (It also keeps its last
// leader in mind, so it refuses pre-votes while that leader is silent; that matters only
// when the healthy nodes alone are no quorum, and then nothing can commit anyway: the full
// node cannot store the entries.)
const storageOutOfElections = 100_000 * time.Hour

// guardedLogs wraps the log store: a failed write is reported to the node (which keeps this
// node out of elections until writes work again) and marked with ErrStorage.
type guardedLogs struct {
	raft.LogStore
	failed func(error)
}

func (g *guardedLogs) StoreLog(l *raft.Log) error {
	return g.check(g.LogStore.StoreLog(l))
}

func (g *guardedLogs) StoreLogs(ls []*raft.Log) error {
	return g.check(g.LogStore.StoreLogs(ls))
}

// IsMonotonic passes the inner store's answer on (raft.MonotonicLogStore).
func (g *guardedLogs) IsMonotonic() bool {
	m, ok := g.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (g *guardedLogs) check(err error) error {
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrStorage) {
		err = fmt.Errorf("%w: %w", ErrStorage, err)
	}
	g.failed(err)
	return err
}

// storageHealth is what the node knows of its log writes.
type storageHealth struct {
	mu     sync.Mutex
	err    error     // the last failed write while failing, nil while writes work
	since  time.Time // when writes started to fail
	kick   chan struct{}
	probe  func() error
	normal raft.ReloadableConfig // the timeouts to restore once writes work
}

// storageFailed runs on Raft's goroutine when a log write fails (on the leader Raft steps
// down right after). It must not block: the storage monitor does the rest.
func (n *Node) storageFailed(err error) {
	h := &n.storage
	h.mu.Lock()
	first := h.err == nil
	h.err = err
	if first {
		h.since = time.Now()
	}
	h.mu.Unlock()
	if first {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// StorageError returns the last failed log write while writes fail, or nil.
func (n *Node) StorageError() error {
	n.storage.mu.Lock()
	defer n.storage.mu.Unlock()
	return n.storage.err
}

// runStorageMonitor keeps a node whose log writes fail out of elections, and lets it back in
// once a probe write succeeds. It probes every interval while failing, and stops with the
// node.
func (n *Node) runStorageMonitor(interval time.Duration) {
	h := &n.storage
	for {
		select {
		case <-n.stop:
			return
		case <-n.halted:
			return
		case <-h.kick:
		}
		err := n.StorageError()
		if err == nil {
			continue
		}
		n.lg.Error("raft log writes fail: this node stays out of elections until they work again (free disk space or fix the disk under the data directory)",
			"data-dir", n.cfg.DataDir, "error", err)
		h.normal = n.Raft.ReloadableConfig()
		out := h.normal
		out.HeartbeatTimeout, out.ElectionTimeout = storageOutOfElections, storageOutOfElections
		if rerr := n.Raft.ReloadConfig(out); rerr != nil {
			n.lg.Error("could not keep this node out of elections", "error", rerr)
		}
		if !n.waitStorage(interval) {
			return
		}
		if rerr := n.Raft.ReloadConfig(h.normal); rerr != nil {
			n.lg.Error("could not restore the election timeouts", "error", rerr)
		}
		h.mu.Lock()
		since := h.since
		h.err = nil
		h.mu.Unlock()
		n.lg.Info("raft log writes work again: this node takes part in elections again", "failed-for", time.Since(since).Round(time.Millisecond))
	}
}

// waitStorage probes every interval until a write succeeds (true) or the node stops (false).
func (n *Node) waitStorage(interval time.Duration) bool {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return false
		case <-n.halted:
			return false
		case <-t.C:
		}
		if err := n.storage.probe(); err != nil {
			n.lg.Debug("storage probe failed", "error", err)
			continue
		}
		return true
	}
}

// storageProbe returns the write probe for logs (its ProbeWrite) or a write to stable.
func storageProbe(logs raft.LogStore, stable raft.StableStore) func() error {
	if p, ok := logs.(WriteProber); ok {
		return p.ProbeWrite
	}
	return func() error {
		return stable.Set([]byte("txcoord_write_probe"), []byte(strconv.FormatInt(time.Now().UnixNano(), 10)))
	}
}

// storageGuard refuses leadership while log writes fail (part of CanLead): a node that won
// an election or was handed leadership hands it on.
func (n *Node) storageGuard() error {
	if err := n.StorageError(); err != nil {
		return fmt.Errorf("raft log writes fail: %w", err)
	}
	return nil
}
