package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/hashicorp/raft"
)

// Snapshot format: the magic "TXCS", a version byte, then records, each a uvarint length
// followed by that many bytes: first a header (counts), then one record per transaction,
// per idempotency key and per member. Records are length-prefixed so that Restore reads
// one at a time and never holds the whole stream in memory.
const (
	snapshotMagic = "TXCS"
	// snapshotVersion 2 added the endpoint table; Restore still reads version 1.
	snapshotVersion = 2
	// maxRecordBytes bounds one snapshot record; a larger length prefix is corruption.
	maxRecordBytes = 16 << 20
)

type snapshot struct {
	txns      []*Txn
	keys      []keyRecord
	members   [][2]string
	endpoints []Participant
	applied   uint64
}

type keyRecord struct {
	Key string
	keyEntry
}

// Snapshot implements raft.FSM. It copies the indexes under a read lock; records are
// immutable, so Persist encodes them while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &snapshot{applied: f.applied, txns: make([]*Txn, 0, len(f.txns))}
	for _, t := range f.txns {
		s.txns = append(s.txns, t)
	}
	for k, e := range f.keys {
		s.keys = append(s.keys, keyRecord{Key: k, keyEntry: e})
	}
	for id, addr := range f.members {
		s.members = append(s.members, [2]string{id, addr})
	}
	// The table is append-only, so the prefix up to its current length never changes.
	s.endpoints = f.endpoints[:len(f.endpoints):len(f.endpoints)]
	return s, nil
}

// Persist streams the snapshot to sink and cancels the sink on any error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() {}

// WriteTo writes the snapshot in the format Restore reads; Persist uses it and so can tools.
func (s *snapshot) write(w io.Writer) error {
	// Sorting makes two snapshots of the same state byte-identical, which the tests and the
	// state-hash check across nodes rely on.
	sort.Slice(s.txns, func(i, j int) bool { return s.txns[i].ID < s.txns[j].ID })
	sort.Slice(s.keys, func(i, j int) bool { return s.keys[i].Key < s.keys[j].Key })
	sort.Slice(s.members, func(i, j int) bool { return s.members[i][0] < s.members[j][0] })
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if err := bw.WriteByte(snapshotVersion); err != nil {
		return err
	}
	var e encoder
	record := func() error {
		var lenBuf [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(lenBuf[:], uint64(len(e.b)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		_, err := bw.Write(e.b)
		e.b = e.b[:0]
		return err
	}
	e.uvarint(s.applied)
	e.uvarint(uint64(len(s.txns)))
	e.uvarint(uint64(len(s.keys)))
	e.uvarint(uint64(len(s.members)))
	e.uvarint(uint64(len(s.endpoints)))
	if err := record(); err != nil {
		return err
	}
	// The endpoint table comes first, in table order (Begin entries in the log refer to
	// its indexes), so that transactions can name their participants by index too: most
	// share a few services, and restored records then share the table's strings.
	refs := make(map[Participant]uint32, len(s.endpoints))
	for i, p := range s.endpoints {
		refs[p] = uint32(i)
		e.participant(p)
		if err := record(); err != nil {
			return err
		}
	}
	for _, t := range s.txns {
		encodeTxn(&e, t, refs)
		if err := record(); err != nil {
			return err
		}
	}
	for _, k := range s.keys {
		e.string(k.Key)
		e.id(k.ID)
		e.varint(k.CreatedAt)
		if err := record(); err != nil {
			return err
		}
	}
	for _, m := range s.members {
		e.string(m[0])
		e.string(m[1])
		if err := record(); err != nil {
			return err
		}
	}

	return bw.Flush()
}

// Restore implements raft.FSM: it builds new state from a snapshot stream and swaps it in
// whole, so a failed restore leaves the old state untouched. It returns an error wrapping
// ErrCorrupt for a stream it cannot read.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	n := New()
	applied, err := n.readSnapshot(bufio.NewReaderSize(rc, 64<<10))
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.txns, f.active, f.keys, f.members, f.applied = n.txns, n.active, n.keys, n.members, applied
	f.endpoints, f.endpointIdx = n.endpoints, n.endpointIdx
	f.mu.Unlock()
	f.notifyAll()
	return nil
}

func (f *FSM) readSnapshot(r *bufio.Reader) (uint64, error) {
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil {
		return 0, fmt.Errorf("%w: snapshot header: %v", ErrCorrupt, err)
	}
	if string(magic[:4]) != snapshotMagic {
		return 0, fmt.Errorf("%w: not a txcoord snapshot", ErrCorrupt)
	}
	version := magic[4]
	if version != 1 && version != snapshotVersion {
		return 0, fmt.Errorf("%w: snapshot version %d, this binary reads 1 to %d", ErrCorrupt, version, snapshotVersion)
	}
	var buf []byte
	next := func() (*decoder, error) {
		size, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot record length: %v", ErrCorrupt, err)
		}
		if size > maxRecordBytes {
			return nil, fmt.Errorf("%w: snapshot record of %d bytes", ErrCorrupt, size)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("%w: snapshot record: %v", ErrCorrupt, err)
		}
		return &decoder{b: buf}, nil
	}
	d, err := next()
	if err != nil {
		return 0, err
	}
	applied := d.uvarint()
	nTxns, nKeys, nMembers := d.uvarint(), d.uvarint(), d.uvarint()
	var nEndpoints uint64
	if version >= 2 {
		nEndpoints = d.uvarint()
	}
	if err := d.end(); err != nil {
		return 0, err
	}
	if nEndpoints > MaxEndpoints {
		return 0, fmt.Errorf("%w: %d endpoints, at most %d", ErrCorrupt, nEndpoints, MaxEndpoints)
	}
	for i := uint64(0); i < nEndpoints; i++ {
		if d, err = next(); err != nil {
			return 0, err
		}
		p := d.participant()
		if err := d.end(); err != nil {
			return 0, err
		}
		if _, dup := f.endpointIdx[p]; dup {
			return 0, fmt.Errorf("%w: endpoint %q listed twice", ErrCorrupt, p.Prepare)
		}
		f.endpointIdx[p] = uint32(len(f.endpoints))
		f.endpoints = append(f.endpoints, p)
	}
	for i := uint64(0); i < nTxns; i++ {
		if d, err = next(); err != nil {
			return 0, err
		}
		t := decodeTxn(d, f.endpoints)
		if err := d.end(); err != nil {
			return 0, err
		}
		f.put(t)
	}
	for i := uint64(0); i < nKeys; i++ {
		if d, err = next(); err != nil {
			return 0, err
		}
		k := d.string()
		e := keyEntry{ID: d.id(), CreatedAt: d.varint()}
		if err := d.end(); err != nil {
			return 0, err
		}
		f.keys[k] = e
	}
	for i := uint64(0); i < nMembers; i++ {
		if d, err = next(); err != nil {
			return 0, err
		}
		id, addr := d.string(), d.string()
		if err := d.end(); err != nil {
			return 0, err
		}
		f.members[id] = addr
	}

	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("%w: trailing data after snapshot", ErrCorrupt)
	}
	return applied, nil
}

