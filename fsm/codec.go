package fsm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrCorrupt is wrapped by every decoding error: the bytes are not a command or snapshot
// this binary can read.
var ErrCorrupt = errors.New("fsm: corrupt encoding")

// maxDecodedLen bounds a decoded string or slice length (bytes or elements), so that a
// corrupt length prefix cannot make the decoder allocate gigabytes.
const maxDecodedLen = 1 << 20

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *encoder) string(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// id writes a transaction id: 16 raw bytes when it is a canonical lower-case UUID (the ids
// txcoord mints), else a length-prefixed string. The tag byte keeps both forms decodable.
func (e *encoder) id(s string) {
	if raw, ok := uuidBytes(s); ok {
		e.byte(1)
		e.b = append(e.b, raw[:]...)
		return
	}
	e.byte(0)
	e.string(s)
}

// participantRef tags a participant a Begin names by its endpoint-table index; tags 0 and
// 1 are the inline forms written by participant.
const participantRef = 2

// participant writes the three URLs. When commit and rollback are the prepare URL with its
// last "prepare" replaced (the derived form, by far the most common), only prepare is stored.
func (e *encoder) participant(p Participant) {
	if i := strings.LastIndex(p.Prepare, "prepare"); i >= 0 {
		pre, post := p.Prepare[:i], p.Prepare[i+len("prepare"):]
		if p.Commit == pre+"commit"+post && p.Rollback == pre+"rollback"+post {
			e.byte(0)
			e.string(p.Prepare)
			return
		}
	}
	e.byte(1)
	e.string(p.Prepare)
	e.string(p.Commit)
	e.string(p.Rollback)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("short byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad bool")
		return false
	}
}

// count reads a length prefix and checks it against what is left, so a corrupt count
// fails instead of allocating. minSize is the least bytes one element takes.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > maxDecodedLen || n*uint64(minSize) > uint64(len(d.b)) {
		d.fail("length out of range")
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) id() string {
	switch d.byte() {
	case 0:
		return d.string()
	case 1:
		if d.err != nil || len(d.b) < 16 {
			d.fail("short uuid")
			return ""
		}
		s := uuidString(d.b[:16])
		d.b = d.b[16:]
		return s
	default:
		d.fail("bad id tag")
		return ""
	}
}

func (d *decoder) participant() Participant {
	switch d.byte() {
	case 0:
		p := d.string()
		i := strings.LastIndex(p, "prepare")
		if i < 0 {
			d.fail("derived participant without prepare")
			return Participant{}
		}
		pre, post := p[:i], p[i+len("prepare"):]
		return Participant{Prepare: p, Commit: pre + "commit" + post, Rollback: pre + "rollback" + post}
	case 1:
		return Participant{Prepare: d.string(), Commit: d.string(), Rollback: d.string()}
	default:
		d.fail("bad participant tag")
		return Participant{}
	}
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

// uuidBytes parses the canonical 36-character lower-case form only, so that decoding
// gives back exactly the string that was encoded.
func uuidBytes(s string) (out [16]byte, ok bool) {
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

func uuidString(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
