// Package spool keeps opaque records on disk, in order, until whoever reads
// them acknowledges them. The Kafka producer uses it to hold the events the
// broker cannot take.
//
// On disk, a spool is one directory of append-only segment files named
// <sequence>.seg (20 decimal digits, so names sort in write order) plus a
// LOCK file that one process at a time holds with flock(2). A segment starts
// with the 8-byte magic "OLSPOOL1"; then come records, each
//
//	length  uint32, little endian: payload bytes (1 to MaxRecord)
//	crc     uint32, little endian: CRC-32C (Castagnoli) of the payload
//	payload
//
// Appends go to the active segment with one write(2) per call, so a killed
// process (SIGKILL) loses nothing that Append returned for; [Spool.Sync]
// (the caller runs it on an interval, and Close does) fsyncs, which bounds
// what a power loss can take. A segment is rotated when it reaches
// SegmentBytes, and never appended to again, not even after a restart.
//
// Readers see sealed segments oldest first. A damaged stretch of a segment
// is skipped and reading resumes at the next valid record (see [Reader]), so
// only the damaged records are lost. Every loss is reported exactly once:
// to OnLoss with its record count when the count is known (a bad checksum
// with intact framing, a torn last record), else to OnLostBytes with the
// bytes skipped (a garbled stretch whose records cannot be told apart);
// never both, and never again when a segment is read twice (a replay that
// failed and resumes). Each damaged stretch is logged (the first few per
// segment; the rest are counted).
//
// Open reads every segment a previous run left, so the losses in them are
// reported (and the record counts are true) from the start: a segment with
// valid records stays for replay; one with no valid record and no damage
// (empty, or only the magic: the process died right after creating it) is
// deleted; one with damage but no valid record is renamed to
// <sequence>.seg.corrupt with one log line, kept for a human to inspect,
// and no longer counted in [Spool.Bytes] or against MaxBytes (nothing
// deletes .corrupt files: remove them by hand).
//
// A segment the disk cannot read (an I/O error, not damage) is moved aside
// as <sequence>.seg.corrupt with one ERROR line, by Open for one a
// previous run left (its records read before the error are counted lost,
// LossReadError, and the bytes not read to OnLostBytes: their count cannot
// be known), or by [Spool.Quarantine], which the reader's owner calls
// after retrying (its undelivered records counted, LossReadError).
//
// A write that fails part way (a full disk) is cut back off the segment
// (ftruncate), so no torn record is left to be counted a second time: the
// caller counts the records Append did not take, and those only.
//
// A segment is deleted only by [Spool.Ack], after its reader has delivered
// every record.
//
// The spool keeps each segment's file open from its creation (or from Open,
// for the segments a previous run left) until Ack or the size cap deletes
// it, and reads it through that descriptor (pread), never by name. So a
// segment file unlinked behind the spool's back, or the whole directory
// removed (rm -rf) or replaced, loses nothing: the records are still read
// and delivered. Segments are created and deleted relative to the
// directory's descriptor; when the configured path no longer names that
// directory, the next segment (or the next Sync, whichever comes first) is
// created in a new directory made at the path with the first one's
// permissions (or in the directory someone put there), locked, with one
// WARN line. A path that became a symbolic link or a file is not followed:
// new segments are refused (the caller counts the events it cannot hold
// elsewhere), with one ERROR line. A spool directory that is a symbolic
// link at Open is resolved once, at Open. Close writes the held segments
// whose file was unlinked back into the directory, so a clean stop after
// a removal loses nothing either; a SIGKILL or power loss then loses the
// removed segments' records that Kafka does not have yet (nothing is left
// on disk to count them from). Removing a spool's files therefore frees
// no disk space while the spool holds them (they still count against
// MaxBytes): to discard a spool, close it first.
//
// File descriptors: one per segment held, one per open [Reader] (its own
// descriptor of the segment), the directory and its LOCK (and those of a
// replaced directory while its segments remain); at most
// 256 segment files (maxHeldSegments). The size cap bounds the segments:
// with the defaults (1 GiB, 16 MiB segments) about 65 are held (64 full
// ones, the active one and at most one cut short by a reader). Beyond
// 256 (a cap of more than 4 GiB at 16 MiB segments, or many small segments
// a previous run left), a segment's file is closed when sealed and read by
// name; if such a file is deleted behind the spool's back its records are
// counted lost (LossRemoved) and forgotten.
//
// The spool has a size cap: an append that would pass MaxBytes first deletes
// the oldest segments, logs them and counts their records as lost, so a long
// outage costs the oldest events, visibly, instead of the disk.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Magic opens every segment file.
const Magic = "OLSPOOL1"