func encodeTxn(e *encoder, t *Txn, refs map[Participant]uint32) {
	e.id(t.ID)
	e.string(t.Key)
	e.varint(t.CreatedAt)
	e.varint(t.Deadline - t.CreatedAt)
	e.byte(byte(t.Status))
	e.byte(byte(t.Decision))
	e.varint(t.DecidedAt)
	e.varint(t.FinishedAt)
	e.string(t.Note)
	e.uvarint(t.Index)
	e.uvarint(uint64(len(t.Participants)))
	for i, p := range t.Participants {
		if idx, ok := refs[p]; ok {
			e.byte(participantRef)
			e.uvarint(uint64(idx))
		} else {
			e.participant(p)
		}
		st := t.States[i]
		e.byte(byte(st.Vote))
		e.string(st.Reason)
		e.bool(st.Acked)
		e.uvarint(uint64(st.Attempts))
		e.string(st.LastError)
	}
}

func decodeTxn(d *decoder, endpoints []Participant) *Txn {
	t := &Txn{ID: d.id(), Key: d.string(), CreatedAt: d.varint()}
	t.Deadline = t.CreatedAt + d.varint()
	t.Status = Status(d.byte())
	t.Decision = Decision(d.byte())
	t.DecidedAt, t.FinishedAt = d.varint(), d.varint()
	t.Note = d.string()
	t.Index = d.uvarint()
	n := d.count(6)
	t.Participants = make([]Participant, n)
	t.States = make([]ParticipantState, n)
	for i := 0; i < n && d.err == nil; i++ {
		if len(d.b) > 0 && d.b[0] == participantRef {
			d.byte()
			if idx := d.uvarint(); idx < uint64(len(endpoints)) {
				t.Participants[i] = endpoints[idx]
			} else {
				d.fail("participant names an endpoint the snapshot does not hold")
			}
		} else {
			t.Participants[i] = d.participant()
		}
		t.States[i] = ParticipantState{Vote: Vote(d.byte()), Reason: d.string(), Acked: d.bool(), Attempts: uint32(d.uvarint()), LastError: d.string()}
	}
	if d.err == nil && (t.Status < StatusPreparing || t.Status > StatusFailed) {
		d.fail(fmt.Sprintf("status %d", t.Status))
	}
	return t
}

// WriteSnapshot writes the FSM's current state in snapshot format to w. Two FSMs that hold
// the same state write the same bytes, so tests and operators compare nodes by its hash.
func (f *FSM) WriteSnapshot(w io.Writer) error {
	s, _ := f.Snapshot()
	return s.(*snapshot).write(w)
}
