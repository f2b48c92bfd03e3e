package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/txcoord/txcoord/fsm"
)

// Get returns the archived record of the transaction id, if this node's archive holds it.
// An error means a segment could not be read (a record that fails its checksum is an
// error wrapping ErrCorrupt, never a silent miss).
func (a *Archive) Get(id string) (*fsm.Txn, bool, error) {
	h := idHash(a.seed, id)
	type cand struct {
		path      string
		endpoints []fsm.Participant
		offs      []int64
	}
	var cands []cand
	a.mu.RLock()
	for i := len(a.segs) - 1; i >= 0; i-- { // newest first: a transaction pruned twice is impossible, but the latest wins
		s := a.segs[i]
		if offs := s.offsets(h); len(offs) > 0 {
			cands = append(cands, cand{s.path, s.endpoints, offs})
		}
	}
	a.mu.RUnlock()
	for _, c := range cands {
		f, err := os.Open(c.path)
		if errors.Is(err, os.ErrNotExist) {
			continue // expired meanwhile
		}
		if err != nil {
			return nil, false, err
		}
		for _, off := range c.offs {
			t, err := readTxnAt(f, off, c.endpoints)
			if err != nil {
				f.Close()
				return nil, false, fmt.Errorf("%s at %d: %w", c.path, off, err)
			}
			if t.ID == id {
				f.Close()
				return t, true, nil
			}
		}
		f.Close()
	}
	return nil, false, nil
}

// readTxnAt reads the 'T' record at off.
func readTxnAt(f *os.File, off int64, endpoints []fsm.Participant) (*fsm.Txn, error) {
	var head [1 + binary.MaxVarintLen64]byte
	n, err := f.ReadAt(head[:], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	size, m := binary.Uvarint(head[1:n])
	if m <= 0 || size > maxRecord {
		return nil, fmt.Errorf("%w: record length", ErrCorrupt)
	}
	b := make([]byte, 1+m+int(size)+4)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, err
	}
	kind, payload, _, err := parseRecord(b)
	if err != nil {
		return nil, err
	}
	if kind != kindTxn {
		return nil, fmt.Errorf("%w: index points at a record of kind %q", ErrCorrupt, kind)
	}
	d := newDec(payload)
	t := decodeTxn(d, endpoints)
	return t, d.End()
}

// Cursor is a position in the archive: a segment and the offset of a record in it. The
// zero Cursor is the beginning.
type Cursor struct {
	Seg uint64
	Off int64
}

// String returns "seg.off", the form ParseCursor reads.
func (c Cursor) String() string { return fmt.Sprintf("%d.%d", c.Seg, c.Off) }

// ParseCursor reads what Cursor.String wrote; "" is the zero Cursor.
func ParseCursor(s string) (Cursor, error) {
	var c Cursor
	if s == "" {
		return c, nil
	}
	if _, err := fmt.Sscanf(s, "%d.%d", &c.Seg, &c.Off); err != nil || c.Off < 0 {
		return Cursor{}, fmt.Errorf("cursor %q: want the \"next\" value of the previous page", s)
	}
	return c, nil
}

// Scan calls fn, in archive order (oldest segment first, then as written: by Prune, and by
// id within one Prune), for every archived transaction created in [from, to) (unix ms;
// to <= 0: no upper bound) whose record lies after the cursor after. fn returns false to
// stop; at is the record's cursor, which resumes the scan after it. Segments wholly outside
// the range are not read, and a scan that resumes at a cursor reads its segment from the
// cursor on (with the segment's endpoint table from memory), so paging through an archive
// reads it once rather than once per page.
func (a *Archive) Scan(from, to int64, after Cursor, fn func(t *fsm.Txn, at Cursor) bool) error {
	type view struct {
		seq, size, start int64
		path             string
		endpoints        []fsm.Participant // nil: decode the table from the segment's start
	}
	var segs []view
	a.mu.RLock()
	for _, s := range a.segs {
		if s.seq < after.Seg || s.count == 0 || s.maxCreated < from || (to > 0 && s.minCreated >= to) {
			continue
		}
		v := view{seq: int64(s.seq), size: s.size, start: headerSize, path: s.path}
		if s.seq == after.Seg && s.holds(after.Off) {
			// endpoints is append-only: this prefix is the whole table of the first size bytes.
			v.start, v.endpoints = after.Off, s.endpoints[:len(s.endpoints):len(s.endpoints)]
		}
		segs = append(segs, v)
	}
	a.mu.RUnlock()
	for _, s := range segs {
		more, err := scanSegment(s.path, s.start, s.size, s.endpoints, func(t *fsm.Txn, off int64) bool {
			at := Cursor{uint64(s.seq), off}
			if at.Seg == after.Seg && off <= after.Off {
				return true
			}
			if t.CreatedAt < from || (to > 0 && t.CreatedAt >= to) {
				return true
			}
			return fn(t, at)
		})
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

// holds reports whether off is the offset of one of the segment's transaction records (a
// cursor Scan handed out), so that reading may start there. It runs under a.mu.
func (s *segment) holds(off int64) bool {
	if off <= headerSize || off >= s.size {
		return false
	}
	for _, e := range s.entries {
		if int64(e&0xffffffff) == off {
			return true
		}
	}
	return false
}

// scanSegment reads bytes [start, size) of a segment (start is the header's end, or the
// offset of a record when endpoints is the segment's table as of size) and calls fn for
// each transaction; it reports whether fn wanted more. A segment removed by retention
// meanwhile is skipped.
func scanSegment(path string, start, size int64, endpoints []fsm.Participant, fn func(t *fsm.Txn, off int64) bool) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, headerSize)
	if _, err := io.ReadFull(f, head); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := decodeHeader(head); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	fromTable := endpoints != nil
	b := make([]byte, size-start)
	if _, err := f.ReadAt(b, start); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	for pos := int64(0); pos < int64(len(b)); {
		off := start + pos
		kind, payload, n, err := parseRecord(b[pos:])
		if err != nil {
			return false, fmt.Errorf("%s at %d: %w", path, off, err)
		}
		d := newDec(payload)
		switch kind {
		case kindEndpoint:
			if !fromTable {
				endpoints = append(endpoints, decodeEndpoint(d))
			}
		case kindTxn:
			t := decodeTxn(d, endpoints)
			if err := d.End(); err != nil {
				return false, fmt.Errorf("%s at %d: %w", path, off, err)
			}
			if !fn(t, off) {
				return false, nil
			}
		}
		pos += int64(n)
	}
	return true, nil
}
