// Package codec holds the byte-level helpers shared by txcoord's persisted encodings: the
// FSM's log commands and snapshots (package fsm) and the archive's segment records
// (package archive). It fixes no format of its own: each package's format (and its
// version) stays documented where it is, and these helpers write exactly the bytes both
// wrote before (their golden tests check it byte for byte).
//
// Integers are Go's varints (encoding/binary); strings are a uvarint length and the bytes;
// a bool is one byte, 0 or 1; a transaction id is 16 raw bytes when it is a canonical
// lower-case UUID; a participant's three URLs take the derived form (tag 0 and the prepare
// URL) when commit and rollback are the prepare URL with its last "prepare" replaced, else
// tag 1 and the three URLs.
package codec

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// MaxLen bounds a decoded string or element count, so that a corrupt length prefix
// cannot make a decoder allocate gigabytes.
const MaxLen = 1 << 20

// Encoder appends to B.
type Encoder struct{ B []byte }

// Byte appends v.
func (e *Encoder) Byte(v byte) { e.B = append(e.B, v) }

// Uvarint appends v as an unsigned varint.
func (e *Encoder) Uvarint(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Varint appends v as a zig-zag varint.
func (e *Encoder) Varint(v int64) { e.B = binary.AppendVarint(e.B, v) }

// Bool appends 1 for true, 0 for false.
func (e *Encoder) Bool(v bool) {
	if v {
		e.B = append(e.B, 1)
	} else {
		e.B = append(e.B, 0)
	}
}

// String appends a uvarint length and s.
func (e *Encoder) String(s string) {
	e.Uvarint(uint64(len(s)))
	e.B = append(e.B, s...)
}

// Endpoints appends a participant's prepare, commit and rollback URLs: tag 0 and the
// prepare URL when the other two derive from it (DeriveEndpoints), else tag 1 and all three.
func (e *Encoder) Endpoints(prepare, commit, rollback string) {
	if c, r, ok := DeriveEndpoints(prepare); ok && c == commit && r == rollback {
		e.Byte(0)
		e.String(prepare)
		return
	}
	e.Byte(1)
	e.String(prepare)
	e.String(commit)
	e.String(rollback)
}

// DeriveEndpoints returns the commit and rollback URLs that a prepare URL implies: its
// last "prepare" replaced by "commit" and "rollback". ok is false when it has none.
func DeriveEndpoints(prepare string) (commit, rollback string, ok bool) {
	i := strings.LastIndex(prepare, "prepare")
	if i < 0 {
		return "", "", false
	}
	pre, post := prepare[:i], prepare[i+len("prepare"):]
	return pre + "commit" + post, pre + "rollback" + post, true
}

// Decoder reads B with a sticky error: after the first failure every read returns the
// zero value and Err stays the first error, which wraps Corrupt.
type Decoder struct {
	B       []byte
	Err     error
	Corrupt error // the sentinel every error wraps (fsm.ErrCorrupt, archive.ErrCorrupt)
}

// NewDecoder returns a Decoder of b whose errors wrap corrupt.
func NewDecoder(b []byte, corrupt error) Decoder { return Decoder{B: b, Corrupt: corrupt} }

// Fail records what went wrong, unless an error is recorded already.
func (d *Decoder) Fail(what string) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%w: %s", d.Corrupt, what)
	}
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if d.Err != nil || len(d.B) < 1 {
		d.Fail("short byte")
		return 0
	}
	v := d.B[0]
	d.B = d.B[1:]
	return v
}

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B)
	if n <= 0 {
		d.Fail("bad uvarint")
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Varint reads a zig-zag varint.
func (d *Decoder) Varint() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.B)
	if n <= 0 {
		d.Fail("bad varint")
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Bool reads a byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	switch d.Byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.Fail("bad bool")
		return false
	}
}

// Count reads a length prefix and checks it against MaxLen and what is left, so a corrupt
// count fails instead of allocating. minSize is the least bytes one element takes.
func (d *Decoder) Count(minSize int) int {
	n := d.Uvarint()
	if d.Err != nil {
		return 0
	}
	if n > MaxLen || n*uint64(minSize) > uint64(len(d.B)) {
		d.Fail("length out of range")
		return 0
	}
	return int(n)
}

// Bytes reads n raw bytes (aliasing B).
func (d *Decoder) Bytes(n int) []byte {
	if d.Err != nil || n < 0 || len(d.B) < n {
		d.Fail("short bytes")
		return nil
	}
	v := d.B[:n]
	d.B = d.B[n:]
	return v
}

// String reads a uvarint length and that many bytes.
func (d *Decoder) String() string {
	n := d.Count(1)
	if d.Err != nil {
		return ""
	}
	s := string(d.B[:n])
	d.B = d.B[n:]
	return s
}

// Endpoints reads what Encoder.Endpoints wrote.
func (d *Decoder) Endpoints() (prepare, commit, rollback string) {
	switch d.Byte() {
	case 0:
		p := d.String()
		c, r, ok := DeriveEndpoints(p)
		if !ok && d.Err == nil {
			d.Fail("derived participant without prepare")
			return "", "", ""
		}
		return p, c, r
	case 1:
		return d.String(), d.String(), d.String()
	default:
		d.Fail("bad participant tag")
		return "", "", ""
	}
}

// End returns the first error, or one when bytes are left over.
func (d *Decoder) End() error {
	if d.Err == nil && len(d.B) != 0 {
		d.Fail(fmt.Sprintf("%d trailing bytes", len(d.B)))
	}
	return d.Err
}

// UUIDBytes parses the canonical 36-character lower-case form only, so that decoding
// gives back exactly the string that was encoded.
func UUIDBytes(s string) (out [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return out, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if strings.ToLower(h) != h {
		return out, false
	}
	if _, err := hex.Decode(out[:], []byte(h)); err != nil {
		return out, false
	}
	return out, true
}

// UUIDString formats 16 bytes in the canonical lower-case form.
func UUIDString(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