// MaxRecord is the largest payload a record may hold.
const MaxRecord = 1 << 20

// recordHeader is the length and CRC in front of every payload.
const recordHeader = 8

// Defaults for the zero values of [Config].
const (
	DefaultMaxBytes        = 1 << 30
	DefaultMaxSegmentBytes = 16 << 20
	minSegmentBytes        = 4 << 10
)

// Loss reasons passed to [Config.OnLoss].
const (
	LossCap     = "spool_cap"     // oldest segment deleted to stay under MaxBytes
	LossCorrupt = "spool_corrupt" // record failed its checksum or the segment tail was torn
	// LossRemoved: a segment's file was deleted behind the spool's back
	// and the spool did not hold it open (see the package doc).
	LossRemoved = "spool_removed"
	// LossReadError: a segment could not be read (the disk returned an
	// error) and was moved aside by [Spool.Quarantine].
	LossReadError = "spool_read_error"
)

// SystemDir is the spool directory [DefaultDir] prefers.
const SystemDir = "/var/lib/originlens/spool"

// Errors.
var (
	ErrClosed   = errors.New("spool: closed")
	ErrLocked   = errors.New("spool: directory in use by another process")
	ErrTooLarge = errors.New("spool: record larger than MaxRecord")
	ErrEmpty    = errors.New("spool: empty record")
	// ErrGone: a segment's file was deleted behind the spool's back; Open
	// counted its records as lost and forgot it.
	ErrGone = errors.New("spool: segment file gone")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config configures a [Spool].
type Config struct {
	// Dir is the spool directory; it is created (0750) when missing.
	Dir string
	// MaxBytes caps the bytes on disk; 0 means DefaultMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size at which the active segment is rotated; 0
	// means MaxBytes/8, at most DefaultMaxSegmentBytes. It is clamped to
	// at most MaxBytes/2 and at least 4 KiB.
	SegmentBytes int64
	// Logger receives the loss and corruption lines; nil discards them.
	Logger *slog.Logger
	// OnLoss, when set, is called with a Loss* reason and the number of
	// records lost each time the spool drops or skips records. It is called
	// with the spool's lock held: it must be quick and must not call back
	// into the spool.
	OnLoss func(reason string, records int64)
	// OnLostBytes, when set, is called with the bytes of a damaged stretch
	// whose record count cannot be known; those records are not reported
	// to OnLoss. Same rules as OnLoss.
	OnLostBytes func(bytes int64)
}

// DefaultDir returns the spool directory to use when none is configured:
// [SystemDir] when it exists or can be created and is writable (DefaultDir
// creates it), else "spool" under the working directory.
func DefaultDir() string {
	if err := os.MkdirAll(SystemDir, 0o750); err == nil {
		if f, err := os.CreateTemp(SystemDir, ".probe-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return SystemDir
		}
	}
	return "spool"
}

// Segment is one sealed segment file. Its exported fields are read-only.
type Segment struct {
	Seq     uint64
	Path    string
	Size    int64
	Records int64 // records appended (or found valid at Open), less the known losses reported since

	// Guarded by the spool's lock.
	f    *os.File   // the open segment file; nil when not held
	dir  *dirHandle // the directory it is in
	name string     // its name in dir

	// Damage starting before this offset was reported already; guarded
	// by the spool's lock.
	countedTo int64
	logged    int // damaged stretches logged
}

// Spool is an on-disk FIFO of records. All methods are safe for concurrent
// use. Append, Ack and rotation take a short lock and do plain file writes;
// only Sync, Oldest (when it seals the active segment), rotation and Close
// fsync, and only rotation and Close while holding the lock. Creating a
// segment and Sync stat the directory's path under the lock (and, when it
// was removed, make it again: mkdir, open, flock, no fsync); Close copies
// the unlinked segments it holds back into it, under the lock.
type Spool struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	dir     *dirHandle // where new segments go; holds the flock
	dirMode os.FileMode
	dirErr  error      // the last failure to find a usable directory, logged
	held    int        // segments whose file is open
	sealed  []*Segment // oldest first
	active  *Segment   // nil until the first append after open or rotation
	f       *os.File   // the active segment
	nextSeq uint64
	bytes   int64
	records int64
	dirty   bool
	// dirDirty: a segment was created or deleted since the directory was
	// last fsynced (Sync, Oldest and Close do it, off the lock).
	dirDirty bool
	closed   bool
	// wbuf is Append's framing buffer, reused under the lock so that an
	// append costs no allocation (see maxWriteBuf).
	wbuf []byte
}

