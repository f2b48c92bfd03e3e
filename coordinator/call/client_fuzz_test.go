package call

import (
	"errors"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/participant/protocol"
)

// FuzzParseReply: ParseReply never panics; it succeeds only with status ACK or NACK (a
// NACK always with a bounded, non-empty reason, an ACK with none), and every failure is a
// *CallError of kind KindReply.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		`{"status":"ACK"}`,
		`{"status":"NACK","reason":"no rooms"}`,
		`{"status":"NACK"}`,
		`{"status":"NACK","reason":""}`,
		`{"status":"ACK","reason":"ignored"}`,
		`{"status":"ack"}`,
		`{"status":"OK"}`,
		`{"status":1}`,
		`{"status":null}`,
		`{"Status":"ACK","extra":{"nested":[1,2,3]}}`,
		`{"status":"NACK","reason":"` + strings.Repeat("é", 400) + `"}`,
		`{"status":"ACK"} trailing`,
		`[]`, `null`, `""`, `0`, ``, `   `, `{`, `<html>502</html>`, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseReply(raw)
		if err != nil {
			var ce *CallError
			if !errors.As(err, &ce) || ce.Kind != KindReply || ce.Msg == "" {
				t.Fatalf("error %T %v, want a *CallError of kind %q", err, err, KindReply)
			}
			if r != (protocol.Reply{}) {
				t.Fatalf("reply %+v returned with an error", r)
			}
			return
		}
		switch r.Status {
		case protocol.ACK:
			if r.Reason != "" {
				t.Fatalf("ACK with reason %q", r.Reason)
			}
		case protocol.NACK:
			if r.Reason == "" || len(r.Reason) > 512+len("...") {
				t.Fatalf("NACK reason of %d bytes", len(r.Reason))
			}
		default:
			t.Fatalf("success with status %q", r.Status)
		}
	})
}
