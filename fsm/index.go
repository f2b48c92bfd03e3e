package fsm

import (
	"strings"

	"github.com/google/btree"
)

// index keeps the FSM's transactions in creation order, (CreatedAt, ID), in B-trees
// (github.com/google/btree): all of them, those in each status, and those not in a
// terminal status. It is derived state, rebuilt by put on every replacement of a record
// (and so by Restore, which builds a new FSM through put): nothing of it is persisted, and
// keeping it costs Apply a few O(log n) steps. Lists and /v1/stuck read a page of it under
// the FSM's read lock instead of collecting and sorting every id.
type index struct {
	all      *btree.BTreeG[*Txn]
	byStatus [StatusFailed + 1]*btree.BTreeG[*Txn]
	active   *btree.BTreeG[*Txn] // not terminal
}

// txnLess orders records by creation time, then id (UUIDv7 ids of one millisecond sort by
// the leader's sequence).
func txnLess(a, b *Txn) bool {
	if a.CreatedAt != b.CreatedAt {
		return a.CreatedAt < b.CreatedAt
	}
	return a.ID < b.ID
}

const btreeDegree = 32

func newIndex() *index {
	x := &index{all: btree.NewG(btreeDegree, txnLess), active: btree.NewG(btreeDegree, txnLess)}
	for i := range x.byStatus {
		x.byStatus[i] = btree.NewG(btreeDegree, txnLess)
	}
	return x
}

func (x *index) tree(s Status) *btree.BTreeG[*Txn] {
	if int(s) < len(x.byStatus) {
		return x.byStatus[s]
	}
	return nil
}

// replace puts t in place of old (nil for a new record). CreatedAt and ID never change
// between versions, so t takes old's place in every tree that holds both.
func (x *index) replace(old, t *Txn) {
	x.all.ReplaceOrInsert(t)
	if old != nil && old.Status != t.Status {
		if tr := x.tree(old.Status); tr != nil {
			tr.Delete(old)
		}
	}
	if tr := x.tree(t.Status); tr != nil {
		tr.ReplaceOrInsert(t)
	}
	if t.Status.Terminal() {
		x.active.Delete(t)
	} else {
		x.active.ReplaceOrInsert(t)
	}
}

func (x *index) remove(t *Txn) {
	x.all.Delete(t)
	if tr := x.tree(t.Status); tr != nil {
		tr.Delete(t)
	}
	x.active.Delete(t)
}

// Cursor is a position in the creation order: the (CreatedAt, ID) of the last record of a
// page. It stays valid when that record is pruned and when records are added.
type Cursor struct {
	CreatedAt int64 // unix ms
	ID        string
}

// ListQuery selects a page of transactions. The zero value is every transaction, oldest
// first, without a limit.
type ListQuery struct {
	// Status keeps only transactions in it; 0: any.
	Status Status
	// Key keeps only the transaction bound to this idempotency key; "": any.
	Key string
	// Participant keeps only transactions with a participant that matches: a URL (with a
	// scheme) must equal its prepare, commit or rollback URL; anything else is a host,
	// "host" or "host:port", compared with the host of its prepare URL. "": any.
	Participant string
	// CreatedFrom and CreatedTo bound CreatedAt (unix ms): From inclusive, To exclusive;
	// 0: unbounded.
	CreatedFrom, CreatedTo int64
	// Desc lists newest first.
	Desc bool
	// After starts the page strictly after this position (in the listing's direction).
	After *Cursor
	// Limit is the most records returned; <= 0: no limit.
	Limit int
	// MaxScan bounds how many records one call examines for the filters an index does not
	// serve (participant; key is a lookup); <= 0: no bound. A call that reaches it returns
	// a short (possibly empty) page with Next set, so a caller pages on.
	MaxScan int
}

// scanChunk is how many records one hold of the read lock examines: Apply never waits
// longer than that much work for a reader.
const scanChunk = 256

