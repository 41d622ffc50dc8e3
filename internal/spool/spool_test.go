package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/originlens/originlens/internal/syncbuf"
)

// lossCounter records OnLoss and OnLostBytes calls.
type lossCounter struct {
	mu    sync.Mutex
	by    map[string]int64
	bytes int64
}

func (l *lossCounter) addBytes(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes += n
}

func (l *lossCounter) getBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

func (l *lossCounter) add(reason string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = map[string]int64{}
	}
	l.by[reason] += n
}

func (l *lossCounter) get(reason string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.by[reason]
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = syncbuf.Buffer

func openTest(tb testing.TB, cfg Config) (*Spool, *lossCounter, *syncBuffer) {
	tb.Helper()
	loss := &lossCounter{}
	logs := &syncBuffer{}
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.OnLoss = loss.add
	cfg.OnLostBytes = loss.addBytes
	s, err := Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, loss, logs
}

func rec(i int) []byte { return fmt.Appendf(nil, "record-%05d", i) }

// drain reads and acks every segment, returning the payloads in order.
func drain(tb testing.TB, s *Spool) []string {
	tb.Helper()
	var out []string
	for {
		seg, ok, err := s.Oldest()
		if err != nil {
			tb.Fatalf("Oldest: %v", err)
		}
		if !ok {
			return out
		}
		r, err := s.Open(seg)
		if err != nil {
			tb.Fatalf("Open(%s): %v", seg.Path, err)
		}
		for {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				tb.Fatalf("Next: %v", err)
			}
			out = append(out, string(p))
		}
		r.Close()
		if err := s.Ack(seg); err != nil {
			tb.Fatalf("Ack: %v", err)
		}
		if _, err := os.Stat(seg.Path); !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("segment %s still on disk after Ack: %v", seg.Path, err)
		}
	}
}

func wantRecords(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, string(rec(i)))
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAppendReadAckInOrder(t *testing.T) {
	s, loss, _ := openTest(t, Config{SegmentBytes: 4096, MaxBytes: 1 << 20})
	for i := range 1000 {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
	if got := s.Records(); got != 1000 {
		t.Errorf("Records() = %d, want 1000", got)
	}
	if segs := s.Segments(); len(segs) < 3 {
		t.Errorf("Segments() = %d segments, want rotation at 4 KiB into several", len(segs))
	}
	got := drain(t, s)
	if want := wantRecords(0, 1000); !equalStrings(got, want) {
		t.Errorf("drained %d records, want the 1000 appended in order", len(got))
	}
	if s.Bytes() != 0 || s.Records() != 0 {
		t.Errorf("after draining: Bytes() = %d, Records() = %d, want 0, 0", s.Bytes(), s.Records())
	}
	if l := loss.get(LossCap) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("losses = %d, want 0", l)
	}
}

