package codec

import (
	"bytes"
	"errors"
	"testing"
)

var errTest = errors.New("test: corrupt")

// The forms both fsm and archive rely on, byte for byte, and errors that wrap the
// caller's sentinel and stick.
func TestForms(t *testing.T) {
	var e Encoder
	e.Byte(7)
	e.Uvarint(300)
	e.Varint(-2)
	e.Bool(true)
	e.String("ab")
	e.Endpoints("http://h/p/prepare", "http://h/p/commit", "http://h/p/rollback") // derived
	e.Endpoints("http://h/x", "http://h/y", "http://h/z")                         // explicit
	want := []byte{7, 0xac, 0x02, 0x03, 1, 2, 'a', 'b', 0, 18}
	want = append(want, "http://h/p/prepare"...)
	want = append(want, 1, 10)
	want = append(want, "http://h/x"...)
	want = append(want, 10)
	want = append(want, "http://h/y"...)
	want = append(want, 10)
	want = append(want, "http://h/z"...)
	if !bytes.Equal(e.B, want) {
		t.Fatalf("encoded % x\nwant    % x", e.B, want)
	}
	d := NewDecoder(e.B, errTest)
	if d.Byte() != 7 || d.Uvarint() != 300 || d.Varint() != -2 || !d.Bool() || d.String() != "ab" {
		t.Fatalf("decoded wrong: %v", d.Err)
	}
	if p, c, r := d.Endpoints(); p != "http://h/p/prepare" || c != "http://h/p/commit" || r != "http://h/p/rollback" {
		t.Fatalf("derived endpoints: %s %s %s", p, c, r)
	}
	if p, c, r := d.Endpoints(); p != "http://h/x" || c != "http://h/y" || r != "http://h/z" {
		t.Fatalf("explicit endpoints: %s %s %s", p, c, r)
	}
	if err := d.End(); err != nil {
		t.Fatal(err)
	}

	bad := NewDecoder([]byte{5, 'a'}, errTest) // a string longer than what is left
	if s := bad.String(); s != "" || !errors.Is(bad.Err, errTest) {
		t.Fatalf("short string: %q, %v", s, bad.Err)
	}
	first := bad.Err
	bad.Byte()
	if bad.End() != first {
		t.Fatalf("the first error does not stick: %v then %v", first, bad.Err)
	}
	noPrepare := NewDecoder([]byte{0, 3, 'x', 'y', 'z'}, errTest)
	if noPrepare.Endpoints(); !errors.Is(noPrepare.Err, errTest) {
		t.Fatalf("a derived form without \"prepare\" decoded: %v", noPrepare.Err)
	}
	if raw, ok := UUIDBytes("01a227c1-0000-7000-8000-0000000000ff"); !ok || UUIDString(raw[:]) != "01a227c1-0000-7000-8000-0000000000ff" {
		t.Fatal("UUID round trip")
	}
	if _, ok := UUIDBytes("01A227C1-0000-7000-8000-0000000000FF"); ok {
		t.Fatal("an upper-case UUID took the 16-byte form (it would decode as another string)")
	}
}
