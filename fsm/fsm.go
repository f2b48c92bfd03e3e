// Package fsm is txcoord's replicated state: the transaction records, the commands that
// change them, their compact encoding, and the raft.FSM that applies them.
//
// Apply is deterministic and free of I/O: no clock, no randomness, no network, no ids minted
// inside it. Every id and timestamp arrives in the command, stamped by the leader before it
// proposed it, so replaying the log on any node rebuilds the same state and never calls a
// participant. The first decision for a transaction wins; later commands that would change
// it are refused with an error, and the caller acts on what the FSM holds.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Errors returned in Result.Err. They are deterministic: every node returns the same one
// for the same entry.
var (
	// ErrExists: Begin for an id that is already in the FSM.
	ErrExists = errors.New("transaction already exists")
	// ErrKeyExists: Begin with an idempotency key already bound to another transaction;
	// Result.Txn is that transaction.
	ErrKeyExists = errors.New("idempotency key already used")
	// ErrNotFound: the command names an unknown transaction.
	ErrNotFound = errors.New("transaction not found")
	// ErrDecided: a Decide after another decision was logged; Result.Txn holds the winner.
	ErrDecided = errors.New("transaction already decided")
	// ErrBadTransition: the command does not apply to the transaction's status.
	ErrBadTransition = errors.New("command does not apply in this status")
	// ErrInvalid: the command is malformed (e.g. a vote count that does not match the
	// participant count).
	ErrInvalid = errors.New("invalid command")
)

// Result is what Apply returns for each entry: the transaction after the command (or the
// one that blocked it) and a deterministic error.
type Result struct {
	Txn *Txn
	Err error
}

type keyEntry struct {
	ID        string
	CreatedAt int64 // unix ms of the transaction it names
}

// FSM implements raft.FSM. The zero value is not usable; call New.
type FSM struct {
	mu   sync.RWMutex
	txns map[string]*Txn
	// active holds the ordered indexes over txns (index.go): every record, those of each
	// status and those not in a terminal status.
	active  *index
	keys    map[string]keyEntry
	members map[string]string // node id -> HTTP address
	// endpoints is the participant table Define fills and Begin refers into; append-only.
	endpoints   []Participant
	endpointIdx map[Participant]uint32
	applied     uint64 // Raft index of the last applied entry
	// level is the feature level the cluster has enabled (SetFeatures); commands of a
	// higher level are refused. Persisted in snapshots (version 3 on).
	level uint32
	// lastTs is the latest timestamp (unix ms) any applied command carried: the log's own
	// clock, which retention compares the leader's wall clock against. Persisted in
	// snapshots (version 3 on).
	lastTs int64
	// horizon is the retention horizon (Horizon, inquiry.go), unix ms. Persisted in
	// snapshots (version 5 on).
	horizon int64
	// halted is set when an entry could not be applied; nothing is applied after it.
	halted *HaltError
	onHalt func(*HaltError)

	// archive.go: the records Prune removes, for the node's history.
	archiveHook

	wmu      sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
	// idxWaiters are WaitApplied calls; nIdxWaiters lets Apply skip wmu when there is none.
	idxWaiters  map[chan struct{}]uint64
	nIdxWaiters atomic.Int32
}

// New returns an empty FSM.
func New() *FSM {
	return &FSM{
		txns:        map[string]*Txn{},
		active:      newIndex(),
		keys:        map[string]keyEntry{},
		members:     map[string]string{},
		endpointIdx: map[Participant]uint32{},
		watchers:    map[string]map[chan struct{}]struct{}{},
		idxWaiters:  map[chan struct{}]uint64{},
	}
}

