// Package archive is a node's append-only history of finished transactions: every record
// a Prune entry removes from the replicated state is first written here, on every node, so
// that a transaction can be looked up (and exported for auditors) long after the state and
// the Raft log have forgotten it.
//
// The FSM stays free of I/O: Prune's apply hands the removed records over (fsm.Archiver)
// and returns; Archive queues them and writes them on its own goroutine, in compact,
// checksummed records, into segment files that rotate by size (format.go), with one fsync
// per batch of queued work. Nothing in Apply waits for the disk.
//
// # Exactly once
//
// The archive is keyed by the Raft index of the Prune entry: it remembers (durably, in its
// own records) the highest index it holds, Through, and skips a Prune at or below it, so
// replaying the log after a restart or a snapshot restore never writes a record twice.
// Before Raft persists a snapshot at index i (which lets it drop the log up to i), the FSM
// calls Covered(i), which returns only once every Prune up to i is durable here: a crash at
// any point leaves either the records in the archive or the Prune entry in the log, to be
// handed over again. When a node's state is replaced by a snapshot at an index above
// Through (it fell too far behind and the leader sent it a snapshot, or a cluster was
// restored from a backup), the Prunes in between never reach this node: the archive writes
// a gap record saying so, and Stats and lookups report it, rather than leaving a silent
// hole.
//
// # Reading
//
// Get finds one transaction by id through an in-memory index (8 bytes per record: 32 bits
// of the id's hash and the record's offset, per segment), built when the archive opens;
// Scan reads a range of creation times, skipping segments outside it.
//
// # Retention
//
// Whole segments are deleted, oldest first, while the archive is larger than MaxBytes or
// the newest transaction of the oldest segment finished more than MaxAge ago; the segment
// being written is never deleted.
package archive

import (
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/fsm"
)

// Options tunes an Archive. Zero values take the defaults in brackets.
type Options struct {
	// SegmentBytes is the size past which the archive starts a new segment file [16 MiB;
	// at most 1 GiB].
	// One Prune's records always go into one segment, so a segment may exceed it by one
	// Prune's worth.
	SegmentBytes int64
	// MaxBytes bounds the archive's size on disk [1 GiB]: the oldest segments are
	// deleted past it.
	MaxBytes int64
	// MaxAge is how long a transaction is kept after it finished [30 days (720h)]: a
	// segment is deleted once its newest transaction is older. The default keeps 30 days
	// or 1 GiB, whichever is less.
	MaxAge time.Duration
	// CoveredTimeout bounds how long Covered waits for the writer [1 min].
	CoveredTimeout time.Duration
	// Now is the wall clock for retention and the time stamped on Prune records [time.Now].
	Now    func() time.Time
	Logger hclog.Logger
}

func (o *Options) defaults() {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 16 << 20
	}
	o.SegmentBytes = min(o.SegmentBytes, 1<<30) // offsets in the index are 32 bits
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 30 * 24 * time.Hour
	}
	if o.CoveredTimeout <= 0 {
		o.CoveredTimeout = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
}

// ErrClosed is returned by Covered and Sync after Close.
var ErrClosed = errors.New("archive: closed")

// Gap is a range of Raft indexes (From, To] whose Prunes this node's archive never received:
// its state was replaced by a snapshot at To while the archive held up to From.
type Gap struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// String returns the range as "(From, To]".
func (g Gap) String() string { return fmt.Sprintf("(%d, %d]", g.From, g.To) }

// Stats describes an archive.
type Stats struct {
	Dir      string `json:"dir"`
	Segments int    `json:"segments"`
	Bytes    int64  `json:"bytes"`   // on disk, all segments
	Records  int    `json:"records"` // archived transactions still kept
	Through  uint64 `json:"through"` // highest Raft index whose Prune the archive holds (durably)
	Gaps     []Gap  `json:"gaps,omitempty"`
	// Corrupt counts sealed segments whose reading stopped at a bad record when the archive
	// opened (the records before it are kept; the file is left as it is).
	Corrupt int `json:"corrupt,omitempty"`
	// Written counts the transaction records written since the archive opened (a replayed
	// Prune the archive already held is not written again, so not counted).
	Written int64 `json:"written"`
	// Skipped counts the torn or corrupt records met when the archive opened: a torn or
	// damaged last record of the last segment (cut off; Raft hands that Prune over again)
	// or a bad record that ends the readable part of a sealed segment (see Corrupt).
	Skipped int `json:"skipped,omitempty"`
	// WriteErrors counts the writes (a batch of queued work, then its fsync) that failed
	// since the archive opened: 0 or 1, as the archive stops at the first (and sets Error).
	WriteErrors int64 `json:"writeErrors,omitempty"`
	// Error is the write error that stopped the archive, "" while it works. Snapshots fail
	// while it is set (the log is not compacted), so no record is lost.
	Error string `json:"error,omitempty"`
	// Oldest and Newest are the earliest and latest creation times (unix ms) of the kept
	// transactions, 0 when there are none.
	Oldest int64 `json:"oldestCreatedAt,omitempty"`
	Newest int64 `json:"newestCreatedAt,omitempty"`
}