// maxWriteBuf bounds the framing buffer the spool keeps between appends; a
// larger one (a batch of large records) is left to the GC.
const maxWriteBuf = 256 << 10

// Open opens (or creates) the spool in cfg.Dir, takes its lock, and scans
// the existing segments to count their records; it logs how many it found.
// Existing segments are only read, never appended to.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = min(cfg.MaxBytes/8, DefaultMaxSegmentBytes)
	}
	// At least two segments fit under the cap, so dropping sealed ones
	// can always make room.
	cfg.SegmentBytes = max(min(cfg.SegmentBytes, cfg.MaxBytes/2), minSegmentBytes)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	d, err := openDir(cfg.Dir, true)
	if err != nil {
		return nil, err
	}
	s := &Spool{cfg: cfg, log: log.With("spool", cfg.Dir), dir: d, dirMode: d.info.Mode().Perm(), nextSeq: 1}
	if err := s.scan(); err != nil {
		s.closeFilesLocked()
		return nil, err
	}
	if len(s.sealed) > 0 {
		s.log.Info("spool holds events from a previous run", "segments", len(s.sealed), "records", s.records, "bytes", s.bytes)
	}
	return s, nil
}

// scan loads the existing segments.
func (s *Spool) scan() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("reading spool directory: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if aside, ok := strings.CutSuffix(name, ".seg.corrupt"); ok {
			// Never reuse its number: a later segment moved aside
			// would replace it.
			if seq, err := strconv.ParseUint(aside, 10, 64); err == nil {
				s.nextSeq = max(s.nextSeq, seq+1)
			}
			continue
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".seg") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			s.log.Warn("spool: ignoring a file that is not a segment", "file", name)
			continue
		}
		seg := &Segment{Seq: seq, Path: filepath.Join(s.cfg.Dir, name), name: name}
		s.attachLocked(seg, s.dir)
		s.nextSeq = max(s.nextSeq, seq+1)
		damages, err := s.check(seg)
		if err != nil {
			s.releaseLocked(seg)
		}
		if errors.Is(err, os.ErrNotExist) {
			// Deleted between the listing and the open: nothing
			// to read, so nothing to count but this line.
			s.log.Warn("spool: a segment vanished while the spool was opening; its events (count unknown) are lost", "segment", name)
			continue
		}
		var ue *unreadableError
		if errors.As(err, &ue) {
			s.quarantineAtOpen(seg, ue)
			continue
		}
		if err != nil {
			return err
		}
		if seg.Records == 0 {
			s.releaseLocked(seg)
			s.discard(seg, damages)
			continue
		}
		s.sealed = append(s.sealed, seg)
		s.bytes += seg.Size
		s.records += seg.Records
	}
	slices.SortFunc(s.sealed, func(a, b *Segment) int { return cmpUint(a.Seq, b.Seq) })
	return nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// check reads a segment left by an earlier run: it fills in Size and
// Records (the valid ones), reports its losses once, and logs its damage
// in one line. It keeps the file open in seg (see [Spool.holdLocked]).
func (s *Spool) check(seg *Segment) ([]Damage, error) {
	f, err := seg.dir.openSegmentFile(seg.name, seg.Path)
	if err != nil {
		return nil, fmt.Errorf("opening spool segment: %w", err)
	}
	s.holdLocked(seg, f)
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading spool segment: %w", err)
	}
	seg.Size = st.Size()
	var ra io.ReaderAt = f
	if wrap := readHook.Load(); wrap != nil {
		ra = (*wrap)(seg.Path, f)
	}
	r := NewReader(ra, seg.Size, seg.Path)
	var buf []byte
	for {
		buf, err = r.AppendNext(buf[:0])
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &unreadableError{err: err, damages: r.Damages(), unread: seg.Size - r.pos}
		}
		seg.Records++
	}
	s.unholdOverLocked(seg)
	seg.countedTo = seg.Size
	damages := r.Damages()
	var lost, lostBytes int64
	for _, d := range damages {
		s.report(d)
		if d.Known {
			lost += d.Records
		} else {
			lostBytes += d.Bytes
		}
	}
	if len(damages) > 0 && seg.Records > 0 {
		s.log.Warn("spool: damaged segment; its valid records will be replayed, the damaged ones are lost",
			"segment", filepath.Base(seg.Path), "valid_records", seg.Records, "lost_records", lost,
			"lost_bytes_count_unknown", lostBytes, "damaged_stretches", len(damages), "first", damages[0].String())
	}
	return damages, nil
}

