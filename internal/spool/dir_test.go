package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// appendRange appends records from to to-1 one by one.
func appendRange(tb testing.TB, s *Spool, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		if _, err := s.Append(rec(i)); err != nil {
			tb.Fatalf("Append(%d): %v", i, err)
		}
	}
}

// TestDirRemovedIsRecreated: the spool directory removed (rm -rf) while
// segments are sealed and one is active: every record is still read, the
// directory is recreated with its mode for new segments, locked against a
// second spool, and the log says so once.
func TestDirRemovedIsRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o710); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o710)
	s, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 400) // several sealed segments and an active one
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	appendRange(t, s, 400, 800) // fills the active one, then new segments
	st, err := os.Lstat(dir)
	if err != nil {
		t.Fatalf("spool directory not recreated: %v", err)
	}
	if st.Mode().Perm() != 0o710 || !st.IsDir() {
		t.Errorf("recreated spool directory: %v, want a directory with mode 0710", st.Mode())
	}
	if _, err := Open(Config{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("a second spool on the recreated directory: %v, want ErrLocked", err)
	}
	if n := strings.Count(logs.String(), "spool directory was removed"); n != 1 {
		t.Errorf("%d lines say the directory was removed, want 1:\n%s", n, logs.String())
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 800)) {
		t.Errorf("read %d records back (%v...), want the 800 appended", len(got), head(got))
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt) + loss.get(LossCap); l != 0 {
		t.Errorf("OnLoss = %d, want 0\n%s", l, logs.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "LOCK" {
		t.Errorf("recreated directory after the replay holds %v, want only LOCK", ents)
	}
}

// TestDirMovedAside: the spool directory renamed (mv spool spool.old) and
// an empty one made in its place: new segments go to the new one, and
// acknowledged segments are deleted from the old one, where they are, not
// looked up by a name that now means another directory.
func TestDirMovedAside(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 200)
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	appendRange(t, s, 200, 400)
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) == 0 {
		t.Errorf("no new segment in the directory now at the path")
	}
	if !strings.Contains(logs.String(), "replaced by another directory") {
		t.Errorf("no log line about the replaced directory:\n%s", logs.String())
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 400)) {
		t.Errorf("read %d records back (%v...), want the 400 appended", len(got), head(got))
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0", l)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir+".old", "*.seg")); len(segs) != 0 {
		t.Errorf("acknowledged segments left in the moved directory: %v", segs)
	}
}

// TestDirReplacedBySymlinkRefused: a symbolic link put in place of the
// spool directory is not followed: Append refuses (ErrDirReplaced), the
// link's target stays empty, the log says it once however often Append
// tries; the records already spooled are read whole, and once the path is
// freed the directory is recreated.
func TestDirReplacedBySymlinkRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	elsewhere := t.TempDir()
	s, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 100)
	os.RemoveAll(dir)
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	took := 100
	var refused int
	for i := 100; i < 400; i++ {
		if _, err := s.Append(rec(i)); err != nil {
			if !errors.Is(err, ErrDirReplaced) {
				t.Fatalf("Append: %v, want ErrDirReplaced", err)
			}
			refused++
			continue
		}
		took++
	}
	if refused == 0 {
		t.Fatalf("every Append succeeded through a symbolic link")
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("the spool wrote into the link's target: %v", ents)
	}
	if n := strings.Count(logs.String(), "symbolic link"); n != 1 {
		t.Errorf("%d lines about the symbolic link, want 1:\n%s", n, logs.String())
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, took)) {
		t.Errorf("read %d records back, want the %d appended before the link", len(got), took)
	}
	os.Remove(dir)
	appendRange(t, s, 1000, 1001)
	if got := drain(t, s); !equalStrings(got, []string{string(rec(1000))}) {
		t.Errorf("after the link was removed: read %v, want record 1000", got)
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0", l)
	}
}

