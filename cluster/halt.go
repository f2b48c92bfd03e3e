package cluster

import "github.com/txcoord/txcoord/fsm"

// onHalt runs on Raft's apply goroutine when the FSM meets an entry this build cannot apply
// (fsm.HaltError): it logs the fatal line and stops the node, as Nomad and rqlite do. The
// node must not go on: its state would differ from its peers' from that index on, and as a
// leader it would act on that. Raft's shutdown waits for the apply goroutine, so it runs
// on its own goroutine.
func (n *Node) onHalt(e *fsm.HaltError) {
	if !n.haltErr.CompareAndSwap(nil, e) {
		return
	}
	n.lg.Error("FATAL: stopping this node: "+e.Error(), "index", e.Index, "type", int(e.Type))
	close(n.halted)
	go func() { _ = n.Kill() }()
}

// Halted is closed when the node stopped itself because its FSM met a log entry it cannot
// apply; HaltError then says which. `txcoord serve` exits non-zero on it.
func (n *Node) Halted() <-chan struct{} { return n.halted }

// HaltError returns why the node halted, or nil.
func (n *Node) HaltError() error {
	if e := n.haltErr.Load(); e != nil {
		return e
	}
	return nil
}