// unreadableError: reading a segment at Open failed (the disk's error).
type unreadableError struct {
	err     error
	damages []Damage // found before the error
	unread  int64    // bytes not read
}

func (e *unreadableError) Error() string { return e.err.Error() }
func (e *unreadableError) Unwrap() error { return e.err }

// quarantineAtOpen moves aside a segment Open could not read (see
// [Spool.Quarantine]): its valid records read before the error are counted
// lost (LossReadError), the damage found before it as usual, and the bytes
// not read, whose records cannot be counted, to OnLostBytes.
func (s *Spool) quarantineAtOpen(seg *Segment, ue *unreadableError) {
	for _, d := range ue.damages {
		s.report(d)
	}
	if seg.Records > 0 && s.cfg.OnLoss != nil {
		s.cfg.OnLoss(LossReadError, seg.Records)
	}
	if ue.unread > 0 && s.cfg.OnLostBytes != nil {
		s.cfg.OnLostBytes(ue.unread)
	}
	args := []any{"segment", seg.Path, "err", ue.err, "lost_records", seg.Records, "lost_bytes_count_unknown", ue.unread, "bytes", seg.Size}
	if err := os.Rename(seg.Path, seg.Path+".corrupt"); err != nil {
		args = append(args, "move_aside_err", err)
	} else {
		args = append(args, "moved_to", filepath.Base(seg.Path)+".corrupt")
	}
	s.log.Error("spool: a segment cannot be read; moved aside, its undelivered events are lost", args...)
}

// discard removes a segment without a valid record found at Open: deleted
// when it holds nothing else (empty, or only the magic), else moved aside
// as <name>.corrupt.
func (s *Spool) discard(seg *Segment, damages []Damage) {
	var lost, lostBytes int64
	for _, d := range damages {
		if d.Known {
			lost += d.Records
		} else {
			lostBytes += d.Bytes
		}
	}
	if lost == 0 && lostBytes == 0 {
		if err := os.Remove(seg.Path); err != nil {
			s.log.Warn("spool: deleting an empty segment", "segment", seg.Path, "err", err)
			return
		}
		s.log.Info("spool: deleted a segment without records", "segment", filepath.Base(seg.Path), "bytes", seg.Size)
		return
	}
	aside := seg.Path + ".corrupt"
	if err := os.Rename(seg.Path, aside); err != nil {
		s.log.Error("spool: moving an unreadable segment aside", "segment", seg.Path, "err", err)
		return
	}
	s.log.Warn("spool: segment without a valid record moved aside; its events are lost",
		"segment", filepath.Base(seg.Path), "moved_to", filepath.Base(aside), "bytes", seg.Size,
		"lost_records", lost, "lost_bytes_count_unknown", lostBytes, "first", damages[0].String())
}

// report passes one damaged stretch's loss to OnLoss or OnLostBytes.
func (s *Spool) report(d Damage) {
	switch {
	case d.Known && d.Records > 0 && s.cfg.OnLoss != nil:
		s.cfg.OnLoss(LossCorrupt, d.Records)
	case !d.Known && s.cfg.OnLostBytes != nil:
		s.cfg.OnLostBytes(d.Bytes)
	}
}

// maxDamageLines bounds the damage lines logged per segment while reading.
const maxDamageLines = 5