// Apply implements raft.FSM. It returns a Result for command entries.
//
// An entry this build cannot decode, or whose type it does not know (a newer build wrote
// it), halts the FSM instead of being skipped: skipping would leave this node's state behind
// its peers' (an old follower would keep in preparing a transaction the others committed)
// and, as a leader, it would act on that (Nomad and rqlite stop the same way). The entry
// and every later one stay unapplied, AppliedIndex stays before it, and the handler set
// with OnHalt stops the node. A type with the IgnoreUnknown bit is the one exception: a
// build that does not know it skips it.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if err := f.Halted(); err != nil {
		return Result{Err: err}
	}
	cmd, err := Decode(l.Data)
	switch {
	case errors.Is(err, ErrSkippable):
		f.mu.Lock()
		f.applied = max(f.applied, l.Index)
		f.mu.Unlock()
		f.notifyIndex(l.Index)
		return Result{}
	case err != nil:
		var typ CommandType
		if len(l.Data) > 0 {
			typ = CommandType(l.Data[0])
		}
		return Result{Err: f.halt(&HaltError{Index: l.Index, Type: typ, Err: err})}
	}
	return f.ApplyCommand(l.Index, cmd)
}

// ApplyCommand applies one decoded command as if it were the log entry at index. Tests and
// tools use it to drive the FSM without Raft; Raft goes through Apply.
func (f *FSM) ApplyCommand(index uint64, cmd Command) Result {
	f.mu.Lock()
	if f.halted != nil {
		err := f.halted
		f.mu.Unlock()
		return Result{Err: err}
	}
	var res Result
	var changed []string
	if need := RequiredLevel(cmd.Type()); need > f.level {
		// A correct leader never proposes it (cluster.Node.Apply refuses first); refusing
		// it here keeps every node's state the same if one did.
		res = Result{Err: fmt.Errorf("%w: command type %d needs feature level %d, the cluster has %d", ErrInvalid, cmd.Type(), need, f.level)}
	} else {
		res, changed = cmd.apply(f, index)
	}
	halted := f.halted
	if halted == nil {
		f.applied = max(f.applied, index)
	}
	arch, pruned := f.takePruned()
	f.mu.Unlock()
	if len(pruned) > 0 {
		arch.Pruned(index, pruned)
	}
	if halted != nil {
		f.haltNotify(halted)
		return Result{Err: halted}
	}
	for _, id := range changed {
		f.notify(id)
	}
	f.notifyIndex(index)
	return res
}

func (f *FSM) put(t *Txn) {
	old := f.txns[t.ID]
	f.txns[t.ID] = t
	f.active.replace(old, t)
}

// drop removes a record (Prune).
func (f *FSM) drop(t *Txn) {
	delete(f.txns, t.ID)
	f.active.remove(t)
}

// applyPhaseTwoReports records phase-two reports on a transaction in committing or
// rolling_back (Progress); then, when set, changes it further (Fail). It runs under f.mu.
func (f *FSM) applyPhaseTwoReports(index uint64, id string, reports []Report, then func(*Txn)) (Result, []string) {
	old, ok := f.txns[id]
	if !ok {
		return Result{Err: ErrNotFound}, nil
	}
	if old.Status != StatusCommitting && old.Status != StatusRollingBack {
		return Result{Txn: old, Err: ErrBadTransition}, nil
	}
	t := old.clone()
	applyReports(t, reports)
	t.Index = index
	if then != nil {
		then(t)
	}
	f.put(t)
	return Result{Txn: t}, []string{id}
}

func finalStatus(d Decision) Status {
	if d == DecisionCommit {
		return StatusCommitted
	}
	return StatusRolledBack
}

func applyReports(t *Txn, rs []Report) {
	for i := range t.States {
		if i >= len(rs) {
			break
		}
		st := &t.States[i]
		st.Acked = st.Acked || rs[i].Acked
		st.Attempts = rs[i].Attempts
		st.LastError = rs[i].Error
		if st.Acked {
			st.LastError = ""
		}
	}
}

// Get returns the record for id, or nil and false.
func (f *FSM) Get(id string) (*Txn, bool) {
	f.mu.RLock()
	t, ok := f.txns[id]
	f.mu.RUnlock()
	return t, ok
}

// ByKey returns the transaction that idempotency key names, if it is still kept.
func (f *FSM) ByKey(key string) (*Txn, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k, ok := f.keys[key]
	if !ok {
		return nil, false
	}
	t, ok := f.txns[k.ID]
	return t, ok
}

