package waterfall

import (
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/tracing/otlptest"
)

// TestOrderAndDraw: children follow their parent, by start time; a span whose parent is
// not in the trace is a root; the picture has one row per span.
func TestOrderAndDraw(t *testing.T) {
	t0 := time.Unix(100, 0)
	spans := []otlptest.Span{
		{SpanID: "b", Parent: "a", Name: "late child", Start: t0.Add(3 * time.Millisecond), End: t0.Add(4 * time.Millisecond)},
		{SpanID: "a", Parent: "remote", Name: "root", Start: t0, End: t0.Add(5 * time.Millisecond), TraceID: "0af7651916cd43dd8448eb211c80319c"},
		{SpanID: "c", Parent: "a", Name: "early child", Start: t0.Add(time.Millisecond), End: t0.Add(2 * time.Millisecond), Error: true},
	}
	rows := order(spans)
	var names []string
	for _, r := range rows {
		names = append(names, r.s.Name)
	}
	if len(rows) != 3 || names[0] != "root" || names[1] != "early child" || names[2] != "late child" || rows[1].depth != 1 {
		t.Fatalf("order %v", names)
	}
	img, err := Draw(spans)
	if err != nil {
		t.Fatal(err)
	}
	if h := img.Bounds().Dy(); h != headerH+3*rowH+margin {
		t.Fatalf("height %d for 3 rows", h)
	}
	if _, err := Draw(nil); err == nil {
		t.Fatal("Draw of no spans succeeded")
	}
}