// damaged handles a damaged stretch a reader of seg found: reported, logged
// and taken off the counts unless an earlier read of seg did it.
func (s *Spool) damaged(seg *Segment, d Damage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.Offset < seg.countedTo {
		return
	}
	seg.countedTo = d.Offset + max(d.Bytes, 1)
	s.report(d)
	if d.Known {
		n := min(d.Records, seg.Records)
		seg.Records -= n
		if slices.Contains(s.sealed, seg) {
			s.records -= n
		}
	}
	seg.logged++
	switch {
	case seg.logged < maxDamageLines:
		s.log.Warn("spool: damaged records skipped", "segment", filepath.Base(seg.Path), "damage", d.String())
	case seg.logged == maxDamageLines:
		s.log.Warn("spool: damaged records skipped; further damage in this segment is counted, not logged",
			"segment", filepath.Base(seg.Path), "damage", d.String())
	}
}

// AppendRecord frames one payload as a record (length, CRC-32C, payload)
// onto dst and returns the extended slice. Spools write exactly this.
func AppendRecord(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// Append writes the payloads as consecutive records, in order, filling
// the active segment and rotating it at SegmentBytes (one write per
// segment touched), enforcing the size cap before each segment's write. It
// returns how many payloads were appended: all of them, or on error the
// ones before the failure. It blocks on file writes (not on fsync).
func (s *Spool) Append(payloads ...[]byte) (int, error) {
	for _, p := range payloads {
		if len(p) == 0 {
			return 0, ErrEmpty
		}
		if len(p) > MaxRecord {
			return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(p))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	done := 0
	buf := s.wbuf[:0]
	defer func() {
		if cap(buf) <= maxWriteBuf {
			s.wbuf = buf[:0]
		}
	}()
	for done < len(payloads) {
		if s.active != nil && s.active.Size+int64(recordHeader+len(payloads[done])) > s.cfg.SegmentBytes && s.active.Records > 0 {
			if err := s.sealLocked(); err != nil {
				return done, err
			}
		}
		// The records that fit in the segment (at least one).
		room := s.cfg.SegmentBytes - int64(len(Magic))
		if s.active != nil {
			room = s.cfg.SegmentBytes - s.active.Size
		}
		buf = buf[:0]
		n := 0
		for done+n < len(payloads) {
			size := int64(recordHeader + len(payloads[done+n]))
			if n > 0 && int64(len(buf))+size > room {
				break
			}
			buf = AppendRecord(buf, payloads[done+n])
			n++
		}
		need := int64(len(buf))
		if s.active == nil {
			need += int64(len(Magic))
		}
		s.enforceCapLocked(need)
		if s.active == nil {
			if err := s.createLocked(); err != nil {
				return done, err
			}
		}
		if _, err := s.f.Write(buf); err != nil {
			s.cutLocked()
			return done, fmt.Errorf("writing spool segment: %w", err)
		}
		s.active.Size += int64(len(buf))
		s.active.Records += int64(n)
		s.bytes += int64(len(buf))
		s.records += int64(n)
		s.dirty = true
		done += n
	}
	return done, nil
}

// cutLocked undoes a write that failed part way (a full disk): the
// segment is truncated to the records Append counted, so no torn record is
// left for a reader to count as a second loss. When that fails, the segment
// is sealed with its torn tail marked as counted already (in this process;
// a restart would count it once more, and logs that).
func (s *Spool) cutLocked() {
	err := s.f.Truncate(s.active.Size)
	if err == nil {
		return
	}
	st, serr := s.f.Stat()
	if serr == nil && st.Size() > s.active.Size {
		s.log.Error("spool: cannot cut a torn write off the segment; a restart will count its records once more",
			"segment", s.active.Path, "err", err)
		s.bytes += st.Size() - s.active.Size
		s.active.countedTo = st.Size()
		s.active.Size = st.Size()
	}
	_ = s.sealLocked()
}

// enforceCapLocked deletes the oldest sealed segments until need more bytes
// fit under MaxBytes.
func (s *Spool) enforceCapLocked(need int64) {
	for s.bytes+need > s.cfg.MaxBytes && len(s.sealed) > 0 {
		seg := s.sealed[0]
		s.sealed = s.sealed[1:]
		if err := s.removeSegment(seg); err != nil {
			s.log.Error("spool: deleting the oldest segment over the size cap", "segment", seg.Path, "err", err)
		}
		s.releaseLocked(seg)
		s.bytes -= seg.Size
		s.records -= seg.Records
		s.dirDirty = true
		s.log.Warn("spool full: dropped the oldest segment; its events are lost",
			"segment", filepath.Base(seg.Path), "records", seg.Records, "bytes", seg.Size, "max_bytes", s.cfg.MaxBytes)
		if s.cfg.OnLoss != nil {
			s.cfg.OnLoss(LossCap, seg.Records)
		}
	}
}

// createLocked starts a new active segment, in a directory that the
// configured path still names (see [Spool.checkDirLocked]).
func (s *Spool) createLocked() error {
	var seg *Segment
	var f *os.File
	var err error
	for range dirAttempts {
		if err = s.checkDirLocked(); err != nil {
			return fmt.Errorf("creating spool segment: %w", err)
		}
		name := fmt.Sprintf("%020d.seg", s.nextSeq)
		seg = &Segment{Seq: s.nextSeq, Path: filepath.Join(s.cfg.Dir, name), name: name}
		f, err = s.dir.createSegmentFile(name, seg.Path)
		if errors.Is(err, os.ErrExist) {
			// Not made by this spool (it never reuses a number):
			// left alone, and its number skipped.
			s.log.Warn("spool: a file already has the next segment's name; skipping that number", "file", name)
			s.nextSeq++
			continue
		}
		// ErrNotExist: the directory was removed since the check.
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("creating spool segment: %w", err)
	}
	name := seg.name
	if _, err := f.Write([]byte(Magic)); err != nil {
		f.Close()
		s.dir.remove(name, seg.Path)
		return fmt.Errorf("writing spool segment: %w", err)
	}
	s.attachLocked(seg, s.dir)
	s.holdLocked(seg, f)
	s.nextSeq++
	seg.Size = int64(len(Magic))
	s.bytes += seg.Size
	s.active, s.f = seg, f
	s.dirDirty = true
	return nil
}

// attachLocked records that seg is in d: d stays open until seg is
// released.
func (s *Spool) attachLocked(seg *Segment, d *dirHandle) {
	seg.dir = d
	d.segs++
}

// holdLocked records f as seg's open file.
func (s *Spool) holdLocked(seg *Segment, f *os.File) {
	seg.f = f
	s.held++
}

// unholdLocked closes seg's file; it is read by name from then on.
func (s *Spool) unholdLocked(seg *Segment) {
	if seg.f != nil {
		seg.f.Close()
		seg.f = nil
		s.held--
	}
}

// unholdOverLocked closes the file of seg, just sealed or checked, when
// more than maxHeldSegments are open.
func (s *Spool) unholdOverLocked(seg *Segment) {
	if s.held > maxHeldSegments {
		s.unholdLocked(seg)
	}
}

// releaseLocked closes seg's file, and its directory when seg was the
// last segment in a directory no longer in use: seg was deleted or
// forgotten.
func (s *Spool) releaseLocked(seg *Segment) {
	s.unholdLocked(seg)
	if d := seg.dir; d != nil {
		seg.dir = nil
		d.segs--
		if d.segs == 0 && d != s.dir {
			d.close()
		}
	}
}

// sealLocked fsyncs the active segment and queues it for reading; its
// file stays open for the reader.
func (s *Spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	f, seg := s.f, s.active
	s.active, s.f = nil, nil
	serr := f.Sync()
	s.sealed = append(s.sealed, seg)
	s.unholdOverLocked(seg)
	s.dirty = false
	if serr != nil {
		return fmt.Errorf("syncing spool segment: %w", serr)
	}
	return nil
}

// syncDir makes file creations and deletions in d durable; errors only
// cost durability, so they are logged.
func (s *Spool) syncDir(d *os.File) {
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		s.log.Warn("spool: syncing the directory", "err", err)
	}
}

// Sync fsyncs the active segment if anything was appended since the last
// sync, and the directory if a segment was created or deleted. It does not
// hold the lock during the fsyncs, so appends proceed. It also checks that
// the spool directory is still there (one stat(2)) and recreates it when
// it was removed (see [Spool.checkDirLocked]), so a removed directory
// comes back, locked, within one sync interval even when no segment is
// created.
func (s *Spool) Sync() error {
	s.mu.Lock()
	if !s.closed {
		_ = s.checkDirLocked() // a failure is logged once; Append reports it
	}
	f, dirty, dirDirty, d := s.f, s.dirty, s.dirDirty, s.dir.f
	s.dirty, s.dirDirty = false, false
	s.mu.Unlock()
	if dirDirty {
		s.syncDir(d)
	}
	if f == nil || !dirty {
		return nil
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		// ErrClosed: deleted meanwhile (Ack, size cap).
		return fmt.Errorf("syncing spool segment: %w", err)
	}
	return nil
}

// Oldest returns the oldest segment to replay. When only the active
// segment holds records it is sealed first, so a reader never reads a file
// still being written; that seal fsyncs the segment (and the directory)
// without holding the lock, so appends proceed meanwhile. ok is false when
// the spool holds no record.
func (s *Spool) Oldest() (seg *Segment, ok bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrClosed
	}
	var f, d *os.File
	var closeF bool
	if len(s.sealed) == 0 && s.active != nil && s.active.Records > 0 {
		f = s.f
		s.sealed = append(s.sealed, s.active)
		if s.held > maxHeldSegments {
			// Closed after the fsync, off the lock.
			s.active.f = nil
			s.held--
			closeF = true
		}
		s.active, s.f, s.dirty = nil, nil, false
		if s.dirDirty {
			d, s.dirDirty = s.dir.f, false
		}
	}
	if len(s.sealed) > 0 {
		seg, ok = s.sealed[0], true
	}
	s.mu.Unlock()
	if f != nil {
		if d != nil {
			s.syncDir(d)
		}
		// ErrClosed: deleted meanwhile by the size cap.
		serr := f.Sync()
		if closeF {
			f.Close()
		}
		if serr != nil && !errors.Is(serr, os.ErrClosed) {
			return nil, false, fmt.Errorf("syncing spool segment: %w", serr)
		}
	}
	return seg, ok, nil
}

