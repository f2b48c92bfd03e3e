// Package waterfall draws the spans of one trace as a PNG waterfall: one row per span,
// indented under its parent, with a bar from its start to its end on a common time axis.
// The picture of a trace in docs/observability.md is drawn by it from spans an OTLP
// receiver got (server's TestTracesOverOTLP with TXCOORD_TRACE_PNG set).
package waterfall

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/txcoord/txcoord/internal/tracing/otlptest"
)

const (
	rowH    = 24
	labelW  = 560
	barW    = 720
	margin  = 16
	headerH = 56
)

var (
	bg       = color.RGBA{255, 255, 255, 255}
	ink      = color.RGBA{30, 30, 30, 255}
	faint    = color.RGBA{225, 228, 232, 255}
	dim      = color.RGBA{110, 110, 110, 255}
	kindFill = map[string]color.RGBA{
		"SPAN_KIND_SERVER":   {66, 133, 244, 255},
		"SPAN_KIND_CLIENT":   {52, 168, 83, 255},
		"SPAN_KIND_INTERNAL": {251, 188, 4, 255},
	}
	ownFill = color.RGBA{155, 89, 182, 255} // spans of other services (the client, participants)
	errFill = color.RGBA{219, 68, 55, 255}
)

// row is one span placed in the tree.
type row struct {
	s     otlptest.Span
	depth int
}

// order returns the spans depth first, children by start time; spans whose parent is not
// among them are roots.
func order(spans []otlptest.Span) []row {
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	kids := map[string][]otlptest.Span{}
	var roots []otlptest.Span
	for _, s := range spans {
		if s.Parent != "" && ids[s.Parent] {
			kids[s.Parent] = append(kids[s.Parent], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(ss []otlptest.Span) {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Start.Before(ss[j].Start) })
	}
	var out []row
	var walk func(s otlptest.Span, d int)
	walk = func(s otlptest.Span, d int) {
		out = append(out, row{s, d})
		k := kids[s.SpanID]
		byStart(k)
		for _, c := range k {
			walk(c, d+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}

// label is the span's name and the attributes an on-call reader looks for.
func label(s otlptest.Span) string {
	parts := []string{s.Name}
	if p := s.Attrs["txcoord.participant"]; p != "" {
		p = strings.TrimPrefix(strings.TrimPrefix(p, "http://"), "https://")
		parts = append(parts, p)
	}
	for _, k := range []string{"txcoord.vote", "txcoord.result", "txcoord.attempt", "txcoord.decision", "txcoord.status", "txcoord.reason"} {
		if v := s.Attrs[k]; v != "" {
			parts = append(parts, strings.TrimPrefix(k, "txcoord.")+"="+v)
		}
	}
	return strings.Join(parts, "  ")
}

// Draw renders spans (one trace) to an image.
func Draw(spans []otlptest.Span) (image.Image, error) {
	rows := order(spans)
	if len(rows) == 0 {
		return nil, fmt.Errorf("no spans")
	}
	t0, t1 := rows[0].s.Start, rows[0].s.End
	for _, r := range rows {
		if r.s.Start.Before(t0) {
			t0 = r.s.Start
		}
		if r.s.End.After(t1) {
			t1 = r.s.End
		}
	}
	total := max(t1.Sub(t0), time.Millisecond)
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		return nil, err
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 13, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, err
	}
	w := margin*2 + labelW + barW
	h := headerH + len(rows)*rowH + margin
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{bg}, image.Point{}, draw.Src)
	text := func(x, y int, c color.Color, s string) {
		d := &font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	fill := func(x0, y0, x1, y1 int, c color.Color) {
		draw.Draw(img, image.Rect(x0, y0, x1, y1), &image.Uniform{c}, image.Point{}, draw.Src)
	}
	x0 := margin + labelW
	scale := func(t time.Time) int { return x0 + int(float64(barW-1)*float64(t.Sub(t0))/float64(total)) }
	text(margin, 22, ink, fmt.Sprintf("trace %s   %d spans   %.1f ms", rows[0].s.TraceID, len(rows), float64(total.Microseconds())/1000))
	// Time axis: ten ticks.
	for i := 0; i <= 10; i++ {
		x := x0 + (barW-1)*i/10
		fill(x, headerH-8, x+1, h-margin, faint)
		ms := float64(total.Microseconds()) / 1000 * float64(i) / 10
		text(x-10, headerH-14, dim, fmt.Sprintf("%.0f ms", ms))
	}
	for i, r := range rows {
		y := headerH + i*rowH
		if i%2 == 1 {
			fill(margin, y, w-margin, y+rowH, color.RGBA{248, 249, 250, 255})
		}
		c, ok := kindFill[r.s.Kind]
		if !strings.HasPrefix(r.s.Name, "txcoord.") || !ok {
			c = ownFill
		}
		if r.s.Error {
			c = errFill
		}
		bx0, bx1 := scale(r.s.Start), scale(r.s.End)
		fill(bx0, y+5, max(bx1, bx0+2), y+rowH-5, c)
		lbl := label(r.s)
		if len(r.s.Links) > 0 {
			lbl += "  (linked to trace " + r.s.Links[0].TraceID[:8] + "…)"
		}
		text(margin+r.depth*18, y+rowH-7, ink, truncate(face, lbl, labelW-r.depth*18-8))
		dur := fmt.Sprintf("%.2f ms", float64(r.s.End.Sub(r.s.Start).Microseconds())/1000)
		tx := bx1 + 4
		if tx+60 > w-margin {
			tx = bx0 - 64
		}
		text(tx, y+rowH-7, dim, dur)
	}
	return img, nil
}

func truncate(face font.Face, s string, width int) string {
	for font.MeasureString(face, s).Ceil() > width && len(s) > 1 {
		s = strings.TrimSuffix(s[:len(s)-2], "…") + "…"
	}
	return s
}

// WriteFile draws spans and writes the PNG to path.
func WriteFile(path string, spans []otlptest.Span) error {
	img, err := Draw(spans)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
