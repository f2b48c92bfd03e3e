package fsm

import (
	"errors"
	"fmt"
	"sort"

	"github.com/txcoord/txcoord/version"
)

// Each command's apply runs under f.mu, reads only the command and the FSM (timestamps and
// ids come from the entry), and returns the Result and the ids whose records changed.

func (c *Begin) apply(f *FSM, index uint64) (Result, []string) {
	if old, ok := f.txns[c.ID]; ok {
		if old.PresumedAborted() {
			return Result{Txn: old, Err: ErrPresumedAbort}, nil
		}
		return Result{Txn: old, Err: ErrExists}, nil
	}
	if c.Key != "" {
		if k, ok := f.keys[c.Key]; ok {
			return Result{Txn: f.txns[k.ID], Err: ErrKeyExists}, nil
		}
	}
	if c.ID == "" || len(c.Participants) == 0 {
		return Result{Err: fmt.Errorf("%w: begin without id or participants", ErrInvalid)}, nil
	}
	parts, ok := f.resolveRefs(c)
	if !ok {
		return Result{Err: fmt.Errorf("%w: begin names an endpoint that is not defined", ErrInvalid)}, nil
	}
	f.observe(c.CreatedAt)
	t := &Txn{
		ID: c.ID, Key: c.Key, CreatedAt: c.CreatedAt, Deadline: c.Deadline,
		Participants: append([]Participant(nil), parts...),
		States:       make([]ParticipantState, len(c.Participants)),
		Status:       StatusPreparing, Index: index,
		Trace: c.Trace,
	}
	if c.Payloads != nil {
		t.Payloads = make([]string, len(c.Participants))
		copy(t.Payloads, c.Payloads)
	}
	f.put(t)
	if c.Key != "" {
		f.keys[c.Key] = keyEntry{ID: c.ID, CreatedAt: c.CreatedAt}
	}
	return Result{Txn: t}, []string{c.ID}
}

func (c *DecideCommit) apply(f *FSM, index uint64) (Result, []string) {
	d, ok := f.asDecide(c)
	if !ok {
		return Result{Err: ErrNotFound}, nil
	}
	return d.apply(f, index)
}

func (c *Decide) apply(f *FSM, index uint64) (Result, []string) {
	old, ok := f.txns[c.ID]
	if !ok {
		return Result{Err: ErrNotFound}, nil
	}
	if old.PresumedAborted() {
		return Result{Txn: old, Err: ErrPresumedAbort}, nil
	}
	if old.Decision != DecisionNone {
		if old.Decision == c.Decision {
			return Result{Txn: old}, nil // a repeated decision is a no-op
		}
		return Result{Txn: old, Err: ErrDecided}, nil
	}
	if c.Decision != DecisionCommit && c.Decision != DecisionAbort {
		return Result{Txn: old, Err: fmt.Errorf("%w: decision %d", ErrInvalid, c.Decision)}, nil
	}
	if len(c.Votes) != len(old.Participants) {
		return Result{Txn: old, Err: fmt.Errorf("%w: %d votes for %d participants", ErrInvalid, len(c.Votes), len(old.Participants))}, nil
	}
	if c.Decision == DecisionCommit {
		for _, v := range c.Votes {
			if v != VoteYes {
				return Result{Txn: old, Err: fmt.Errorf("%w: commit without a yes vote from every participant", ErrInvalid)}, nil
			}
		}
	}
	f.observe(c.At)
	t := old.clone()
	t.Decision, t.DecidedAt, t.Index = c.Decision, c.At, index
	t.Payloads = nil // participants keep theirs with their vote; the FSM stays bounded
	for i := range t.States {
		t.States[i].Vote = c.Votes[i]
		if i < len(c.Reasons) {
			t.States[i].Reason = c.Reasons[i]
		}
	}
	if c.Decision == DecisionCommit {
		t.Status = StatusCommitting
	} else {
		t.Status = StatusRollingBack
	}
	f.put(t)
	return Result{Txn: t}, []string{c.ID}
}

func (c *Complete) apply(f *FSM, index uint64) (Result, []string) {
	var changed []string
	var last Result
	for _, it := range c.Items {
		old, ok := f.txns[it.ID]
		if !ok {
			last = Result{Err: ErrNotFound}
			continue
		}
		if old.Status != StatusCommitting && old.Status != StatusRollingBack {
			last = Result{Txn: old}
			if !old.Status.Terminal() || old.Status == StatusFailed {
				last.Err = ErrBadTransition
			}
			continue
		}
		t := old.clone()
		for i := range t.States {
			t.States[i].Acked, t.States[i].LastError = true, ""
			if i < len(it.Attempts) {
				t.States[i].Attempts = it.Attempts[i]
			}
		}
		t.Status, t.FinishedAt, t.Index = finalStatus(t.Decision), c.At, index
		f.put(t)
		changed = append(changed, it.ID)
		last = Result{Txn: t}
	}
	if len(changed) > 0 {
		f.observe(c.At)
	}
	return last, changed
}

func (c *Fail) apply(f *FSM, index uint64) (Result, []string) {
	return f.applyPhaseTwoReports(index, c.ID, c.Reports, func(t *Txn) {
		f.observe(c.At)
		t.Status, t.FinishedAt = StatusFailed, c.At
	})
}

func (c *Progress) apply(f *FSM, index uint64) (Result, []string) {
	return f.applyPhaseTwoReports(index, c.ID, c.Reports, nil)
}

func (c *Retry) apply(f *FSM, index uint64) (Result, []string) {
	return f.applyOperator(index, c.ID, func(t *Txn) {
		f.observe(c.At)
		t.Note, t.FinishedAt, t.RetriedAt = c.Note, 0, c.At
		t.Status = StatusCommitting
		if t.Decision == DecisionAbort {
			t.Status = StatusRollingBack
		}
		for i := range t.States {
			if !t.States[i].Acked {
				t.States[i].Attempts = 0
			}
		}
	})
}