// Open returns a reader over seg's records, read through the file the
// spool holds open (a second descriptor of it, the reader's own), so a
// segment unlinked behind the spool's back is still read whole. Damaged
// stretches are logged and reported (OnLoss, OnLostBytes) once, however
// often seg is read. The caller closes the reader.
func (s *Spool) Open(seg *Segment) (*Reader, error) {
	s.mu.Lock()
	var f *os.File
	var err error
	switch {
	case s.closed:
		err = ErrClosed
	case seg.f != nil:
		f, err = dupFile(seg.f)
	case seg.dir != nil:
		f, err = seg.dir.openSegmentFile(seg.name, seg.Path)
	default: // deleted by the size cap, or forgotten
		err = os.ErrNotExist
	}
	s.mu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		s.forget(seg)
		return nil, fmt.Errorf("%w: %s", ErrGone, seg.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening spool segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading spool segment: %w", err)
	}
	var ra io.ReaderAt = f
	if wrap := readHook.Load(); wrap != nil {
		ra = (*wrap)(seg.Path, f)
	}
	r := NewReader(ra, st.Size(), seg.Path)
	r.closer = f
	r.onDamage = func(d Damage) { s.damaged(seg, d) }
	return r, nil
}

// forget drops a sealed segment whose file is gone, counting its records
// as lost (once: a second call finds it no longer sealed).
func (s *Spool) forget(seg *Segment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.sealed, seg)
	if i < 0 {
		return
	}
	s.sealed = slices.Delete(s.sealed, i, i+1)
	s.releaseLocked(seg)
	s.bytes -= seg.Size
	s.records -= seg.Records
	s.log.Error("spool: a segment file was deleted by someone else; its events are lost",
		"segment", seg.Path, "records", seg.Records)
	if seg.Records > 0 && s.cfg.OnLoss != nil {
		s.cfg.OnLoss(LossRemoved, seg.Records)
	}
}

