package spool

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// eioReaderAt fails every read after the first ok ones, as a disk
// returning EIO for a bad sector does.
type eioReaderAt struct {
	r  io.ReaderAt
	ok *int
}

func (e eioReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if *e.ok > 0 {
		*e.ok--
		return e.r.ReadAt(b, off)
	}
	return 0, &os.PathError{Op: "read", Path: "segment", Err: syscall.EIO}
}

// TestOpenMovesUnreadableSegmentAside: a segment a previous run left that
// the disk cannot read no longer stops Open (before, Open failed and with
// it the app's start): it is renamed .seg.corrupt with one ERROR line, its
// bytes counted as lost (its record count cannot be read), and the other
// segments are replayed whole.
func TestOpenMovesUnreadableSegmentAside(t *testing.T) {
	dir := t.TempDir()
	s, _, _ := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	const n = 600
	for i := range n {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	bad := segs[1]
	st, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}
	badRecords := func() int {
		b, _ := os.ReadFile(bad)
		return len(readAll(NewReader(strings.NewReader(string(b)), int64(len(b)), bad)))
	}()
	ok := 0
	SetReadHook(func(path string, r io.ReaderAt) io.ReaderAt {
		if path != bad {
			return r
		}
		return eioReaderAt{r: r, ok: &ok}
	})
	s2, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	SetReadHook(nil)
	if _, err := os.Stat(bad + ".corrupt"); err != nil {
		t.Errorf("the unreadable segment was not moved aside: %v", err)
	}
	if got := loss.getBytes(); got != st.Size() {
		t.Errorf("lost bytes = %d, want the segment's %d", got, st.Size())
	}
	if got := loss.get(LossReadError); got != 0 {
		t.Errorf("lost records = %d, want 0 (none could be read)", got)
	}
	if got := strings.Count(logs.String(), "level=ERROR"); got != 1 {
		t.Errorf("%d ERROR lines, want 1:\n%s", got, logs)
	}
	if got := s2.Records(); got != int64(n-badRecords) {
		t.Errorf("Records = %d, want %d", got, n-badRecords)
	}
	if got := drain(t, s2); len(got) != n-badRecords {
		t.Errorf("replayed %d records, want %d", len(got), n-badRecords)
	}
}