// segment is one file's in-memory summary and index.
type segment struct {
	seq                                 uint64
	path                                string
	size                                int64             // bytes up to the end of the last complete record
	endpoints                           []fsm.Participant // the segment's endpoint table, append-only
	entries                             []uint64          // hash32<<32 | offset of each 'T' record
	sorted                              int               // entries[:sorted] is sorted
	count                               int
	minCreated, maxCreated, maxFinished int64
}

func (s *segment) add(id string, off int64, t *fsm.Txn, seed maphash.Seed) {
	s.entries = append(s.entries, idHash(seed, id)<<32|uint64(off))
	if s.count == 0 || t.CreatedAt < s.minCreated {
		s.minCreated = t.CreatedAt
	}
	s.maxCreated = max(s.maxCreated, t.CreatedAt)
	s.maxFinished = max(s.maxFinished, t.FinishedAt)
	s.count++
}

// merged returns entries with its unsorted tail sorted and merged into the sorted prefix
// (O(n), a new slice), or nil while the tail is short. Only the writer changes entries, so
// it may call this without the lock and swap the result in under it.
func (s *segment) merged() []uint64 {
	if len(s.entries)-s.sorted <= 4096 {
		return nil
	}
	tail := slices.Clone(s.entries[s.sorted:])
	slices.Sort(tail)
	head := s.entries[:s.sorted]
	out := make([]uint64, 0, len(s.entries))
	i, j := 0, 0
	for i < len(head) && j < len(tail) {
		if head[i] <= tail[j] {
			out = append(out, head[i])
			i++
		} else {
			out = append(out, tail[j])
			j++
		}
	}
	out = append(out, head[i:]...)
	return append(out, tail[j:]...)
}

// offsets returns the offsets of the records whose id hashes to h. It runs under a.mu.
func (s *segment) offsets(h uint64) []int64 {
	var out []int64
	i := sort.Search(s.sorted, func(i int) bool { return s.entries[i]>>32 >= h })
	for ; i < s.sorted && s.entries[i]>>32 == h; i++ {
		out = append(out, int64(s.entries[i]&0xffffffff))
	}
	for _, e := range s.entries[s.sorted:] {
		if e>>32 == h {
			out = append(out, int64(e&0xffffffff))
		}
	}
	return out
}

func idHash(seed maphash.Seed, id string) uint64 { return maphash.String(seed, id) >> 32 }

type itemKind int

const (
	itemPrune itemKind = iota
	itemCovered
	itemRestored
)

type item struct {
	kind  itemKind
	index uint64
	txns  []*fsm.Txn
	done  chan error // closed-over result for Covered and Sync; nil otherwise
}

// Archive is one node's history. It implements fsm.Archiver. Safe for concurrent use.
type Archive struct {
	dir  string
	opts Options
	lg   hclog.Logger
	seed maphash.Seed

	// mu guards the segments and their indexes, Through, gaps and the write error.
	mu      sync.RWMutex
	segs    []*segment // oldest first; the last is the one being written
	through uint64     // durable
	gaps    []Gap
	corrupt int
	skipped int
	written int64 // transaction records written since Open
	werrs   int64 // failed writes since Open
	err     error // sticky write error
	// qmu guards only the queue, so that Pruned (on Raft's apply goroutine) never waits
	// for the writer or a reader.
	qmu      sync.Mutex
	queue    []item
	closed   bool
	wake     chan struct{}
	finished chan struct{}

	// The writer goroutine's own state.
	w *writer
}

// Open opens (or creates) the archive in dir and starts its writer. Segments are checked
// as they are read: the last one is cut back to its last complete Prune (a torn or
// half-written tail from a crash; Raft replays that Prune), and a sealed segment with a bad
// record is kept up to it and counted in Stats.Corrupt.
func Open(dir string, opts Options) (*Archive, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("archive dir: %w", err)
	}
	a := &Archive{dir: dir, opts: opts, lg: opts.Logger.Named("archive"), seed: maphash.MakeSeed(),
		wake: make(chan struct{}, 1), finished: make(chan struct{})}
	if err := a.load(); err != nil {
		return nil, err
	}
	w, err := a.openWriter()
	if err != nil {
		return nil, err
	}
	a.w = w
	a.retain()
	go a.run()
	return a, nil
}

// segPath names segment seq.
func (a *Archive) segPath(seq uint64) string {
	return filepath.Join(a.dir, fmt.Sprintf("%016d%s", seq, segSuffix))
}