// TestDirCannotBeRecreated: the spool directory removed and its parent
// replaced by a file: Append refuses with an error naming the directory,
// logged once; the spooled records are still read.
func TestDirCannotBeRecreated(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "parent")
	dir := filepath.Join(parent, "spool")
	s, _, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 100)
	if _, _, err := s.Oldest(); err != nil { // seal the active segment
		t.Fatal(err)
	}
	os.RemoveAll(parent)
	if err := os.WriteFile(parent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.Append(rec(i)); err == nil {
			t.Fatalf("Append succeeded with no directory to write in")
		}
	}
	if n := strings.Count(logs.String(), "no usable spool directory"); n != 1 {
		t.Errorf("%d lines about the unusable directory, want 1:\n%s", n, logs.String())
	}
	var got int
	for {
		seg, ok, err := s.Oldest()
		if err != nil || !ok {
			break
		}
		r, err := s.Open(seg)
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := r.Next(); err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
			got++
		}
		r.Close()
		if err := s.Ack(seg); err != nil {
			t.Errorf("Ack: %v", err)
		}
	}
	if got != 100 {
		t.Errorf("read %d records, want the 100 spooled before the removal", got)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestHeldFilesBoundedAndReleased: the spool holds at most maxHeldSegments
// segment files (plus the active one, the directory and its lock); a
// segment read twice (a replay that failed and resumes) reads the same
// records, closing a reader does not close the segment's file, and after
// the replay and Close no descriptor is left open.
func TestHeldFilesBoundedAndReleased(t *testing.T) {
	defer func(n int) { maxHeldSegments = n }(maxHeldSegments)
	maxHeldSegments = 4
	base := openFDs(t)
	dir := t.TempDir()
	s, loss, _ := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 5000) // about 25 segments
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) < 10 {
		t.Fatalf("%d segments, want many more than the bound", len(segs))
	}
	if n := openFDs(t) - base; n > maxHeldSegments+1+2 {
		t.Errorf("%d descriptors open, want at most %d held segments + the active one + directory and lock", n, maxHeldSegments)
	}
	seg, _, err := s.Oldest()
	if err != nil {
		t.Fatal(err)
	}
	var first []string
	for range 2 {
		r, err := s.Open(seg)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(r)
		r.Close()
		if first == nil {
			first = got
		} else if !equalStrings(first, got) || len(got) == 0 {
			t.Errorf("second read of a segment: %d records, first read %d", len(got), len(first))
		}
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 5000)) {
		t.Errorf("read %d records back, want 5000", len(got))
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0", l)
	}
	s.Close()
	if n := openFDs(t); n != base {
		t.Errorf("%d descriptors open after Close, %d before Open: a leak", n, base)
	}
}

// TestSegmentsUnlinkedAfterOpen: the segments a previous run left are
// unlinked after Open found them: the spool holds them open from Open on,
// so they are read whole.
func TestSegmentsUnlinkedAfterOpen(t *testing.T) {
	dir := t.TempDir()
	s1, err := Open(Config{Dir: dir, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, s1, 0, 300)
	s1.Close()
	s2, loss, _ := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 2 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	for _, p := range segs {
		os.Remove(p)
	}
	if got := drain(t, s2); !equalStrings(got, wantRecords(0, 300)) {
		t.Errorf("read %d records back, want 300", len(got))
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0", l)
	}
}

// TestRemovalDuringConcurrentAppends: writers append while a reader
// replays and acknowledges, and the spool directory is removed again and
// again (rm -rf, bounded): every record is read exactly once, nothing is
// counted lost, and the directory exists at the end.
func TestRemovalDuringConcurrentAppends(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	const writers, per = 4, 1500
	var wg sync.WaitGroup
	// A directory removed in a tight loop can make an Append fail after
	// a few attempts (its caller counts those): each writer notes the
	// records the spool took.
	var tookMu sync.Mutex
	var took []string
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				r := rec(w*per + i)
				if _, err := s.Append(r); err != nil {
					continue
				}
				tookMu.Lock()
				took = append(took, string(r))
				tookMu.Unlock()
			}
		})
	}
	stop := make(chan struct{})
	removed := make(chan int)
	go func() {
		n := 0
		for ; n < 200; n++ {
			select {
			case <-stop:
				removed <- n
				return
			default:
			}
			os.RemoveAll(dir)
			time.Sleep(100 * time.Microsecond)
		}
		removed <- n
	}()
	seen := map[string]int{}
	read := func() {
		for {
			seg, ok, err := s.Oldest()
			if err != nil {
				t.Fatalf("Oldest: %v", err)
			}
			if !ok {
				return
			}
			r, err := s.Open(seg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			for {
				p, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				seen[string(p)]++
			}
			r.Close()
			if err := s.Ack(seg); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for wait := true; wait; {
		select {
		case <-done:
			wait = false
		case <-time.After(time.Millisecond):
		}
		read()
	}
	close(stop)
	n := <-removed
	read()
	missing, dups := 0, 0
	for _, want := range took {
		switch seen[want] {
		case 0:
			missing++
		case 1:
		default:
			dups++
		}
	}
	if missing > 0 || dups > 0 || len(seen) != len(took) {
		t.Errorf("%d records missing, %d read twice, %d distinct, want each of the %d taken once", missing, dups, len(seen), len(took))
	}
	if len(took) < writers*per/2 {
		t.Errorf("the spool took %d of %d records: removals should cost a retry, not the records", len(took), writers*per)
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt) + loss.get(LossCap); l != 0 {
		t.Errorf("OnLoss = %d, want 0\n%s", l, logs.String())
	}
	appendRange(t, s, 0, 1) // a new segment: the directory is recreated
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("spool directory missing after an append: %v", err)
	}
	t.Logf("directory removed %d times; %d lines say so; the spool refused %d of %d records", n,
		strings.Count(logs.String(), "spool directory was removed"), writers*per-len(took), writers*per)
}

// TestSyncRecreatesRemovedDir: a removed spool directory comes back, locked
// against a second spool, at the next Sync even when no segment is
// created, so a second process cannot take the path meanwhile.
func TestSyncRecreatesRemovedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, _, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 10)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Sync did not recreate the directory: %v", err)
	}
	if _, err := Open(Config{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("a second spool on the recreated directory: %v, want ErrLocked", err)
	}
	s.Sync()
	if n := strings.Count(logs.String(), "spool directory was removed"); n != 1 {
		t.Errorf("%d lines say the directory was removed, want 1:\n%s", n, logs.String())
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 10)) {
		t.Errorf("read %v, want records 0-9", got)
	}
}

