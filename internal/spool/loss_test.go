package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// segmentOffsets returns the offsets of the records of a well-formed
// segment file.
func segmentOffsets(tb testing.TB, path string) []int64 {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var offs []int64
	for off := int64(len(Magic)); off < int64(len(b)); {
		offs = append(offs, off)
		off += recordHeader + int64(binary.LittleEndian.Uint32(b[off:]))
	}
	return offs
}

// TestDamageCountedOnceAndOnlyDamagedLost is the case: in a spool
// of 596 records, one record's length field is corrupted and one byte of
// another record elsewhere is flipped. Before, the corrupt length ended its
// segment (109 records lost, 2 counted). Now reading resynchronises: the
// record with the bad length is recovered by its checksum, the flipped
// one is lost and counted once, and nothing else is lost.
func TestDamageCountedOnceAndOnlyDamagedLost(t *testing.T) {
	const n = 596
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	// A length field in the middle of the first segment, a payload byte
	// in the middle of the second.
	offs := segmentOffsets(t, segs[0])
	writeAt(t, segs[0], offs[len(offs)/2], []byte{0x37, 0x01, 0, 0})
	offs2 := segmentOffsets(t, segs[1])
	b, _ := os.ReadFile(segs[1])
	b[offs2[len(offs2)/3]+recordHeader+3] ^= 0x40
	if err := os.WriteFile(segs[1], b, 0o640); err != nil {
		t.Fatal(err)
	}
	lostIndex := len(offs) + len(offs2)/3

	s2, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	if got := s2.Records(); got != n-1 {
		t.Errorf("Records() after Open = %d, want %d: the gauge must not count lost records", got, n-1)
	}
	// Reading twice must not count twice: read part of the damaged
	// segment, close, then drain.
	seg, _, _ := s2.Oldest()
	r, _ := s2.Open(seg)
	r.Next()
	r.Close()
	got := drain(t, s2)
	want := append(wantRecords(0, lostIndex), wantRecords(lostIndex+1, n)...)
	if !equalStrings(got, want) {
		t.Errorf("read %d records, want %d: every record but the flipped one (%d)", len(got), len(want), lostIndex)
	}
	if l := loss.get(LossCorrupt); l != 1 {
		t.Errorf("OnLoss(%s) = %d, want exactly 1", LossCorrupt, l)
	}
	if l := loss.getBytes(); l != 0 {
		t.Errorf("OnLostBytes = %d, want 0", l)
	}
	if !strings.Contains(logs.String(), "record recovered") {
		t.Errorf("the recovered record is not logged:\n%s", logs.String())
	}
	if s2.Bytes() != 0 || s2.Records() != 0 {
		t.Errorf("after the drain: Bytes %d, Records %d, want 0, 0", s2.Bytes(), s2.Records())
	}
}