// load reads every segment into memory indexes, repairing the last one.
func (a *Archive) load() error {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, seq := range seqs {
		last := i == len(seqs)-1
		s, through, gaps, err := a.readSegment(seq, last)
		if err != nil {
			return err
		}
		if s == nil { // a last segment whose header never made it to disk
			continue
		}
		a.segs = append(a.segs, s)
		a.through = through // the last segment's: a Rebase may have lowered it
		a.gaps = append(a.gaps, gaps...)
	}
	return nil
}

// readSegment reads and indexes one segment file. For the last segment it cuts off
// everything after the last complete marker record; a last segment with no valid header is
// removed (it was being created when the node stopped) and nil returned.
func (a *Archive) readSegment(seq uint64, last bool) (*segment, uint64, []Gap, error) {
	path := a.segPath(seq)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, nil, err
	}
	through, herr := decodeHeader(b)
	if herr != nil {
		if last && len(b) <= headerSize {
			a.lg.Warn("removing a segment whose header is incomplete (the node stopped while creating it)", "file", path)
			return nil, 0, nil, os.Remove(path)
		}
		return nil, 0, nil, fmt.Errorf("%s: %w", path, herr)
	}
	s := &segment{seq: seq, path: path}
	var gaps []Gap
	type pending struct {
		off int64
		t   *fsm.Txn
	}
	var txns []pending
	var endpoints []fsm.Participant
	good := int64(headerSize) // end of the last marker record
	off := int64(headerSize)
	var bad error
	for off < int64(len(b)) {
		kind, payload, n, err := parseRecord(b[off:])
		if err != nil {
			bad = err
			break
		}
		d := newDec(payload)
		switch kind {
		case kindEndpoint:
			endpoints = append(endpoints, decodeEndpoint(d))
		case kindTxn:
			txns = append(txns, pending{off, decodeTxn(d, endpoints)})
		case kindPrune:
			idx, cnt := d.Uvarint(), d.Uvarint()
			d.Varint()
			if d.Err == nil && cnt != uint64(len(txns)) {
				d.Fail(fmt.Sprintf("prune record counts %d transactions, %d precede it", cnt, len(txns)))
			}
			through = max(through, idx)
		case kindCovered:
			through = max(through, d.Uvarint())
		case kindGap:
			g := Gap{From: d.Uvarint(), To: d.Uvarint()}
			gaps = append(gaps, g)
			through = max(through, g.To)
		}
		if err := d.End(); err != nil {
			bad = err
			break
		}
		off += int64(n)
		if kind == kindPrune || kind == kindCovered || kind == kindGap {
			for _, p := range txns {
				s.add(p.t.ID, p.off, p.t, a.seed)
			}
			txns = txns[:0]
			s.endpoints = endpoints[:len(endpoints):len(endpoints)]
			good = off
		}
	}
	if last {
		if good < int64(len(b)) {
			what := "records of an unfinished Prune"
			if bad != nil {
				what = bad.Error()
			}
			a.lg.Warn("cutting the archive's last segment back to its last complete Prune (the node stopped while writing; Raft replays the rest)",
				"file", path, "bytes", int64(len(b))-good, "reason", what)
			if err := os.Truncate(path, good); err != nil {
				return nil, 0, nil, fmt.Errorf("repairing %s: %w", path, err)
			}
		}
		if bad != nil {
			a.skipped++
		}
	} else if bad != nil || good < int64(len(b)) {
		a.corrupt++
		if bad != nil {
			a.skipped++
		}
		a.lg.Error("archive segment is damaged: records after the damage are not readable", "file", path, "offset", good, "error", bad)
	}
	s.size = good
	slices.Sort(s.entries)
	s.sorted = len(s.entries)
	return s, through, gaps, nil
}

// run is the writer goroutine.
func (a *Archive) run() {
	defer close(a.finished)
	for {
		a.qmu.Lock()
		items := a.queue
		a.queue = nil
		closed := a.closed
		a.qmu.Unlock()
		if len(items) > 0 {
			// After a failed write the archive stops: the segment may end in a partial
			// record its index does not account for, so nothing more is appended. What is
			// handed over meanwhile stays in the Raft log (Covered fails, no snapshot
			// compacts it) and is archived when the node restarts and replays.
			a.mu.RLock()
			stopped := a.err != nil
			a.mu.RUnlock()
			var err error
			if !stopped {
				err = a.w.write(a, items)
			}
			a.mu.Lock()
			if err != nil {
				a.werrs++
			}
			if err != nil && a.err == nil {
				a.err = err
				a.lg.Error("archive write failed: the archive stops, and snapshots fail until the node restarts", "error", err)
			}
			if a.err == nil {
				a.through = a.w.through
			}
			werr := a.err
			a.mu.Unlock()
			if err == nil {
				a.retain()
			}
			for _, it := range items {
				if it.done != nil {
					it.done <- werr
				}
			}
			continue
		}
		if closed {
			return
		}
		<-a.wake
	}
}