func (c *Resolve) apply(f *FSM, index uint64) (Result, []string) {
	return f.applyOperator(index, c.ID, func(t *Txn) {
		f.observe(c.At)
		t.Note = c.Note
		t.Status, t.FinishedAt = finalStatus(t.Decision), c.At
	})
}

// applyOperator changes a failed transaction by an operator's action (Retry, Resolve).
func (f *FSM) applyOperator(index uint64, id string, change func(*Txn)) (Result, []string) {
	old, ok := f.txns[id]
	if !ok {
		return Result{Err: ErrNotFound}, nil
	}
	if old.Status != StatusFailed {
		return Result{Txn: old, Err: ErrBadTransition}, nil
	}
	t := old.clone()
	t.Index = index
	change(t)
	f.put(t)
	return Result{Txn: t}, []string{id}
}

func (c *Prune) apply(f *FSM, _ uint64) (Result, []string) {
	var changed []string
	if c.FinishedBefore > 0 {
		// From feature level 3 on, a record is also kept until its deadline is before the
		// cut-off (a transaction decided early finishes before its deadline), so that no
		// record whose deadline is at or after Horizon is ever pruned: the inquiry relies on
		// it to tell "never logged" from "pruned".
		horizon := f.level >= 3
		if horizon {
			f.horizon = max(f.horizon, c.FinishedBefore)
		}
		for id, t := range f.txns {
			if (t.Status == StatusCommitted || t.Status == StatusRolledBack) && t.FinishedAt < c.FinishedBefore &&
				(!horizon || t.Deadline < c.FinishedBefore) {
				f.drop(t)
				f.prunedRecord(t)
				changed = append(changed, id)
			}
		}
	}
	if c.KeysBefore > 0 {
		for k, e := range f.keys {
			if e.CreatedAt < c.KeysBefore {
				delete(f.keys, k)
			}
		}
	}
	sort.Strings(changed)
	return Result{}, changed
}

func (c *Define) apply(f *FSM, _ uint64) (Result, []string) {
	f.applyDefine(c)
	return Result{}, nil
}

func (c *SetMember) apply(f *FSM, _ uint64) (Result, []string) {
	if c.HTTPAddr == "" {
		delete(f.members, c.NodeID)
	} else {
		f.members[c.NodeID] = c.HTTPAddr
	}
	return Result{}, nil
}

func (c *SetFeatures) apply(f *FSM, index uint64) (Result, []string) {
	if c.Level > version.FeatureLevel {
		// The cluster moved past this build: every later entry may use what it lacks.
		f.halted = &HaltError{Index: index, Type: CmdSetFeatures,
			Err: fmt.Errorf("the cluster enabled feature level %d; this build supports up to %d", c.Level, version.FeatureLevel)}
		return Result{}, nil
	}
	f.observe(c.At)
	if f.level < 3 && c.Level >= 3 {
		// Prunes before now did not keep records to their deadline: count none of what
		// they may have removed as "never logged" (Horizon).
		f.horizon = max(f.horizon, c.At)
	}
	f.level = max(f.level, c.Level) // levels never go down: commands of a level may be in the log
	return Result{}, nil
}

// observe moves the log's clock forward to ts (unix ms).
func (f *FSM) observe(ts int64) { f.lastTs = max(f.lastTs, ts) }

// ErrHalted is wrapped by the error Apply returns for the entry that halted the FSM and
// for every entry after it.
var ErrHalted = errors.New("fsm halted")

// HaltError says which log entry this build could not apply and why. Its message is the
// node's fatal log line: the index, the command type and this build's version.
type HaltError struct {
	Index uint64      // Raft index of the entry
	Type  CommandType // its type byte (0 for an empty entry)
	Err   error       // why: wraps ErrCorrupt for an unknown type or undecodable body
}

func (e *HaltError) Error() string {
	return fmt.Sprintf("cannot apply log entry %d (command type %d): %v; this build is txcoord %s (feature level %d, command types up to %d): "+
		"upgrade this node to a build that knows it (docs/operations.md, Upgrades); the node stops so that its state never differs from its peers'",
		e.Index, e.Type, e.Err, version.String(), version.FeatureLevel, maxCommandType)
}

// Unwrap returns ErrHalted and the cause.
func (e *HaltError) Unwrap() []error { return []error{ErrHalted, e.Err} }

// OnHalt sets the function called (once, outside the FSM's lock, on Raft's apply
// goroutine) when the FSM halts. The node uses it to log the fatal line and stop. Call it
// before Raft starts. Without a handler the FSM only halts.
func (f *FSM) OnHalt(fn func(*HaltError)) {
	f.mu.Lock()
	f.onHalt = fn
	f.mu.Unlock()
}

// Halted returns the HaltError once the FSM has halted, else nil.
func (f *FSM) Halted() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halted == nil {
		return nil
	}
	return f.halted
}

// halt stops the FSM at the entry e names and returns e.
func (f *FSM) halt(e *HaltError) error {
	f.mu.Lock()
	first := f.halted == nil
	if first {
		f.halted = e
	}
	h := f.halted
	f.mu.Unlock()
	if first {
		f.haltNotify(h)
	}
	return h
}

func (f *FSM) haltNotify(e *HaltError) {
	f.notifyAll() // WaitApplied callers learn that nothing more will be applied
	f.mu.Lock()
	fn := f.onHalt
	f.onHalt = nil // once
	f.mu.Unlock()
	if fn != nil {
		fn(e)
	}
}
