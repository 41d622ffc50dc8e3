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
// Readers see sealed segments oldest first. A record whose checksum fails is
// skipped; a torn or garbled tail (short header, short payload, impossible
// length) ends the segment; each is logged and counted as a loss, and never
// panics. A segment is deleted only by [Spool.Ack], after its reader has
// delivered every record.
//
// The spool has a size cap: an append that would pass MaxBytes first deletes
// the oldest segments, logs them and counts their records as lost, so a long
// outage costs the oldest events, visibly, instead of the disk.
package spool

import (
	"bufio"
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
	"syscall"
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
)

// SystemDir is the spool directory [DefaultDir] prefers.
const SystemDir = "/var/lib/originlens/spool"

// Errors.
var (
	ErrClosed   = errors.New("spool: closed")
	ErrLocked   = errors.New("spool: directory in use by another process")
	ErrTooLarge = errors.New("spool: record larger than MaxRecord")
	ErrEmpty    = errors.New("spool: empty record")
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
	// with the spool's lock held or from a Reader: it must be quick and
	// must not call back into the spool.
	OnLoss func(reason string, records int64)
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

// Segment is one sealed segment file. Its fields are read-only.
type Segment struct {
	Seq     uint64
	Path    string
	Size    int64
	Records int64 // records appended (or found valid at Open)
}

// Spool is an on-disk FIFO of records. All methods are safe for concurrent
// use. Append, Ack and rotation take a short lock and do plain file writes;
// only Sync, rotation and Close fsync.
type Spool struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	lock    *os.File   // holds the flock
	sealed  []*Segment // oldest first
	active  *Segment   // nil until the first append after open or rotation
	f       *os.File   // the active segment
	nextSeq uint64
	bytes   int64
	records int64
	dirty   bool
	closed  bool
}

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
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, cfg.Dir)
		}
		return nil, fmt.Errorf("locking spool directory: %w", err)
	}
	s := &Spool{cfg: cfg, log: log.With("spool", cfg.Dir), lock: lock, nextSeq: 1}
	if err := s.scan(); err != nil {
		lock.Close()
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
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".seg") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			s.log.Warn("spool: ignoring a file that is not a segment", "file", name)
			continue
		}
		seg := &Segment{Seq: seq, Path: filepath.Join(s.cfg.Dir, name)}
		if err := countRecords(seg); err != nil {
			return err
		}
		s.sealed = append(s.sealed, seg)
		s.bytes += seg.Size
		s.records += seg.Records
		s.nextSeq = max(s.nextSeq, seq+1)
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

// countRecords fills in Size and Records of seg by reading it.
func countRecords(seg *Segment) error {
	f, err := os.Open(seg.Path)
	if err != nil {
		return fmt.Errorf("opening spool segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading spool segment: %w", err)
	}
	seg.Size = st.Size()
	r := NewReader(bufio.NewReaderSize(f, 64<<10), seg.Path, nil)
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading spool segment: %w", err)
		}
		seg.Records++
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
	var buf []byte
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
			// A partial write leaves a torn tail the reader skips; start
			// a fresh segment so later records are not behind it.
			if st, serr := s.f.Stat(); serr == nil {
				s.bytes += st.Size() - s.active.Size
				s.active.Size = st.Size()
			}
			_ = s.sealLocked()
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

// enforceCapLocked deletes the oldest sealed segments until need more bytes
// fit under MaxBytes.
func (s *Spool) enforceCapLocked(need int64) {
	for s.bytes+need > s.cfg.MaxBytes && len(s.sealed) > 0 {
		seg := s.sealed[0]
		s.sealed = s.sealed[1:]
		if err := os.Remove(seg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("spool: deleting the oldest segment over the size cap", "segment", seg.Path, "err", err)
		}
		s.bytes -= seg.Size
		s.records -= seg.Records
		s.log.Warn("spool full: dropped the oldest segment; its events are lost",
			"segment", filepath.Base(seg.Path), "records", seg.Records, "bytes", seg.Size, "max_bytes", s.cfg.MaxBytes)
		if s.cfg.OnLoss != nil {
			s.cfg.OnLoss(LossCap, seg.Records)
		}
	}
}