func (a *Archive) enqueue(it item) bool {
	a.qmu.Lock()
	if a.closed {
		a.qmu.Unlock()
		return false
	}
	a.queue = append(a.queue, it)
	a.qmu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return true
}

// Pruned implements fsm.Archiver: it queues the records and returns at once.
func (a *Archive) Pruned(index uint64, txns []*fsm.Txn) {
	if !a.enqueue(item{kind: itemPrune, index: index, txns: txns}) {
		a.lg.Error("archive closed: pruned records not archived", "index", index, "records", len(txns))
	}
}

// Covered implements fsm.Archiver: it returns once every Prune up to index that was handed
// over is durable, and records that the archive is complete up to index.
func (a *Archive) Covered(index uint64) error {
	return a.wait(item{kind: itemCovered, index: index})
}

// Restored implements fsm.Archiver: a restore to an index above Through is recorded as a
// gap.
func (a *Archive) Restored(index uint64) {
	a.enqueue(item{kind: itemRestored, index: index})
}

// Sync returns once everything handed over so far is durable, or the write error.
func (a *Archive) Sync() error { return a.wait(item{kind: itemCovered}) }

func (a *Archive) wait(it item) error {
	it.done = make(chan error, 1)
	if !a.enqueue(it) {
		return ErrClosed
	}
	t := time.NewTimer(a.opts.CoveredTimeout)
	defer t.Stop()
	select {
	case err := <-it.done:
		return err
	case <-t.C:
		return fmt.Errorf("archive: writer did not finish within %s", a.opts.CoveredTimeout)
	}
}

// Through returns the highest Raft index up to which every Prune is durably archived (or
// recorded as a gap).
func (a *Archive) Through() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.through
}

// Dir returns the archive's directory.
func (a *Archive) Dir() string { return a.dir }

// Stats returns the archive's size, extent, gaps and health.
func (a *Archive) Stats() Stats {
	a.mu.RLock()
	defer a.mu.RUnlock()
	st := Stats{Dir: a.dir, Segments: len(a.segs), Through: a.through, Gaps: append([]Gap(nil), a.gaps...), Corrupt: a.corrupt,
		Written: a.written, Skipped: a.skipped, WriteErrors: a.werrs}
	for _, s := range a.segs {
		st.Bytes += s.size
		st.Records += s.count
		if s.count > 0 {
			if st.Oldest == 0 || s.minCreated < st.Oldest {
				st.Oldest = s.minCreated
			}
			st.Newest = max(st.Newest, s.maxCreated)
		}
	}
	if a.err != nil {
		st.Error = a.err.Error()
	}
	return st
}

// Close writes what is queued, stops the writer and closes the files. Records handed over
// later are dropped (and logged).
func (a *Archive) Close() error {
	a.qmu.Lock()
	if a.closed {
		a.qmu.Unlock()
		return nil
	}
	a.closed = true
	a.qmu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	<-a.finished
	return a.w.close()
}

// retain deletes the oldest segments beyond MaxBytes or MaxAge, never the last.
func (a *Archive) retain() {
	cutoff := a.opts.Now().Add(-a.opts.MaxAge).UnixMilli()
	for {
		a.mu.Lock()
		if len(a.segs) < 2 {
			a.mu.Unlock()
			return
		}
		var total int64
		for _, s := range a.segs {
			total += s.size
		}
		old := a.segs[0]
		if total <= a.opts.MaxBytes && old.maxFinished >= cutoff {
			a.mu.Unlock()
			return
		}
		a.segs = a.segs[1:]
		a.mu.Unlock()
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.lg.Warn("removing an expired archive segment failed", "file", old.path, "error", err)
		} else {
			a.lg.Info("archive segment expired", "file", old.path, "records", old.count, "bytes", old.size)
		}
	}
}

// Rebase prepares the archive in dir (not open) for a node restored from a backup taken
// at Raft index index: the restored cluster's log goes on from index with entries the old
// archive never saw, so Through is set back to index (in a new segment's header) and the
// records already there, the old cluster's history included, stay readable. Without it, a
// Prune of the new log at an index the old cluster had already archived would be skipped.
// txcoord snapshot restore --archive-from calls it after copying the segments.
func Rebase(dir string, index uint64) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var last uint64
	for _, e := range ents {
		if seq, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), segSuffix), 10, 64); err == nil && strings.HasSuffix(e.Name(), segSuffix) {
			last = max(last, seq)
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("%016d%s", last+1, segSuffix))
	if err := os.WriteFile(path, encodeHeader(index), 0o640); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