// Quarantine takes seg, which cannot be read (cause: a lasting read error
// of the disk), off the spool: its file is renamed <name>.corrupt for a
// human to inspect (as Open does with a segment without a valid record),
// its records past the first delivered are counted lost (OnLoss,
// LossReadError) and it is logged in one ERROR line. The file is closed
// and no longer counted in [Spool.Bytes] or against MaxBytes. A segment
// already gone (acked, dropped by the size cap, quarantined) is left
// alone. It returns the records counted lost.
func (s *Spool) Quarantine(seg *Segment, delivered int64, cause error) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.sealed, seg)
	if i < 0 {
		return 0
	}
	aside := seg.name + ".corrupt"
	var rerr error
	if seg.dir != nil && !s.closed {
		if err := unix.Renameat(seg.dir.fd, seg.name, seg.dir.fd, aside); err != nil {
			rerr = &os.LinkError{Op: "rename", Old: seg.Path, New: seg.Path + ".corrupt", Err: err}
		}
	}
	s.sealed = slices.Delete(s.sealed, i, i+1)
	s.releaseLocked(seg)
	s.bytes -= seg.Size
	s.records -= seg.Records
	s.dirDirty = true
	lost := max(seg.Records-delivered, 0)
	args := []any{"segment", seg.Path, "err", cause, "lost_records", lost, "delivered_records", delivered, "bytes", seg.Size}
	if rerr != nil {
		args = append(args, "move_aside_err", rerr)
	} else {
		args = append(args, "moved_to", aside)
	}
	s.log.Error("spool: a segment cannot be read; moved aside, its undelivered events are lost", args...)
	if lost > 0 && s.cfg.OnLoss != nil {
		s.cfg.OnLoss(LossReadError, lost)
	}
	return lost
}

