package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/version"
)

// Snapshot format: the magic "TXCS", a version byte, then records, each a uvarint length
// followed by that many bytes. Version 6 (written since this build) is version 5 with the
// transaction's trace context at the end of every transaction record (a tag byte: 2 none,
// 1 then 25 bytes of trace id, span id and flags, 0 then a string). Version 5 is version 4
// with the retention horizon (FSM.Horizon, varint) at the end of the header; presumed-abort
// records are ordinary transaction records with no participants. Version 4 is version 3
// with two fields at the end of every transaction record: retriedAt (varint) and the
// payloads (uvarint count, 0 or one per participant, then that many strings). Version 3:
//
//	header      applied, nTxns, nKeys, nMembers, nEndpoints (uvarints), level (uvarint),
//	            lastTs (varint), horizon (varint)
//	endpoints   nEndpoints records, one participant each, in table order
//	txns        nTxns records; a participant the table holds is named by its index
//	            (tag participantRef), any other inline
//	keys        nKeys records: key, id, createdAt
//	members     nMembers records: node id, HTTP address
//
// Records are length-prefixed so that Restore reads one at a time and never holds the whole
// stream in memory (version 2 is the exception, see below).
//
// Earlier versions, all still restored:
//
//   - Version 5 (31d74c1, the fast-mode build): as version 6 without the trace context.
//
//   - Version 4 (63b422e to fd03fea): as version 5 without the horizon (restored as 0).
//
//   - Version 3 (123ead3 to 0ebedb6): as version 4 without retriedAt and payloads.
//
//   - Version 1 (769af25 up to 56df141^): the header has no nEndpoints, level or lastTs;
//     then txns (participants inline), keys, members.
//
//   - Version 2, layout "v2a" (56df141 to 9b29729): header with nEndpoints; txns
//     (participants inline), keys, members, then the endpoint records last.
//
//   - Version 2, layout "v2b" (fa7ed3c to 2bbc0cb): header with nEndpoints; the endpoint
//     records first, then txns (participants the table holds named by index), keys, members.
//
// Version 2 is ambiguous: fa7ed3c moved the endpoint records ahead of the transactions
// without changing the version byte, so the byte alone does not say which layout follows.
// Restore buffers a version 2 stream (only old builds wrote one) and tries v2b, then v2a,
// accepting the first that parses completely: every record decodes with no bytes left over,
// the header's counts match the records, endpoint references are in range, and (v2b only)
// no participant is inline that the table holds, as the v2b writer always named those by
// index. When neither layout fits, the error names both failures. With no endpoint
// records both layouts are the same bytes.
const (
	snapshotMagic = "TXCS"
	// snapshotVersion 3 added level and lastTs to the header, and unlike the ambiguous
	// version 2 has one layout; version 4 added retriedAt and payloads to each transaction,
	// version 5 the retention horizon to the header, version 6 the trace context to each
	// transaction. Restore reads versions 1 to 6.
	snapshotVersion = 6
	// maxRecordBytes bounds one snapshot record; a larger length prefix is corruption.
	maxRecordBytes = 16 << 20
)

// layout is one record order a snapshot stream may have.
type layout int

const (
	layoutV1  layout = iota // no endpoint table
	layoutV2a               // version 2, endpoints last (56df141 to 9b29729)
	layoutV2b               // version 2, endpoints first (fa7ed3c to 2bbc0cb)
	layoutV3                // endpoints first, header with level and lastTs
	layoutV4                // as v3, transactions with retriedAt and payloads
	layoutV5                // as v4, header with the horizon
	layoutV6                // as v5, transactions with the trace context
)