// createLocked starts a new active segment.
func (s *Spool) createLocked() error {
	seg := &Segment{Seq: s.nextSeq, Path: filepath.Join(s.cfg.Dir, fmt.Sprintf("%020d.seg", s.nextSeq))}
	f, err := os.OpenFile(seg.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("creating spool segment: %w", err)
	}
	if _, err := f.Write([]byte(Magic)); err != nil {
		f.Close()
		os.Remove(seg.Path)
		return fmt.Errorf("writing spool segment: %w", err)
	}
	s.nextSeq++
	seg.Size = int64(len(Magic))
	s.bytes += seg.Size
	s.active, s.f = seg, f
	s.syncDir()
	return nil
}

// sealLocked fsyncs and closes the active segment and queues it for
// reading.
func (s *Spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	f, seg := s.f, s.active
	s.active, s.f = nil, nil
	serr := f.Sync()
	cerr := f.Close()
	s.sealed = append(s.sealed, seg)
	s.dirty = false
	if serr != nil {
		return fmt.Errorf("syncing spool segment: %w", serr)
	}
	if cerr != nil {
		return fmt.Errorf("closing spool segment: %w", cerr)
	}
	return nil
}

// syncDir makes file creations and deletions durable; errors only cost
// durability, so they are logged.
func (s *Spool) syncDir() {
	d, err := os.Open(s.cfg.Dir)
	if err != nil {
		s.log.Warn("spool: opening the directory to sync it", "err", err)
		return
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		s.log.Warn("spool: syncing the directory", "err", err)
	}
}

// Sync fsyncs the active segment if anything was appended since the last
// sync. It does not hold the lock during the fsync, so appends proceed.
func (s *Spool) Sync() error {
	s.mu.Lock()
	f, dirty := s.f, s.dirty
	s.dirty = false
	s.mu.Unlock()
	if f == nil || !dirty {
		return nil
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		// ErrClosed: rotated meanwhile, and rotation fsyncs.
		return fmt.Errorf("syncing spool segment: %w", err)
	}
	return nil
}

// Oldest returns the oldest segment to replay. When only the active
// segment holds records it is sealed first, so a reader never reads a file
// still being written. ok is false when the spool holds no record.
func (s *Spool) Oldest() (seg *Segment, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	if len(s.sealed) == 0 && s.active != nil && s.active.Records > 0 {
		if err := s.sealLocked(); err != nil {
			return nil, false, err
		}
	}
	if len(s.sealed) == 0 {
		return nil, false, nil
	}
	return s.sealed[0], true, nil
}

// Open returns a reader over seg's records. Records skipped as corrupt are
// logged and reported to OnLoss. The caller closes the reader.
func (s *Spool) Open(seg *Segment) (*Reader, error) {
	f, err := os.Open(seg.Path)
	if err != nil {
		return nil, fmt.Errorf("opening spool segment: %w", err)
	}
	r := NewReader(bufio.NewReaderSize(f, 64<<10), seg.Path, s.log)
	r.closer = f
	r.onCorrupt = func(n int64) {
		if s.cfg.OnLoss != nil {
			s.cfg.OnLoss(LossCorrupt, n)
		}
	}
	return r, nil
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
	if err := os.Remove(seg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting spool segment: %w", err)
	}
	s.sealed = slices.Delete(s.sealed, i, i+1)
	s.bytes -= seg.Size
	s.records -= seg.Records
	s.syncDir()
	return nil
}

// Bytes returns the bytes the spool holds on disk.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Records returns how many records the spool holds (corrupt ones that
// readers will skip included).
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

// Close fsyncs and closes the active segment and releases the directory
// lock. Later calls return ErrClosed.
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
		if cerr := s.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing spool segment: %w", cerr)
		}
		// The active segment becomes a sealed one for the next Open.
		s.sealed = append(s.sealed, s.active)
		s.active, s.f = nil, nil
	}
	s.lock.Close() // releases the flock
	return err
}