// Active returns every transaction not in a terminal status, oldest first (by CreatedAt,
// then id). A new leader resumes each of them.
func (f *FSM) Active() []*Txn {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Txn, 0, f.active.active.Len())
	f.active.active.Ascend(func(t *Txn) bool {
		out = append(out, t)
		return true
	})
	return out
}

// List returns up to limit transactions (<= 0: all) with ids greater than after, ordered
// by id; with a non-zero status only those in it. next is the id to pass as after for the
// following page, "" on the last page. It sorts every id under the read lock: tests and
// tools only. The API pages with Query (an index, filters, newest first, short lock holds).
func (f *FSM) List(status Status, after string, limit int) (txns []*Txn, next string) {
	f.mu.RLock()
	ids := make([]string, 0, len(f.txns))
	for id, t := range f.txns {
		if id > after && (status == 0 || t.Status == status) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if limit > 0 && len(ids) > limit {
		next = ids[limit-1]
		ids = ids[:limit]
	}
	txns = make([]*Txn, len(ids))
	for i, id := range ids {
		txns[i] = f.txns[id]
	}
	f.mu.RUnlock()
	return txns, next
}

// Counts returns how many transactions the FSM holds in each status.
func (f *FSM) Counts() map[Status]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[Status]int{}
	for s, tr := range f.active.byStatus {
		if n := tr.Len(); n > 0 {
			out[Status(s)] = n
		}
	}
	return out
}

// Members returns a copy of the node id -> HTTP address table.
func (f *FSM) Members() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(f.members))
	for k, v := range f.members {
		out[k] = v
	}
	return out
}

// FeatureLevel returns the feature level the cluster has enabled through the log (0 until
// every server ran a build that knows level 1 and the leader logged SetFeatures).
func (f *FSM) FeatureLevel() uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.level
}

// LastTimestamp returns the latest timestamp (unix ms) carried by any applied command, or 0
// before the first. It is deterministic: every node returns the same value at the same index.
func (f *FSM) LastTimestamp() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lastTs
}

// AppliedIndex returns the Raft index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// WaitFor blocks until cond holds for the record of id (the record is nil while it does not
// exist) and returns that record. It returns ctx.Err() when ctx ends first.
func (f *FSM) WaitFor(ctx context.Context, id string, cond func(*Txn) bool) (*Txn, error) {
	ch := make(chan struct{}, 1)
	f.wmu.Lock()
	set := f.watchers[id]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		f.watchers[id] = set
	}
	set[ch] = struct{}{}
	f.wmu.Unlock()
	defer func() {
		f.wmu.Lock()
		delete(set, ch) // set stays f.watchers[id] while it holds ch
		if len(set) == 0 {
			delete(f.watchers, id)
		}
		f.wmu.Unlock()
	}()
	for {
		t, _ := f.Get(id)
		if cond(t) {
			return t, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return t, ctx.Err()
		}
	}
}

// WaitApplied blocks until AppliedIndex is at least index and returns nil, or returns
// ctx.Err() when ctx ends first (or an error wrapping the halt when the FSM halted, since
// nothing is applied after that).
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	if f.AppliedIndex() >= index {
		return nil
	}
	ch := make(chan struct{}, 1)
	f.wmu.Lock()
	f.idxWaiters[ch] = index
	f.wmu.Unlock()
	f.nIdxWaiters.Add(1)
	defer func() {
		f.nIdxWaiters.Add(-1)
		f.wmu.Lock()
		delete(f.idxWaiters, ch)
		f.wmu.Unlock()
	}()
	for {
		if f.AppliedIndex() >= index {
			return nil
		}
		if err := f.Halted(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyIndex wakes the WaitApplied calls waiting for index or an earlier one.
func (f *FSM) notifyIndex(index uint64) {
	if f.nIdxWaiters.Load() == 0 {
		return
	}
	f.wmu.Lock()
	for ch, want := range f.idxWaiters {
		if want <= index {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	f.wmu.Unlock()
}

func (f *FSM) notify(id string) {
	f.wmu.Lock()
	for ch := range f.watchers[id] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	f.wmu.Unlock()
}

func (f *FSM) notifyAll() {
	f.wmu.Lock()
	for ch := range f.idxWaiters {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	for _, set := range f.watchers {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	f.wmu.Unlock()
}
