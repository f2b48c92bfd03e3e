package fsm

import (
	"encoding/hex"
	"errors"
	"strings"

	"github.com/txcoord/txcoord/internal/codec"
)

// ErrCorrupt is wrapped by every decoding error: the bytes are not a command or snapshot
// this binary can read.
var ErrCorrupt = errors.New("fsm: corrupt encoding")

// maxDecodedLen bounds a decoded string or slice length (bytes or elements), so that a
// corrupt length prefix cannot make the decoder allocate gigabytes.
const maxDecodedLen = codec.MaxLen

// encoder and decoder are the shared byte-level helpers (internal/codec) with the FSM's
// own forms of an id and a participant.
type encoder struct{ codec.Encoder }

type decoder struct{ codec.Decoder }

func newDecoder(b []byte) *decoder { return &decoder{codec.NewDecoder(b, ErrCorrupt)} }

// id writes a transaction id: 16 raw bytes when it is a canonical lower-case UUID (the ids
// txcoord mints), else a length-prefixed string. The tag byte keeps both forms decodable.
func (e *encoder) id(s string) {
	if raw, ok := uuidBytes(s); ok {
		e.Byte(1)
		e.B = append(e.B, raw[:]...)
		return
	}
	e.Byte(0)
	e.String(s)
}

// trace writes a W3C traceparent: tag 1 and 25 raw bytes (trace id, span id, flags) for
// the version-00 form the coordinator writes, else tag 0 and the text. Tag 2 is "".
func (e *encoder) trace(s string) {
	if s == "" {
		e.Byte(2)
		return
	}
	if raw, ok := traceBytes(s); ok {
		e.Byte(1)
		e.B = append(e.B, raw[:]...)
		return
	}
	e.Byte(0)
	e.String(s)
}

// traceBytes parses "00-<32 hex>-<16 hex>-<2 hex>" in lower case only, so that decoding
// gives back exactly the string that was encoded.
func traceBytes(s string) (out [25]byte, ok bool) {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return out, false
	}
	h := s[3:35] + s[36:52] + s[53:55]
	if strings.ToLower(h) != h {
		return out, false
	}
	if _, err := hex.Decode(out[:], []byte(h)); err != nil {
		return out, false
	}
	return out, true
}

// participantRef tags a participant a Begin names by its endpoint-table index; tags 0 and
// 1 are the inline forms written by participant.
const participantRef = 2

// participant writes the three URLs. When commit and rollback are the prepare URL with its
// last "prepare" replaced (the derived form, by far the most common), only prepare is stored.
func (e *encoder) participant(p Participant) { e.Endpoints(p.Prepare, p.Commit, p.Rollback) }

func (d *decoder) id() string {
	switch d.Byte() {
	case 0:
		return d.String()
	case 1:
		if d.Err != nil || len(d.B) < 16 {
			d.Fail("short uuid")
			return ""
		}
		s := uuidString(d.B[:16])
		d.B = d.B[16:]
		return s
	default:
		d.Fail("bad id tag")
		return ""
	}
}

func (d *decoder) trace() string {
	switch d.Byte() {
	case 0:
		s := d.String()
		if len(s) > MaxTraceLen {
			d.Fail("trace context too long")
		}
		return s
	case 1:
		if d.Err != nil || len(d.B) < 25 {
			d.Fail("short trace context")
			return ""
		}
		h := hex.EncodeToString(d.B[:25])
		d.B = d.B[25:]
		return "00-" + h[:32] + "-" + h[32:48] + "-" + h[48:]
	case 2:
		return ""
	default:
		d.Fail("bad trace tag")
		return ""
	}
}

func (d *decoder) participant() Participant {
	p, c, r := d.Endpoints()
	return Participant{Prepare: p, Commit: c, Rollback: r}
}

func uuidBytes(s string) ([16]byte, bool) { return codec.UUIDBytes(s) }

func uuidString(b []byte) string { return codec.UUIDString(b) }
