package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/txcoord/txcoord/archive"
)

// TestHostLabelsAreBounded: past MaxHostLabels distinct participant hosts, calls are
// counted under host="other", so clients cannot grow the scrape without bound.
func TestHostLabelsAreBounded(t *testing.T) {
	m := New(Sources{})
	for i := 0; i < MaxHostLabels+50; i++ {
		m.Call(fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), "prepare", "ack", time.Millisecond)
		m.Retry(fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), "commit")
	}
	if n := testutil.CollectAndCount(m.calls); n != MaxHostLabels+1 {
		t.Fatalf("%d call series, want %d hosts + other", n, MaxHostLabels)
	}
	if got := testutil.ToFloat64(m.calls.WithLabelValues("other", "prepare", "ack")); got != 50 {
		t.Fatalf("other counted %v calls, want 50", got)
	}
	if n := testutil.CollectAndCount(m.retries); n != MaxHostLabels+1 {
		t.Fatalf("%d retry series, want %d", n, MaxHostLabels+1)
	}
}

type fakeArchive struct{ st archive.Stats }

func (f fakeArchive) Stats() archive.Stats { return f.st }

// TestArchiveSeries: the archive's Stats come out as the txcoord_archive_ series (counters
// as counters), the oldest record's age from its creation time; a node without an archive
// exports none of them.
func TestArchiveSeries(t *testing.T) {
	created := time.Now().Add(-90 * time.Second).UnixMilli()
	st := archive.Stats{Segments: 3, Bytes: 4200, Records: 100, Written: 60, Skipped: 1, Corrupt: 1, WriteErrors: 2,
		Gaps: []archive.Gap{{From: 0, To: 40}}, Oldest: created, Newest: created + 1000}
	m := New(Sources{Archive: fakeArchive{st}})
	want := `
# HELP txcoord_archive_bytes Size on disk of this node's archive of pruned transactions (all segment files).
# TYPE txcoord_archive_bytes gauge
txcoord_archive_bytes 4200
# HELP txcoord_archive_corrupt_segments Sealed segments whose reading stopped at a bad record when the archive opened (records after it cannot be read on this node).
# TYPE txcoord_archive_corrupt_segments gauge
txcoord_archive_corrupt_segments 1
# HELP txcoord_archive_gaps Raft index ranges whose pruned transactions this node's archive never received (its state was replaced by a snapshot); another node's archive has them.
# TYPE txcoord_archive_gaps gauge
txcoord_archive_gaps 1
# HELP txcoord_archive_records Archived transactions kept (retention deletes whole segments by --archive-max-bytes and --archive-max-age).
# TYPE txcoord_archive_records gauge
txcoord_archive_records 100
# HELP txcoord_archive_records_skipped_total Torn or corrupt records met when the archive opened at start: a torn last record cut off (Raft hands its Prune over again), or a bad record ending the readable part of a sealed segment.
# TYPE txcoord_archive_records_skipped_total counter
txcoord_archive_records_skipped_total 1
# HELP txcoord_archive_records_written_total Transaction records the archive wrote since the node started (a replayed Prune already archived is not written again).
# TYPE txcoord_archive_records_written_total counter
txcoord_archive_records_written_total 60
# HELP txcoord_archive_segments Segment files in the archive.
# TYPE txcoord_archive_segments gauge
txcoord_archive_segments 3
# HELP txcoord_archive_write_errors_total Failed archive writes since the node started; after the first, snapshots fail (the log is kept, nothing is lost) until the cause is fixed and the node restarted.
# TYPE txcoord_archive_write_errors_total counter
txcoord_archive_write_errors_total 2
`
	names := []string{"txcoord_archive_bytes", "txcoord_archive_corrupt_segments", "txcoord_archive_gaps", "txcoord_archive_records",
		"txcoord_archive_records_skipped_total", "txcoord_archive_records_written_total", "txcoord_archive_segments", "txcoord_archive_write_errors_total"}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	age := -1.0
	for _, f := range fams {
		if f.GetName() == "txcoord_archive_oldest_record_age_seconds" {
			age = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if age < 90 || age > 3600 {
		t.Fatalf("txcoord_archive_oldest_record_age_seconds = %v, want about 90 (created 90 s ago)", age)
	}

	fams, err = New(Sources{}).reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "txcoord_archive_") {
			t.Fatalf("a node without an archive exports %s", f.GetName())
		}
	}
}