func TestAppendBatchIsOneUnit(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	if _, err := s.Append(rec(0), rec(1), rec(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(rec(3), nil); !errors.Is(err, ErrEmpty) {
		t.Errorf("Append(empty) = %v, want ErrEmpty", err)
	}
	if _, err := s.Append(make([]byte, MaxRecord+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append(too large) = %v, want ErrTooLarge", err)
	}
	if got, want := drain(t, s), wantRecords(0, 3); !equalStrings(got, want) {
		t.Errorf("drain = %v, want %v (rejected batches write nothing)", got, want)
	}
}

func TestReopenKeepsOrderAndLock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, s, 0, 300)
	if _, err := Open(Config{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open of a held directory = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(rec(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}

	s2, _, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	if got := s2.Records(); got != 300 {
		t.Errorf("reopened Records() = %d, want 300", got)
	}
	if !strings.Contains(logs.String(), "previous run") {
		t.Errorf("reopen did not log the leftover records: %q", logs.String())
	}
	appendRange(t, s2, 300, 400)
	if got, want := drain(t, s2), wantRecords(0, 400); !equalStrings(got, want) {
		t.Errorf("drained %d records after reopen, want 400 in order", len(got))
	}
}

// lastSegment returns the path of the newest segment file in dir.
func lastSegment(tb testing.TB, dir string) string {
	tb.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(m) == 0 {
		tb.Fatalf("no segment in %s: %v", dir, err)
	}
	return m[len(m)-1]
}

func TestCorruptTail(t *testing.T) {
	const n = 50
	recLen := int64(recordHeader + len(rec(0)))
	tests := []struct {
		name      string
		damage    func(tb testing.TB, path string)
		want      int    // valid records returned
		logLine   string // in the log
		lost      int64  // records reported lost
		lostBytes int64  // bytes reported lost, count unknown
	}{
		{"TruncatedPayload", func(tb testing.TB, p string) { truncateBy(tb, p, 3) }, n - 1, "torn tail", 1, 0},
		{"TruncatedHeader", func(tb testing.TB, p string) { truncateBy(tb, p, recLen-4) }, n - 1, "torn tail", 1, 0},
		{"GarbledPayload", func(tb testing.TB, p string) { flipByteFromEnd(tb, p, 2) }, n - 1, "checksum", 1, 0},
		{"GarbledAndTruncated", func(tb testing.TB, p string) { flipByteFromEnd(tb, p, 5); truncateBy(tb, p, 2) }, n - 1, "torn tail", 1, 0},
		// The checksum proves the payload whole: the record is recovered.
		{"ImpossibleLength", func(tb testing.TB, p string) { writeAtFromEnd(tb, p, recLen, []byte{0xff, 0xff, 0xff, 0x7f}) }, n, "record recovered", 0, 0},
		{"ZeroFilledTail", func(tb testing.TB, p string) { appendBytes(tb, p, make([]byte, 4096)) }, n, "garbled", 0, 4096},
		{"GarbageAppended", func(tb testing.TB, p string) { appendBytes(tb, p, []byte("\x05\x00\x00\x00garbage")) }, n, "torn tail", 1, 0},
		// Records right behind a damaged magic are still records.
		{"BadMagic", func(tb testing.TB, p string) { writeAt(tb, p, 0, []byte("NOTSPOOL")) }, n, "segment magic", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if _, err := s.Append(rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			tt.damage(t, lastSegment(t, dir))

			s2, loss, logs := openTest(t, Config{Dir: dir})
			got := drain(t, s2)
			if want := wantRecords(0, tt.want); !equalStrings(got, want) {
				t.Errorf("records after %s = %d (%v...), want the first %d in order", tt.name, len(got), head(got), tt.want)
			}
			if !strings.Contains(logs.String(), tt.logLine) {
				t.Errorf("log lacks %q:\n%s", tt.logLine, logs.String())
			}
			if got := loss.get(LossCorrupt); got != tt.lost {
				t.Errorf("OnLoss(%s) total = %d, want %d", LossCorrupt, got, tt.lost)
			}
			if got := loss.getBytes(); got != tt.lostBytes {
				t.Errorf("OnLostBytes total = %d, want %d", got, tt.lostBytes)
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 3)] }

func truncateBy(tb testing.TB, p string, n int64) {
	st, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(p, st.Size()-n); err != nil {
		tb.Fatal(err)
	}
}

func flipByteFromEnd(tb testing.TB, p string, back int64) {
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	b[int64(len(b))-back] ^= 0x5a
	if err := os.WriteFile(p, b, 0o640); err != nil {
		tb.Fatal(err)
	}
}

func writeAtFromEnd(tb testing.TB, p string, back int64, data []byte) {
	st, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	writeAt(tb, p, st.Size()-back, data)
}

func writeAt(tb testing.TB, p string, off int64, data []byte) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		tb.Fatal(err)
	}
}

func appendBytes(tb testing.TB, p string, data []byte) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		tb.Fatal(err)
	}
}

func TestCorruptMiddleRecordSkipped(t *testing.T) {
	var seg bytes.Buffer
	seg.WriteString(Magic)
	for i := range 5 {
		b := AppendRecord(nil, rec(i))
		if i == 2 {
			b[len(b)-1] ^= 1 // bad CRC, intact framing
		}
		seg.Write(b)
	}
	r := NewReader(bytes.NewReader(seg.Bytes()), int64(seg.Len()), "mem")
	got := readAll(r)
	want := []string{string(rec(0)), string(rec(1)), string(rec(3)), string(rec(4))}
	if d := r.Damages(); !equalStrings(got, want) || len(d) != 1 || !d[0].Known || d[0].Records != 1 {
		t.Errorf("reader = %v (damage %v), want %v (one record lost)", got, d, want)
	}
}

func TestSizeCapDropsOldest(t *testing.T) {
	const max = 64 << 10
	s, loss, logs := openTest(t, Config{MaxBytes: max, SegmentBytes: 8 << 10})
	const total = 10000 // ~190 KiB of records: three times the cap
	for i := range total {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
		if b := s.Bytes(); b > max {
			t.Fatalf("Bytes() = %d after record %d, over the cap %d", b, i, max)
		}
	}
	dropped := loss.get(LossCap)
	if dropped == 0 {
		t.Fatalf("no record counted as dropped past the cap")
	}
	if !strings.Contains(logs.String(), "spool full") {
		t.Errorf("no log line for the dropped segments:\n%s", logs.String())
	}
	got := drain(t, s)
	// The survivors are exactly the newest records, in order, and together
	// with the dropped ones account for every append.
	if int64(len(got))+dropped != total {
		t.Errorf("kept %d + dropped %d = %d, want %d", len(got), dropped, int64(len(got))+dropped, total)
	}
	if want := wantRecords(total-len(got), total); !equalStrings(got, want) {
		t.Errorf("kept records are not the newest %d in order (first %v)", len(got), head(got))
	}
}

func TestSyncAndConcurrentAppends(t *testing.T) {
	s, _, _ := openTest(t, Config{SegmentBytes: 16 << 10})
	var wg sync.WaitGroup
	const writers, each = 4, 500
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Append(fmt.Appendf(nil, "w%d-%04d", w, i)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if err := s.Sync(); err != nil {
				t.Errorf("Sync: %v", err)
			}
		}
	})
	wg.Wait()
	got := drain(t, s)
	if len(got) != writers*each {
		t.Fatalf("drained %d records, want %d", len(got), writers*each)
	}
	// Each writer's records stay in its own order.
	last := map[byte]string{}
	for _, r := range got {
		if prev := last[r[1]]; prev >= r {
			t.Fatalf("record %s after %s: per-writer order broken", r, prev)
		}
		last[r[1]] = r
	}
}

func TestBigBatchIsSplitAndCapped(t *testing.T) {
	const max = 32 << 10
	s, loss, _ := openTest(t, Config{MaxBytes: max, SegmentBytes: 8 << 10})
	var batch [][]byte
	for i := range 5000 { // ~95 KiB in one call
		batch = append(batch, rec(i))
	}
	n, err := s.Append(batch...)
	if err != nil || n != len(batch) {
		t.Fatalf("Append(5000) = %d, %v; want 5000, nil", n, err)
	}
	if b := s.Bytes(); b > max {
		t.Errorf("Bytes() = %d after one big batch, over the cap %d", b, max)
	}
	for _, seg := range s.Segments() {
		if seg.Size > 8<<10 {
			t.Errorf("segment %s is %d bytes, over SegmentBytes", seg.Path, seg.Size)
		}
	}
	got := drain(t, s)
	if int64(len(got))+loss.get(LossCap) != 5000 {
		t.Errorf("kept %d + dropped %d != 5000", len(got), loss.get(LossCap))
	}
	if want := wantRecords(5000-len(got), 5000); !equalStrings(got, want) {
		t.Errorf("kept records are not the newest %d in order", len(got))
	}
}