// Query returns one page of transactions that q selects, in creation order (newest first
// with q.Desc), and the cursor of the next page: nil when no record follows. The read lock
// is held for at most scanChunk examined records at a time; between holds Apply may run,
// and the page then reflects the state of each record when it was read.
func (f *FSM) Query(q ListQuery) (txns []*Txn, next *Cursor) {
	if q.Key != "" {
		t, ok := f.ByKey(q.Key)
		if !ok || !q.matches(t) || (q.After != nil && !q.beyond(t, q.After)) {
			return nil, nil
		}
		return []*Txn{t}, nil
	}
	pos := q.After
	scanned := 0
	for {
		var last *Txn
		n := 0
		more := false
		f.mu.RLock()
		tr := f.active.all
		if q.Status != 0 {
			tr = f.active.tree(q.Status)
		}
		visit := func(t *Txn) bool {
			if pos != nil && t.CreatedAt == pos.CreatedAt && t.ID == pos.ID {
				return true // the cursor's own record
			}
			if (q.CreatedFrom != 0 && t.CreatedAt < q.CreatedFrom) || (q.CreatedTo != 0 && t.CreatedAt >= q.CreatedTo) {
				return false // out of range: the tree is ordered, nothing further matches
			}
			if q.Limit > 0 && len(txns) >= q.Limit {
				more = true
				return false
			}
			if n >= scanChunk || (q.MaxScan > 0 && scanned >= q.MaxScan) {
				more = true
				return false
			}
			n++
			scanned++
			last = t
			if q.matchParticipant(t) {
				txns = append(txns, t)
			}
			return true
		}
		if tr != nil {
			f.walk(tr, q, pos, visit)
		}
		f.mu.RUnlock()
		if !more {
			return txns, nil
		}
		if q.Limit > 0 && len(txns) >= q.Limit {
			t := txns[len(txns)-1]
			return txns, &Cursor{CreatedAt: t.CreatedAt, ID: t.ID}
		}
		if last == nil {
			return txns, nil
		}
		pos = &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
		if q.MaxScan > 0 && scanned >= q.MaxScan {
			return txns, pos
		}
	}
}

// walk visits tr from pos (inclusive; the visitor skips pos itself) or from the start of
// q's range, in q's direction.
func (f *FSM) walk(tr *btree.BTreeG[*Txn], q ListQuery, pos *Cursor, visit func(*Txn) bool) {
	var pivot *Txn
	if pos != nil {
		pivot = &Txn{CreatedAt: pos.CreatedAt, ID: pos.ID}
	}
	if q.Desc {
		if q.CreatedTo != 0 && (pivot == nil || pivot.CreatedAt >= q.CreatedTo) {
			// Above every id of the last millisecond before CreatedTo.
			pivot = &Txn{CreatedAt: q.CreatedTo - 1, ID: "\xff\xff\xff\xff"}
		}
		if pivot == nil {
			tr.Descend(visit)
		} else {
			tr.DescendLessOrEqual(pivot, visit)
		}
		return
	}
	if q.CreatedFrom != 0 && (pivot == nil || pivot.CreatedAt < q.CreatedFrom) {
		pivot = &Txn{CreatedAt: q.CreatedFrom}
	}
	if pivot == nil {
		tr.Ascend(visit)
	} else {
		tr.AscendGreaterOrEqual(pivot, visit)
	}
}

// beyond reports whether t lies after c in q's direction.
func (q ListQuery) beyond(t *Txn, c *Cursor) bool {
	ct := &Txn{CreatedAt: c.CreatedAt, ID: c.ID}
	if q.Desc {
		return txnLess(t, ct)
	}
	return txnLess(ct, t)
}

func (q ListQuery) matches(t *Txn) bool {
	if q.Status != 0 && t.Status != q.Status {
		return false
	}
	if (q.CreatedFrom != 0 && t.CreatedAt < q.CreatedFrom) || (q.CreatedTo != 0 && t.CreatedAt >= q.CreatedTo) {
		return false
	}
	return q.matchParticipant(t)
}

func (q ListQuery) matchParticipant(t *Txn) bool {
	if q.Participant == "" {
		return true
	}
	if strings.Contains(q.Participant, "://") {
		for _, p := range t.Participants {
			if p.Prepare == q.Participant || p.Commit == q.Participant || p.Rollback == q.Participant {
				return true
			}
		}
		return false
	}
	for _, p := range t.Participants {
		if hostMatches(p.Prepare, q.Participant) {
			return true
		}
	}
	return false
}

// hostMatches reports whether the host of rawURL is host ("h:port") or its name is host
// ("h"), without allocating for the common case.
func hostMatches(rawURL, host string) bool {
	u := rawURL
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	if i := strings.IndexAny(u, "/?#"); i >= 0 {
		u = u[:i]
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		u = u[i+1:]
	}
	if strings.EqualFold(u, host) {
		return true
	}
	// Without the port: "h:1" -> "h", "[::1]:1" -> "[::1]" (or "::1").
	if i := strings.LastIndexByte(u, ':'); i > 0 && !strings.HasSuffix(u, "]") {
		h := u[:i]
		if strings.EqualFold(h, host) {
			return true
		}
		if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
			return strings.EqualFold(h[1:len(h)-1], host)
		}
	}
	return false
}

// Stuck returns the transactions that need attention: every failed one, then those not in
// a terminal status created at or before cutoff (unix ms), oldest first, at most limit in
// all (<= 0: no limit). It reads the failed and active indexes, never the whole state.
func (f *FSM) Stuck(cutoff int64, limit int) []*Txn {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Txn
	full := func() bool { return limit > 0 && len(out) >= limit }
	f.active.byStatus[StatusFailed].Ascend(func(t *Txn) bool {
		if full() {
			return false
		}
		out = append(out, t)
		return true
	})
	f.active.active.Ascend(func(t *Txn) bool {
		if full() || t.CreatedAt > cutoff {
			return false
		}
		out = append(out, t)
		return true
	})
	return out
}