type snapshot struct {
	txns      []*Txn
	keys      []keyRecord
	members   [][2]string
	endpoints []Participant
	applied   uint64
	level     uint32
	lastTs    int64
	horizon   int64
	archiver  Archiver // Persist waits for it (see Archiver.Covered); nil: none
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
	s := &snapshot{applied: f.applied, level: f.level, lastTs: f.lastTs, horizon: f.horizon, txns: make([]*Txn, 0, len(f.txns))}
	s.archiver = f.archiver
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
	if s.archiver != nil {
		if err := s.archiver.Covered(s.applied); err != nil {
			_ = sink.Cancel()
			return fmt.Errorf("archive: %w", err)
		}
	}
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() {}

// write writes the snapshot (snapshotVersion) in the format Restore reads; Persist and
// WriteSnapshot use it.
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
		n := binary.PutUvarint(lenBuf[:], uint64(len(e.B)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		_, err := bw.Write(e.B)
		e.B = e.B[:0]
		return err
	}
	e.Uvarint(s.applied)
	e.Uvarint(uint64(len(s.txns)))
	e.Uvarint(uint64(len(s.keys)))
	e.Uvarint(uint64(len(s.members)))
	e.Uvarint(uint64(len(s.endpoints)))
	e.Uvarint(uint64(s.level))
	e.Varint(s.lastTs)
	e.Varint(s.horizon)
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
		e.String(k.Key)
		e.id(k.ID)
		e.Varint(k.CreatedAt)
		if err := record(); err != nil {
			return err
		}
	}
	for _, m := range s.members {
		e.String(m[0])
		e.String(m[1])
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
	n, err := readSnapshot(bufio.NewReaderSize(rc, 64<<10))
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.txns, f.active, f.keys, f.members, f.applied = n.txns, n.active, n.keys, n.members, n.applied
	f.endpoints, f.endpointIdx = n.endpoints, n.endpointIdx
	f.level, f.lastTs, f.horizon = n.level, n.lastTs, n.horizon
	arch := f.archiver
	f.mu.Unlock()
	if arch != nil {
		arch.Restored(n.applied)
	}
	f.notifyAll()
	return nil
}

// snapshotReader is what readBody reads records from: a *bufio.Reader over the stream, or
// a *bytes.Reader over a buffered version 2 stream.
type snapshotReader interface {
	io.Reader
	io.ByteReader
}

// readSnapshot reads a whole snapshot stream into a new FSM.
func readSnapshot(r snapshotReader) (*FSM, error) {
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, fmt.Errorf("%w: snapshot header: %v", ErrCorrupt, err)
	}
	if string(magic[:4]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a txcoord snapshot", ErrCorrupt)
	}
	switch version := magic[4]; version {
	case 1:
		return readBody(r, layoutV1)
	case 2:
		// Ambiguous (see the format comment): buffer the rest and try both layouts.
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		nb, errB := readBody(bytes.NewReader(b), layoutV2b)
		if errB == nil {
			return nb, nil
		}
		na, errA := readBody(bytes.NewReader(b), layoutV2a)
		if errA == nil {
			return na, nil
		}
		return nil, fmt.Errorf("%w: version 2 snapshot fits neither layout: endpoints first (written by fa7ed3c to 2bbc0cb): %s; endpoints last (written by 56df141 to 9b29729): %s",
			ErrCorrupt, corruptDetail(errB), corruptDetail(errA))
	case 3:
		return readBody(r, layoutV3)
	case 4:
		return readBody(r, layoutV4)
	case 5:
		return readBody(r, layoutV5)
	case snapshotVersion:
		return readBody(r, layoutV6)
	default:
		return nil, fmt.Errorf("%w: snapshot version %d, this binary reads 1 to %d", ErrCorrupt, version, snapshotVersion)
	}
}

// corruptDetail is err's message without the ErrCorrupt prefix, for an error that names
// several.
func corruptDetail(err error) string {
	return strings.TrimPrefix(err.Error(), ErrCorrupt.Error()+": ")
}

// readBody reads the records after the version byte, in layout l, into a new FSM. It
// fails unless every record decodes with no bytes left over and the stream ends right
// after the last record the header counts.
func readBody(r snapshotReader, l layout) (*FSM, error) {
	f := New()
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
		return newDecoder(buf), nil
	}
	d, err := next()
	if err != nil {
		return nil, err
	}
	f.applied = d.Uvarint()
	nTxns, nKeys, nMembers := d.Uvarint(), d.Uvarint(), d.Uvarint()
	var nEndpoints uint64
	if l != layoutV1 {
		nEndpoints = d.Uvarint()
	}
	if l >= layoutV3 {
		level := d.Uvarint()
		f.lastTs = d.Varint()
		if d.Err == nil && level > uint64(version.FeatureLevel) {
			// As for a SetFeatures entry of that level: the log from here on may hold
			// commands this build cannot apply.
			return nil, fmt.Errorf("%w: snapshot of a cluster at feature level %d; this build supports up to %d", ErrCorrupt, level, version.FeatureLevel)
		}
		f.level = uint32(level)
	}
	if l >= layoutV5 {
		f.horizon = d.Varint()
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	if nEndpoints > MaxEndpoints {
		return nil, fmt.Errorf("%w: %d endpoints, at most %d", ErrCorrupt, nEndpoints, MaxEndpoints)
	}
	readEndpoints := func() error {
		for i := uint64(0); i < nEndpoints; i++ {
			d, err := next()
			if err != nil {
				return err
			}
			p := d.participant()
			if err := d.End(); err != nil {
				return err
			}
			if _, dup := f.endpointIdx[p]; dup {
				return fmt.Errorf("%w: endpoint %q listed twice", ErrCorrupt, p.Prepare)
			}
			f.endpointIdx[p] = uint32(len(f.endpoints))
			f.endpoints = append(f.endpoints, p)
		}
		return nil
	}
	if l == layoutV2b || l >= layoutV3 {
		if err := readEndpoints(); err != nil {
			return nil, err
		}
	}
	// The v2b writer named every participant the table holds by index; one inline is a
	// sign that the stream is really v2a.
	var tableOnly map[Participant]uint32
	if l == layoutV2b {
		tableOnly = f.endpointIdx
	}
	for i := uint64(0); i < nTxns; i++ {
		if d, err = next(); err != nil {
			return nil, err
		}
		t := decodeTxn(d, f.endpoints, tableOnly, l)
		if err := d.End(); err != nil {
			return nil, err
		}
		f.put(t)
	}
	for i := uint64(0); i < nKeys; i++ {
		if d, err = next(); err != nil {
			return nil, err
		}
		k := d.String()
		e := keyEntry{ID: d.id(), CreatedAt: d.Varint()}
		if err := d.End(); err != nil {
			return nil, err
		}
		f.keys[k] = e
	}
	for i := uint64(0); i < nMembers; i++ {
		if d, err = next(); err != nil {
			return nil, err
		}
		id, addr := d.String(), d.String()
		if err := d.End(); err != nil {
			return nil, err
		}
		f.members[id] = addr
	}
	if l == layoutV2a {
		if err := readEndpoints(); err != nil {
			return nil, err
		}
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after snapshot", ErrCorrupt)
	}
	return f, nil
}