// TestDamageDuringRunCountedOnce: a segment written by this process is
// damaged on disk before it is read; a replay that reads part of it, fails
// and starts over must count the loss once, and the records gauge must
// drop by it.
func TestDamageDuringRunCountedOnce(t *testing.T) {
	s, loss, _ := openTest(t, Config{SegmentBytes: 4096})
	for i := range 100 {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	seg, _, err := s.Oldest()
	if err != nil {
		t.Fatal(err)
	}
	offs := segmentOffsets(t, seg.Path)
	b, _ := os.ReadFile(seg.Path)
	b[offs[5]+recordHeader] ^= 1
	b[offs[6]+recordHeader] ^= 1 // two adjacent bad records: framing still says two
	if err := os.WriteFile(seg.Path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	before := s.Records()
	for range 3 {
		r, _ := s.Open(seg)
		for range 10 {
			r.Next()
		}
		r.Close()
	}
	if l := loss.get(LossCorrupt); l != 2 {
		t.Errorf("OnLoss after three partial reads = %d, want 2", l)
	}
	if got := s.Records(); got != before-2 {
		t.Errorf("Records() = %d, want %d", got, before-2)
	}
}

// TestSegmentsWithoutRecords: segments left with no valid record are
// handled once at Open: empty ones (a crash right after creating them)
// deleted, damaged ones moved aside as .corrupt with one log line; neither
// counts in Bytes any more. Before, they stayed forever and counted.
func TestSegmentsWithoutRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(rec(0), rec(1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	valid := lastSegment(t, dir)
	st, _ := os.Stat(valid)
	files := map[string][]byte{
		"00000000000000000010.seg": nil,
		"00000000000000000011.seg": []byte(Magic),
		"00000000000000000012.seg": []byte(Magic[:3]),
		"00000000000000000013.seg": append([]byte(Magic), bytes.Repeat([]byte{0xaa}, 166)...),
		"00000000000000000014.seg": append([]byte(Magic), AppendRecord(nil, []byte("torn"))[:9]...),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	s2, loss, logs := openTest(t, Config{Dir: dir})
	if got := s2.Bytes(); got != st.Size() {
		t.Errorf("Bytes() = %d, want %d (the one valid segment)", got, st.Size())
	}
	if got := s2.Records(); got != 2 {
		t.Errorf("Records() = %d, want 2", got)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	var names []string
	for _, p := range left {
		names = append(names, filepath.Base(p))
	}
	want := []string{"00000000000000000001.seg", "00000000000000000013.seg.corrupt", "00000000000000000014.seg.corrupt", "LOCK"}
	if !equalStrings(names, want) {
		t.Errorf("files after Open = %v, want %v", names, want)
	}
	if l := loss.getBytes(); l != 166 {
		t.Errorf("OnLostBytes = %d, want 166 (the garbled segment)", l)
	}
	if l := loss.get(LossCorrupt); l != 1 {
		t.Errorf("OnLoss = %d, want 1 (the torn record)", l)
	}
	if n := strings.Count(logs.String(), "moved aside"); n != 2 {
		t.Errorf("%d moved-aside lines, want 2:\n%s", n, logs.String())
	}
	s2.Close()
	// Once: a second Open finds nothing more to do.
	s3, loss3, logs3 := openTest(t, Config{Dir: dir})
	if loss3.get(LossCorrupt) != 0 || loss3.getBytes() != 0 || strings.Contains(logs3.String(), "moved aside") {
		t.Errorf("second Open reported again:\n%s", logs3.String())
	}
	if _, err := s3.Append(rec(9)); err != nil {
		t.Fatal(err)
	}
	if segs := s3.Segments(); segs[len(segs)-1].Seq <= 14 {
		t.Errorf("new segment number %d reuses one moved aside", segs[len(segs)-1].Seq)
	}
}

// TestFullDiskCountsOnce: on a full file system (a 64 KiB tmpfs) a write
// that fails part way must not leave a torn record behind: the records
// Append did not take are the caller's to count, and reading the spool
// later finds exactly the ones it took, with no loss reported a second
// time. Before, the torn record was cut off by the caller's count and
// again by the reader.
func TestFullDiskCountsOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): needs CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })

	s, err := Open(Config{Dir: dir, SegmentBytes: 24 << 10})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 900)
	var took, refused, partial int
	for i := 0; i < 200 && refused < 20; i++ {
		batch := [][]byte{payload, payload, payload, payload, payload}
		n, err := s.Append(batch...)
		took += n
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append: %v, want ENOSPC", err)
			}
			refused += len(batch) - n
			partial++
		}
	}
	if partial == 0 {
		t.Fatalf("the 64 KiB tmpfs never filled up")
	}
	s.Close()
	t.Logf("took %d records, refused %d in %d failed appends", took, refused, partial)

	s2, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 24 << 10})
	var got int
	for {
		seg, ok, err := s2.Oldest()
		if err != nil || !ok {
			break
		}
		r, _ := s2.Open(seg)
		for {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, payload) {
				t.Fatalf("record of %d bytes, want the payload", len(p))
			}
			got++
		}
		r.Close()
		s2.Ack(seg)
	}
	if got != took {
		t.Errorf("read %d records back, want the %d Append took", got, took)
	}
	if l, b := loss.get(LossCorrupt), loss.getBytes(); l != 0 || b != 0 {
		t.Errorf("reading reported %d records and %d bytes lost, want none: the refused ones were counted by the caller\n%s", l, b, logs.String())
	}
}

// TestSegmentDeletedBehindTheSpool: a sealed segment's file removed by
// someone else is still read whole through the file the spool holds open:
// nothing is lost. Before, the spool reopened it by name and counted its
// records lost.
func TestSegmentDeletedBehindTheSpool(t *testing.T) {
	s, loss, logs := openTest(t, Config{SegmentBytes: 4096})
	seg := appendAndSeal(t, s, 30)
	if err := os.Remove(seg.Path); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 30)) {
		t.Errorf("read %d records back (%v...), want the 30 appended", len(got), head(got))
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0\n%s", l, logs.String())
	}
	if s.Records() != 0 || s.Bytes() != 0 || s.Pending() {
		t.Errorf("after the replay: Records %d, Bytes %d, Pending %v; want 0, 0, false", s.Records(), s.Bytes(), s.Pending())
	}
}

// TestSegmentDeletedBehindTheSpoolNotHeld: past the bound on open segment
// files a sealed segment is read by name; its file removed by someone else
// is counted lost once (spool_removed) and forgotten, so the gauges drop
// and a reader does not retry it forever.
func TestSegmentDeletedBehindTheSpoolNotHeld(t *testing.T) {
	defer func(n int) { maxHeldSegments = n }(maxHeldSegments)
	maxHeldSegments = 0
	s, loss, logs := openTest(t, Config{SegmentBytes: 4096})
	seg := appendAndSeal(t, s, 30)
	os.Remove(seg.Path)
	for range 2 {
		if _, err := s.Open(seg); !errors.Is(err, ErrGone) {
			t.Fatalf("Open of a deleted segment = %v, want ErrGone", err)
		}
	}
	if l := loss.get(LossRemoved); l != 30 {
		t.Errorf("OnLoss(spool_removed) = %d, want 30 once", l)
	}
	if l := loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss(spool_corrupt) = %d, want 0: a removed file is not a corrupt one", l)
	}
	if s.Records() != 0 || s.Bytes() != 0 || s.Pending() {
		t.Errorf("after the loss: Records %d, Bytes %d, Pending %v; want 0, 0, false", s.Records(), s.Bytes(), s.Pending())
	}
	if !strings.Contains(logs.String(), "deleted by someone else") {
		t.Errorf("no log line:\n%s", logs.String())
	}
}

// appendAndSeal appends records 0 to n-1 and returns the oldest segment,
// sealed.
func appendAndSeal(tb testing.TB, s *Spool, n int) *Segment {
	tb.Helper()
	for i := range n {
		if _, err := s.Append(rec(i)); err != nil {
			tb.Fatal(err)
		}
	}
	seg, ok, err := s.Oldest()
	if err != nil || !ok {
		tb.Fatalf("Oldest = %v, %v", ok, err)
	}
	return seg
}
