package fsm

// Archiver receives what leaves the replicated state, so that a node can keep a history of
// every finished transaction (package archive) while the FSM itself stays deterministic
// and free of I/O. Set it with SetArchiver before Raft starts.
//
// Every method is called from the goroutine that drives the FSM (Raft's apply goroutine,
// or Raft's snapshot goroutine for Covered), outside the FSM's lock.
type Archiver interface {
	// Pruned hands over the records a Prune entry at Raft index index removed, in no
	// particular order. The records are immutable. It must not block: Apply waits for it.
	// Replaying the log (after a restart or a snapshot restore) hands the same records
	// with the same index again; the archiver skips indexes it already holds.
	Pruned(index uint64, txns []*Txn)
	// Covered is called by Persist before a snapshot of the state at applied index index
	// is written: it returns once everything Pruned handed over with an index up to
	// index is durable, so that no snapshot ever replaces log entries whose records the
	// archive does not hold yet. An error fails the snapshot (Raft retries later).
	Covered(index uint64) error
	// Restored says the state was replaced by a snapshot taken at applied index index: any
	// Prune between what the archiver holds and index will not be handed over.
	Restored(index uint64)
}

// archiveHook is the FSM's side of the Archiver: embedded in FSM.
type archiveHook struct {
	archiver Archiver
	pruned   []*Txn // records the entry being applied removed; under mu
}

// SetArchiver sets the Archiver that receives pruned records (nil: none). Call it before
// Raft starts.
func (f *FSM) SetArchiver(a Archiver) {
	f.mu.Lock()
	f.archiver = a
	f.mu.Unlock()
}

// prunedRecord remembers t, which the entry being applied removes. It runs under f.mu.
func (f *FSM) prunedRecord(t *Txn) {
	if f.archiver != nil {
		f.pruned = append(f.pruned, t)
	}
}

// takePruned returns the records the entry just applied removed and the archiver to hand
// them to. It runs under f.mu.
func (f *FSM) takePruned() (Archiver, []*Txn) {
	p := f.pruned
	f.pruned = nil
	return f.archiver, p
}