func encodeTxn(e *encoder, t *Txn, refs map[Participant]uint32) {
	e.id(t.ID)
	e.String(t.Key)
	e.Varint(t.CreatedAt)
	e.Varint(t.Deadline - t.CreatedAt)
	e.Byte(byte(t.Status))
	e.Byte(byte(t.Decision))
	e.Varint(t.DecidedAt)
	e.Varint(t.FinishedAt)
	e.String(t.Note)
	e.Uvarint(t.Index)
	e.Uvarint(uint64(len(t.Participants)))
	for i, p := range t.Participants {
		if idx, ok := refs[p]; ok {
			e.Byte(participantRef)
			e.Uvarint(uint64(idx))
		} else {
			e.participant(p)
		}
		st := t.States[i]
		e.Byte(byte(st.Vote))
		e.String(st.Reason)
		e.Bool(st.Acked)
		e.Uvarint(uint64(st.Attempts))
		e.String(st.LastError)
	}
	e.Varint(t.RetriedAt)
	e.Uvarint(uint64(len(t.Payloads)))
	for _, pl := range t.Payloads {
		e.String(pl)
	}
	e.trace(t.Trace)
}

// decodeTxn reads a transaction record; participantRef indexes into endpoints. With
// tableOnly set, a participant written inline that tableOnly holds is an error. From
// layoutV4 on the record has retriedAt and payloads, from layoutV6 the trace context.
func decodeTxn(d *decoder, endpoints []Participant, tableOnly map[Participant]uint32, l layout) *Txn {
	t := &Txn{ID: d.id(), Key: d.String(), CreatedAt: d.Varint()}
	t.Deadline = t.CreatedAt + d.Varint()
	t.Status = Status(d.Byte())
	t.Decision = Decision(d.Byte())
	t.DecidedAt, t.FinishedAt = d.Varint(), d.Varint()
	t.Note = d.String()
	t.Index = d.Uvarint()
	n := d.Count(6)
	t.Participants = make([]Participant, n)
	t.States = make([]ParticipantState, n)
	for i := 0; i < n && d.Err == nil; i++ {
		if len(d.B) > 0 && d.B[0] == participantRef {
			d.Byte()
			if idx := d.Uvarint(); idx < uint64(len(endpoints)) {
				t.Participants[i] = endpoints[idx]
			} else {
				d.Fail("participant names an endpoint the snapshot does not hold")
			}
		} else {
			t.Participants[i] = d.participant()
			if _, ok := tableOnly[t.Participants[i]]; ok && d.Err == nil {
				d.Fail("participant inline though the endpoint table holds it")
			}
		}
		t.States[i] = ParticipantState{Vote: Vote(d.Byte()), Reason: d.String(), Acked: d.Bool(), Attempts: uint32(d.Uvarint()), LastError: d.String()}
	}
	if l >= layoutV4 {
		t.RetriedAt = d.Varint()
		if m := d.Count(1); m > 0 {
			if m != n {
				d.Fail(fmt.Sprintf("%d payloads for %d participants", m, n))
			}
			t.Payloads = make([]string, 0, m)
			for i := 0; i < m && d.Err == nil; i++ {
				t.Payloads = append(t.Payloads, d.String())
			}
		}
	}
	if l >= layoutV6 {
		t.Trace = d.trace()
	}
	if d.Err == nil && (t.Status < StatusPreparing || t.Status > StatusFailed) {
		d.Fail(fmt.Sprintf("status %d", t.Status))
	}
	return t
}

// WriteSnapshot writes the FSM's current state in snapshot format to w. Two FSMs that hold
// the same state write the same bytes, so tests and operators compare nodes by its hash.
func (f *FSM) WriteSnapshot(w io.Writer) error {
	s, _ := f.Snapshot()
	return s.(*snapshot).write(w)
}
