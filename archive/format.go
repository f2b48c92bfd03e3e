package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/txcoord/txcoord/fsm"
	"github.com/txcoord/txcoord/internal/codec"
)

// Segment format, version 1. A segment file (NNNNNNNNNNNNNNNN.seg, numbered from 1) is a
// header and then records:
//
//	header   "TXCA" | version (1 byte, 1) | through (8 bytes, big endian) | CRC-32C of the
//	         13 bytes before it (4 bytes, little endian)                     = 17 bytes
//	record   kind (1 byte) | uvarint n | n bytes of payload | CRC-32C of kind, n and the
//	         payload (4 bytes, little endian)
//
// through is the highest Raft index the archive held when the segment was started (see
// Archive.Through). The record kinds:
//
//	'E' endpoint   one participant, entered into the segment's own endpoint table at the next
//	               index (0, 1, ...): tag 0 + prepare URL when commit and rollback are derived
//	               from it as fsm does, else tag 1 + the three URLs (uvarint-length strings)
//	'T' txn        one archived transaction (encodeTxn); its participants name table indexes
//	'P' prune      the end of the records of one Prune entry: uvarint Raft index, uvarint
//	               number of 'T' records of that entry, varint unix ms when it was written
//	'C' covered    uvarint Raft index: every Prune up to it is in the archive (a snapshot at
//	               that index was about to be persisted)
//	'G' gap        uvarint from, uvarint to: this node's state was replaced by a snapshot at
//	               index to while the archive held only up to from, so Prunes in (from, to]
//	               never reached it (another node's archive may have them)
//
// The 'E' and 'T' records of one Prune come before its 'P' record, in the same segment.
// On reopening, records after the last 'P', 'C' or 'G' of the last segment, and a torn or
// corrupt last record, are cut off: those belong to a Prune that was not finished, which
// Raft hands over again when it replays its log (its index is above Through).
const (
	segMagic     = "TXCA"
	segVersion   = 1
	headerSize   = 17
	maxRecord    = 1 << 20 // a larger length prefix is corruption
	segSuffix    = ".seg"
	kindEndpoint = 'E'
	kindTxn      = 'T'
	kindPrune    = 'P'
	kindCovered  = 'C'
	kindGap      = 'G'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by errors for bytes that are not a valid segment or record.
var ErrCorrupt = errors.New("archive: corrupt segment")

func encodeHeader(through uint64) []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, segMagic...)
	b = append(b, segVersion)
	b = binary.BigEndian.AppendUint64(b, through)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeHeader(b []byte) (through uint64, err error) {
	if len(b) < headerSize {
		return 0, fmt.Errorf("%w: short header", ErrCorrupt)
	}
	if string(b[:4]) != segMagic {
		return 0, fmt.Errorf("%w: not an archive segment", ErrCorrupt)
	}
	if b[4] != segVersion {
		return 0, fmt.Errorf("%w: segment version %d, this build reads %d", ErrCorrupt, b[4], segVersion)
	}
	if crc32.Checksum(b[:13], castagnoli) != binary.LittleEndian.Uint32(b[13:17]) {
		return 0, fmt.Errorf("%w: header checksum", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b[5:13]), nil
}

// appendRecord appends one framed record to b.
func appendRecord(b []byte, kind byte, payload []byte) []byte {
	start := len(b)
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// errTorn says the bytes end inside a record.
var errTorn = errors.New("archive: torn record")

// parseRecord reads the record at the start of b: its kind, payload and total length.
// It returns errTorn when b ends inside the record and an error wrapping ErrCorrupt for a
// record that is complete but wrong.
func parseRecord(b []byte) (kind byte, payload []byte, n int, err error) {
	if len(b) < 1 {
		return 0, nil, 0, errTorn
	}
	size, m := binary.Uvarint(b[1:])
	switch {
	case m == 0:
		return 0, nil, 0, errTorn
	case m < 0 || size > maxRecord:
		return 0, nil, 0, fmt.Errorf("%w: record length", ErrCorrupt)
	}
	end := 1 + m + int(size)
	if len(b) < end+4 {
		return 0, nil, 0, errTorn
	}
	if crc32.Checksum(b[:end], castagnoli) != binary.LittleEndian.Uint32(b[end:end+4]) {
		return 0, nil, 0, fmt.Errorf("%w: record checksum", ErrCorrupt)
	}
	switch b[0] {
	case kindEndpoint, kindTxn, kindPrune, kindCovered, kindGap:
	default:
		return 0, nil, 0, fmt.Errorf("%w: record kind %d", ErrCorrupt, b[0])
	}
	return b[0], b[1+m : end], end + 4, nil
}

// enc and dec are the shared byte-level helpers (internal/codec); dec's errors wrap
// ErrCorrupt.
type (
	enc = codec.Encoder
	dec = codec.Decoder
)

func newDec(payload []byte) *dec {
	d := codec.NewDecoder(payload, ErrCorrupt)
	return &d
}

// encodeEndpoint writes one participant as fsm does in its log (codec.Encoder.Endpoints).
func encodeEndpoint(e *enc, p fsm.Participant) { e.Endpoints(p.Prepare, p.Commit, p.Rollback) }

func decodeEndpoint(d *dec) fsm.Participant {
	p, c, r := d.Endpoints()
	return fsm.Participant{Prepare: p, Commit: c, Rollback: r}
}

// Flags of a 'T' record's first byte.
const (
	flagUUID     = 1 << 0 // the id is 16 raw bytes (a canonical lower-case UUID)
	flagKey      = 1 << 1 // an idempotency key follows
	flagNote     = 1 << 2 // an operator note follows
	flagDecided  = 1 << 3 // DecidedAt is set
	flagFinished = 1 << 4 // FinishedAt is set
)

// Flags of a participant's state byte: the vote in the low 2 bits, then these.
const (
	stAcked     = 1 << 2
	stReason    = 1 << 3
	stLastError = 1 << 4
)

// encodeTxn writes t as a 'T' payload. ref returns a participant's index in the segment's
// endpoint table. Layout: flags | status (low 4 bits) and decision (high 4) | id (16 bytes,
// or uvarint-length string) | [key] | createdAt as varint ms after the id's UUIDv7
// timestamp (absolute ms for other ids) | varint deadline-createdAt | [varint
// decidedAt-createdAt] | [varint finishedAt-createdAt] | [note] | uvarint index | uvarint
// number of participants, each: uvarint endpoint index | state byte | uvarint attempts |
// [reason] | [lastError]. A 3-participant committed transaction takes about 37 bytes.
func encodeTxn(e *enc, t *fsm.Txn, ref func(fsm.Participant) uint32) {
	var flags byte
	raw, isUUID := codec.UUIDBytes(t.ID)
	if isUUID {
		flags |= flagUUID
	}
	if t.Key != "" {
		flags |= flagKey
	}
	if t.Note != "" {
		flags |= flagNote
	}
	if t.DecidedAt != 0 {
		flags |= flagDecided
	}
	if t.FinishedAt != 0 {
		flags |= flagFinished
	}
	e.Byte(flags)
	e.Byte(byte(t.Status)&0x0f | byte(t.Decision)<<4)
	if isUUID {
		e.B = append(e.B, raw[:]...)
	} else {
		e.String(t.ID)
	}
	if t.Key != "" {
		e.String(t.Key)
	}
	e.Varint(t.CreatedAt - idTime(raw, isUUID))
	e.Varint(t.Deadline - t.CreatedAt)
	if t.DecidedAt != 0 {
		e.Varint(t.DecidedAt - t.CreatedAt)
	}
	if t.FinishedAt != 0 {
		e.Varint(t.FinishedAt - t.CreatedAt)
	}
	if t.Note != "" {
		e.String(t.Note)
	}
	e.Uvarint(t.Index)
	e.Uvarint(uint64(len(t.Participants)))
	for i, p := range t.Participants {
		e.Uvarint(uint64(ref(p)))
		st := t.States[i]
		b := byte(st.Vote) & 3
		if st.Acked {
			b |= stAcked
		}
		if st.Reason != "" {
			b |= stReason
		}
		if st.LastError != "" {
			b |= stLastError
		}
		e.Byte(b)
		e.Uvarint(uint64(st.Attempts))
		if st.Reason != "" {
			e.String(st.Reason)
		}
		if st.LastError != "" {
			e.String(st.LastError)
		}
	}
}

// decodeTxn reads a 'T' payload; endpoints is the segment's table.
func decodeTxn(d *dec, endpoints []fsm.Participant) *fsm.Txn {
	flags := d.Byte()
	sd := d.Byte()
	t := &fsm.Txn{Status: fsm.Status(sd & 0x0f), Decision: fsm.Decision(sd >> 4)}
	var raw [16]byte
	isUUID := flags&flagUUID != 0
	if isUUID {
		copy(raw[:], d.Bytes(16))
		t.ID = codec.UUIDString(raw[:])
	} else {
		t.ID = d.String()
	}
	if flags&flagKey != 0 {
		t.Key = d.String()
	}
	t.CreatedAt = d.Varint() + idTime(raw, isUUID)
	t.Deadline = t.CreatedAt + d.Varint()
	if flags&flagDecided != 0 {
		t.DecidedAt = t.CreatedAt + d.Varint()
	}
	if flags&flagFinished != 0 {
		t.FinishedAt = t.CreatedAt + d.Varint()
	}
	if flags&flagNote != 0 {
		t.Note = d.String()
	}
	t.Index = d.Uvarint()
	n := d.Uvarint()
	if n > uint64(len(d.B))/3 {
		d.Fail("participant count")
		return t
	}
	t.Participants = make([]fsm.Participant, n)
	t.States = make([]fsm.ParticipantState, n)
	for i := range t.Participants {
		if idx := d.Uvarint(); idx < uint64(len(endpoints)) {
			t.Participants[i] = endpoints[idx]
		} else {
			d.Fail("endpoint index out of range")
		}
		b := d.Byte()
		st := fsm.ParticipantState{Vote: fsm.Vote(b & 3), Acked: b&stAcked != 0, Attempts: uint32(d.Uvarint())}
		if b&stReason != 0 {
			st.Reason = d.String()
		}
		if b&stLastError != 0 {
			st.LastError = d.String()
		}
		t.States[i] = st
		if d.Err != nil {
			break
		}
	}
	return t
}

// idTime is the unix ms timestamp of a UUIDv7 (its first 48 bits), 0 for other ids. Any
// 16 bytes give a value, so encoding and decoding agree whatever the UUID's version.
func idTime(raw [16]byte, isUUID bool) int64 {
	if !isUUID {
		return 0
	}
	var b [8]byte
	copy(b[2:], raw[:6])
	return int64(binary.BigEndian.Uint64(b[:]))
}