// TestForeignFileWithTheNextName: a file (here a symbolic link to a file
// elsewhere) put in the spool directory under the next segment's name is
// neither followed nor a reason to refuse every later Append: its number
// is skipped.
func TestForeignFileWithTheNextName(t *testing.T) {
	dir := t.TempDir()
	s, _, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	appendRange(t, s, 0, 5)
	if _, _, err := s.Oldest(); err != nil { // seals segment 1
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00000000000000000002.seg", "00000000000000000003.seg"} {
		if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	appendRange(t, s, 5, 10)
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("the link's target was written: %q", b)
	}
	if got := drain(t, s); !equalStrings(got, wantRecords(0, 10)) {
		t.Errorf("read %v, want records 0-9", got)
	}
	if !strings.Contains(logs.String(), "skipping that number") {
		t.Errorf("no log line for the skipped number:\n%s", logs.String())
	}
}

// TestReplacedSegmentFileLeftInPlace: a sealed segment's file replaced by
// another segment file (renamed over it) while the spool holds it: the
// spool reads its own records through its open file, and acknowledging
// them does not delete the replacement, which the next Open reads.
// Before, the spool read the replacement by name instead of its own
// records (lost, uncounted), then deleted it by name.
func TestReplacedSegmentFileLeftInPlace(t *testing.T) {
	dir := t.TempDir()
	s, loss, logs := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	seg := appendAndSeal(t, s, 10)
	other := t.TempDir()
	s2, err := Open(Config{Dir: other, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, s2, 1000, 1010)
	s2.Close()
	segs, _ := filepath.Glob(filepath.Join(other, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("%d segments in the other spool, want 1", len(segs))
	}
	if err := os.Rename(segs[0], seg.Path); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(seg)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(r)
	r.Close()
	if !equalStrings(got, wantRecords(0, 10)) {
		t.Errorf("read %v, want the spool's own records 0-9", got)
	}
	if err := s.Ack(seg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg.Path); err != nil {
		t.Fatalf("Ack deleted the replacement file: %v", err)
	}
	if !strings.Contains(logs.String(), "replaced by another file") {
		t.Errorf("no log line for the replaced file:\n%s", logs.String())
	}
	if l := loss.get(LossRemoved) + loss.get(LossCorrupt); l != 0 {
		t.Errorf("OnLoss = %d, want 0", l)
	}
	s.Close()
	s3, _, _ := openTest(t, Config{Dir: dir, SegmentBytes: 4096})
	if got := drain(t, s3); !equalStrings(got, wantRecords(1000, 1010)) {
		t.Errorf("the next Open read %v, want the replacement's records 1000-1009", got)
	}
}

// readAll returns the records r yields until its first error (io.EOF).
func readAll(r *Reader) []string {
	var got []string
	for {
		p, err := r.Next()
		if err != nil {
			return got
		}
		got = append(got, string(p))
	}
}

// TestFIFOInASegmentsPlace: a segment the spool does not hold open (past
// the bound) replaced by a FIFO, or by a directory: reading it neither
// blocks (a FIFO without a writer would block open(2), under the spool's
// lock, and with it every Append) nor fails forever; the segment is gone,
// its records counted lost once (spool_removed).
func TestFIFOInASegmentsPlace(t *testing.T) {
	defer func(n int) { maxHeldSegments = n }(maxHeldSegments)
	maxHeldSegments = 0
	for _, kind := range []string{"fifo", "dir"} {
		t.Run(kind, func(t *testing.T) {
			s, loss, _ := openTest(t, Config{SegmentBytes: 4096})
			seg := appendAndSeal(t, s, 10)
			if err := os.Remove(seg.Path); err != nil {
				t.Fatal(err)
			}
			var err error
			if kind == "fifo" {
				err = syscall.Mkfifo(seg.Path, 0o640)
			} else {
				err = os.Mkdir(seg.Path, 0o750)
			}
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.Open(seg)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrGone) {
					t.Errorf("Open = %v, want ErrGone", err)
				}
			case <-time.After(20 * time.Second): // a failure bound only
				// Unblock the reader (it holds the spool's lock).
				if w, err := os.OpenFile(seg.Path, os.O_WRONLY, 0); err == nil {
					w.Close()
				}
				<-done
				t.Fatalf("Open blocked on a %s in the segment's place", kind)
			}
			if l := loss.get(LossRemoved); l != 10 {
				t.Errorf("OnLoss(spool_removed) = %d, want 10", l)
			}
			appendRange(t, s, 10, 20) // the spool goes on
			if got := drain(t, s); !equalStrings(got, wantRecords(10, 20)) {
				t.Errorf("read %v after, want records 10-19", got)
			}
		})
	}
}