// readHook: see SetReadHook.
var readHook atomic.Pointer[func(path string, r io.ReaderAt) io.ReaderAt]

// SetReadHook is a test seam for a failing disk, which cannot be made
// without root: wrap returns what the readers of [Open] and [Spool.Open]
// read segment path through (a reader that fails with EIO, say). nil removes
// it. It applies to every spool in the process; it is safe for concurrent
// use. Production code never sets it.
func SetReadHook(wrap func(path string, r io.ReaderAt) io.ReaderAt) {
	if wrap == nil {
		readHook.Store(nil)
		return
	}
	readHook.Store(&wrap)
}

// Ack deletes seg: every record in it was delivered. Acking a segment the
// size cap already dropped is not an error.
func (s *Spool) Ack(seg *Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.sealed, seg)
	if i < 0 {
		return nil
	}
	var err error
	if s.closed || seg.dir == nil {
		err = os.Remove(seg.Path)
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	} else {
		err = s.removeSegment(seg)
	}
	if err != nil {
		return fmt.Errorf("deleting spool segment: %w", err)
	}
	s.sealed = slices.Delete(s.sealed, i, i+1)
	s.releaseLocked(seg)
	s.bytes -= seg.Size
	s.records -= seg.Records
	s.dirDirty = true
	return nil
}

// Bytes returns the bytes the spool holds on disk.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Pending reports whether a segment waits to be read: a sealed one, even
// if all its records were found damaged (reading it to the end lets Ack
// delete it), or an active one with records.
func (s *Spool) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sealed) > 0 || (s.active != nil && s.active.Records > 0)
}

// Backlog returns how many sealed segments wait and how many records the
// active segment holds.
func (s *Spool) Backlog() (sealed int, active int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil {
		active = s.active.Records
	}
	return len(s.sealed), active
}

// Records returns how many records the spool holds: those appended or
// found valid at Open, less the damaged ones readers reported since.
func (s *Spool) Records() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records
}

// Segments returns the segments the spool holds, oldest first, the
// active one included.
func (s *Spool) Segments() []Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Segment, 0, len(s.sealed)+1)
	for _, seg := range s.sealed {
		out = append(out, *seg)
	}
	if s.active != nil {
		out = append(out, *s.active)
	}
	return out
}

// Close fsyncs and closes the active segment, writes the segments whose
// file was unlinked behind its back into the spool directory (see
// [Spool.writeBackLocked]), closes the segment files it holds and releases
// the directory lock. It blocks on those writes and fsyncs. Later calls
// return ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	var err error
	if s.f != nil {
		if serr := s.f.Sync(); serr != nil {
			err = fmt.Errorf("syncing spool segment: %w", serr)
		}
		// The active segment becomes a sealed one for the next Open.
		s.sealed = append(s.sealed, s.active)
		s.active, s.f = nil, nil
	}
	s.writeBackLocked()
	if s.dirDirty {
		s.syncDir(s.dir.f)
	}
	s.closeFilesLocked()
	return err
}

// closeFilesLocked closes every segment file and directory the spool
// holds, which releases the lock.
func (s *Spool) closeFilesLocked() {
	for _, seg := range s.sealed {
		s.releaseLocked(seg)
	}
	s.dir.close()
}
