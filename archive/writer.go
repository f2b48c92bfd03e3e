package archive

import (
	"fmt"
	"os"
	"sort"

	"github.com/txcoord/txcoord/fsm"
)

// writer is the writer goroutine's state: the open segment and its endpoint table.
type writer struct {
	opts    *Options
	f       *os.File
	seg     *segment
	refs    map[fsm.Participant]uint32
	through uint64 // written (not yet necessarily fsynced)
	dirty   bool
	buf     []byte
	e       enc
}

// openWriter opens the last segment for appending, or creates the first.
func (a *Archive) openWriter() (*writer, error) {
	w := &writer{opts: &a.opts, through: a.through, refs: map[fsm.Participant]uint32{}}
	if len(a.segs) == 0 {
		if err := w.create(a, 1); err != nil {
			return nil, err
		}
		return w, nil
	}
	s := a.segs[len(a.segs)-1]
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(s.size, 0); err != nil {
		f.Close()
		return nil, err
	}
	w.f, w.seg = f, s
	for i, p := range s.endpoints {
		w.refs[p] = uint32(i)
	}
	return w, nil
}

// create starts segment seq with the current Through in its header.
func (w *writer) create(a *Archive, seq uint64) error {
	path := a.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("archive: new segment: %w", err)
	}
	if _, err := f.Write(encodeHeader(w.through)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if d, err := os.Open(a.dir); err == nil {
		_ = d.Sync() // the new name is durable too
		d.Close()
	}
	s := &segment{seq: seq, path: path, size: headerSize}
	a.mu.Lock()
	a.segs = append(a.segs, s)
	a.mu.Unlock()
	w.f, w.seg = f, s
	clear(w.refs)
	return nil
}

// rotate seals the current segment and starts the next.
func (w *writer) rotate(a *Archive) error {
	if err := w.f.Sync(); err != nil {
		return err
	}
	w.dirty = false
	if err := w.f.Close(); err != nil {
		return err
	}
	return w.create(a, w.seg.seq+1)
}

// write writes items and fsyncs once.
func (w *writer) write(a *Archive, items []item) error {
	for _, it := range items {
		var err error
		switch it.kind {
		case itemPrune:
			err = w.prune(a, it.index, it.txns)
		case itemCovered:
			if it.index > w.through {
				w.e.B = w.e.B[:0]
				w.e.Uvarint(it.index)
				err = w.append(a, appendRecord(w.buf[:0], kindCovered, w.e.B), nil, nil)
				w.through = it.index
			}
		case itemRestored:
			if it.index > w.through {
				g := Gap{From: w.through, To: it.index}
				a.lg.Warn("the state was replaced by a snapshot beyond what the archive holds: transactions pruned in between are not in this node's archive",
					"from_index", g.From, "to_index", g.To)
				w.e.B = w.e.B[:0]
				w.e.Uvarint(g.From)
				w.e.Uvarint(g.To)
				err = w.append(a, appendRecord(w.buf[:0], kindGap, w.e.B), nil, nil)
				a.mu.Lock()
				a.gaps = append(a.gaps, g)
				a.mu.Unlock()
				w.through = it.index
			}
		}
		if err != nil {
			return err
		}
	}
	if !w.dirty {
		return nil
	}
	w.dirty = false
	return w.f.Sync()
}

type placed struct {
	t   *fsm.Txn
	off int64
}

// prune writes one Prune's records: new endpoints, the transactions (by id), the marker.
func (w *writer) prune(a *Archive, index uint64, txns []*fsm.Txn) error {
	if index <= w.through {
		return nil // already archived: a replay after a restart or a restore
	}
	if w.seg.size >= w.opts.SegmentBytes && w.seg.size > headerSize {
		if err := w.rotate(a); err != nil {
			return err
		}
	}
	sort.Slice(txns, func(i, j int) bool { return txns[i].ID < txns[j].ID })
	b := w.buf[:0]
	var newEndpoints []fsm.Participant
	places := make([]placed, 0, len(txns))
	ref := func(p fsm.Participant) uint32 { return w.refs[p] }
	for _, t := range txns {
		for _, p := range t.Participants {
			if _, ok := w.refs[p]; !ok {
				w.refs[p] = uint32(len(w.seg.endpoints) + len(newEndpoints))
				newEndpoints = append(newEndpoints, p)
				w.e.B = w.e.B[:0]
				encodeEndpoint(&w.e, p)
				b = appendRecord(b, kindEndpoint, w.e.B)
			}
		}
		w.e.B = w.e.B[:0]
		encodeTxn(&w.e, t, ref)
		places = append(places, placed{t, w.seg.size + int64(len(b))})
		b = appendRecord(b, kindTxn, w.e.B)
	}
	w.e.B = w.e.B[:0]
	w.e.Uvarint(index)
	w.e.Uvarint(uint64(len(txns)))
	w.e.Varint(w.opts.Now().UnixMilli())
	b = appendRecord(b, kindPrune, w.e.B)
	w.buf = b
	if err := w.append(a, b, newEndpoints, places); err != nil {
		return err
	}
	w.through = index
	return nil
}

// append writes b at the end of the segment and publishes what it holds to readers.
func (w *writer) append(a *Archive, b []byte, endpoints []fsm.Participant, places []placed) error {
	if _, err := w.f.Write(b); err != nil {
		return fmt.Errorf("archive: writing %s: %w", w.seg.path, err)
	}
	w.dirty = true
	a.mu.Lock()
	s := w.seg
	s.endpoints = append(s.endpoints, endpoints...)
	for _, p := range places {
		s.add(p.t.ID, p.off, p.t, a.seed)
	}
	a.written += int64(len(places))
	s.size += int64(len(b))
	a.mu.Unlock()
	if m := s.merged(); m != nil {
		a.mu.Lock()
		s.entries, s.sorted = m, len(m)
		a.mu.Unlock()
	}
	return nil
}

func (w *writer) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}
