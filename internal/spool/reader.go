package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Damage is a stretch of a segment that holds no readable record, found and
// skipped by a [Reader].
type Damage struct {
	Offset int64 // where the stretch starts in the segment
	Bytes  int64 // its length
	// Records is how many records the stretch held, when Known. A stretch
	// whose framing is intact (records with bad checksums, a torn last
	// record) has a known count; a garbled one (a damaged length field
	// whose record cannot be recovered, bytes that are not records) does
	// not: only its bytes are known.
	Records int64
	Known   bool
	Kind    string // what was wrong, for the log
}

// Damage kinds.
const (
	DamageChecksum = "checksum"      // framing intact, checksum failed
	DamageTorn     = "torn tail"     // the last record is cut short
	DamageGarbled  = "garbled"       // neither framing nor checksum holds
	DamageMagic    = "segment magic" // the segment header is missing or damaged
	// DamageRecovered: a record's length field was damaged, but the
	// bytes up to the next record carry its checksum; the record is
	// returned, nothing is lost (Bytes and Records are 0).
	DamageRecovered = "length field, record recovered"
)

func (d Damage) String() string {
	if d.Known {
		return fmt.Sprintf("%s at offset %d: %d bytes, %d records", d.Kind, d.Offset, d.Bytes, d.Records)
	}
	return fmt.Sprintf("%s at offset %d: %d bytes, record count unknown", d.Kind, d.Offset, d.Bytes)
}

// readWindow is how much a Reader reads at once.
const readWindow = 64 << 10

// Reader iterates over the records of one segment. It never panics on
// malformed input. A damaged stretch is skipped and reported (to the
// callback set by the Spool, and in [Reader.Damages]); reading resumes at
// the next valid record, found by its framing and checksum, so only the
// damaged records are lost:
//
//   - a record whose checksum fails but whose length leads to the next
//     valid record (or to the end) is one lost record;
//   - a record whose length field is damaged is recovered when the bytes up
//     to the next valid record carry its checksum;
//   - a last record cut short (a torn write) is one lost record;
//   - anything else is a garbled stretch whose record count is unknown.
//
// Resynchronisation tests each offset of a damaged stretch for a record
// (a plausible length, then the checksum), so a damaged stretch costs at
// most one checksum of up to MaxRecord bytes per offset; for real damage
// almost every offset is rejected by its length. A Reader is not safe for
// concurrent use.
type Reader struct {
	r    io.ReaderAt
	size int64
	name string

	started bool
	pos     int64
	win     []byte // the bytes at [winOff, winOff+len(win))
	winOff  int64
	buf     []byte // win's storage

	records  int64
	damages  []Damage
	onDamage func(Damage)
	closer   io.Closer
}

// NewReader returns a reader over the first size bytes of a segment (magic
// included) read from r. name identifies the segment in errors.
func NewReader(r io.ReaderAt, size int64, name string) *Reader {
	return &Reader{r: r, size: max(size, 0), name: name}
}

// Next returns the next valid payload, or io.EOF at the end of the segment.
// Other errors come from the underlying reader. The returned slice is the
// caller's (a new allocation; [Reader.AppendNext] reuses the caller's).
func (r *Reader) Next() ([]byte, error) {
	out, err := r.AppendNext(nil)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AppendNext appends the next valid payload to dst and returns the
// extended slice (the payload is its part past len(dst)), or dst and
// io.EOF at the end of the segment. Other errors come from the underlying
// reader, and return dst. It allocates only when dst lacks the room, so a
// caller that reads a batch of records into one buffer reused across
// batches reads without allocating; the payloads alias that buffer (and,
// once append grew it, the earlier array), so the caller must not reuse
// it while a payload read into it is still in use.
func (r *Reader) AppendNext(dst []byte) ([]byte, error) {
	if !r.started {
		r.started = true
		if err := r.start(); err != nil {
			return dst, err
		}
	}
	for r.pos < r.size {
		p, n, ok, err := r.recordAt(r.pos)
		if err != nil {
			return dst, err
		}
		if ok {
			r.pos += n
			r.records++
			return append(dst, p...), nil
		}
		p, err = r.skipDamage()
		if err != nil {
			return dst, err
		}
		if p != nil {
			r.records++
			return append(dst, p...), nil
		}
	}
	return dst, io.EOF
}

// start checks the segment magic.
func (r *Reader) start() error {
	if r.size == 0 {
		return nil // created, then the process died before the magic
	}
	m, err := r.get(0, min(int64(len(Magic)), r.size))
	if err != nil {
		return err
	}
	if bytes.Equal(m, []byte(Magic)) {
		r.pos = int64(len(Magic))
		return nil
	}
	if r.size < int64(len(Magic)) && bytes.HasPrefix([]byte(Magic), m) {
		// A torn magic: the process died while creating the segment,
		// before any record.
		r.damage(Damage{Offset: 0, Bytes: r.size, Known: true, Kind: DamageMagic})
		r.pos = r.size
		return nil
	}
	q, err := r.nextValid(1)
	if err != nil {
		return err
	}
	// Only the magic is damaged when records start right after it.
	r.damage(Damage{Offset: 0, Bytes: q, Known: q == int64(len(Magic)), Kind: DamageMagic})
	r.pos = q
	return nil
}

// skipDamage handles the damaged record at r.pos: it reports the stretch up
// to the next valid record and moves past it, or returns the record when
// its checksum proves it whole despite a damaged length field (aliasing
// the window, until the next read).
func (r *Reader) skipDamage() ([]byte, error) {
	p := r.pos
	q, err := r.nextValid(p + 1)
	if err != nil {
		return nil, err
	}
	r.pos = q
	// A damaged length field: the bytes up to the next record carry the
	// header's checksum.
	if n := q - p - recordHeader; n >= 1 && n <= MaxRecord {
		b, err := r.get(p, q-p)
		if err != nil {
			return nil, err
		}
		if crc32.Checksum(b[recordHeader:], castagnoli) == binary.LittleEndian.Uint32(b[4:8]) {
			r.damage(Damage{Offset: p, Known: true, Kind: DamageRecovered})
			return b[recordHeader:], nil
		}
	}
	// Intact framing: the lengths lead from p to q.
	d := Damage{Offset: p, Bytes: q - p, Kind: DamageGarbled}
	var k int64
	for x := p; ; {
		if x == q {
			d.Records, d.Known = k, true
			break
		}
		if q-x < recordHeader {
			if q == r.size { // a torn header at the end
				d.Records, d.Known, d.Kind = k+1, true, DamageTorn
			}
			break
		}
		h, err := r.get(x, recordHeader)
		if err != nil {
			return nil, err
		}
		length := int64(binary.LittleEndian.Uint32(h))
		if length == 0 || length > MaxRecord {
			break
		}
		k++
		x += recordHeader + length
		if x > q {
			if q == r.size { // the last record is cut short
				d.Records, d.Known, d.Kind = k, true, DamageTorn
			}
			break
		}
		d.Kind = DamageChecksum
	}
	if !d.Known {
		d.Kind = DamageGarbled
	}
	r.damage(d)
	return nil, nil
}

// damage records and reports d.
func (r *Reader) damage(d Damage) {
	r.damages = append(r.damages, d)
	if r.onDamage != nil {
		r.onDamage(d)
	}
}

// nextValid returns the first offset at or after from where a valid record
// starts, or the segment size when none does.
func (r *Reader) nextValid(from int64) (int64, error) {
	for x := from; x+recordHeader < r.size; x++ {
		_, _, ok, err := r.recordAt(x)
		if err != nil {
			return 0, err
		}
		if ok {
			return x, nil
		}
	}
	return r.size, nil
}

// recordAt reads the record at off: its payload (aliasing the window) and
// total length when it is whole and its checksum holds.
func (r *Reader) recordAt(off int64) (payload []byte, n int64, ok bool, err error) {
	if r.size-off < recordHeader {
		return nil, 0, false, nil
	}
	h, err := r.get(off, recordHeader)
	if err != nil {
		return nil, 0, false, err
	}
	length := int64(binary.LittleEndian.Uint32(h))
	if length == 0 || length > MaxRecord || off+recordHeader+length > r.size {
		return nil, 0, false, nil
	}
	b, err := r.get(off, recordHeader+length)
	if err != nil {
		return nil, 0, false, err
	}
	if crc32.Checksum(b[recordHeader:], castagnoli) != binary.LittleEndian.Uint32(b[4:8]) {
		return nil, 0, false, nil
	}
	return b[recordHeader:], recordHeader + length, true, nil
}

// get returns the n bytes at off (off+n <= size), from the window when it
// holds them, else after reading a new window starting at off.
func (r *Reader) get(off, n int64) ([]byte, error) {
	if off >= r.winOff && off+n <= r.winOff+int64(len(r.win)) {
		return r.win[off-r.winOff : off-r.winOff+n], nil
	}
	want := min(max(n, readWindow), r.size-off)
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	b := r.buf[:want]
	m, err := r.r.ReadAt(b, off)
	if int64(m) < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF // the file shrank under us
		}
		r.win = nil
		return nil, fmt.Errorf("reading spool segment %s at %d: %w", r.name, off, err)
	}
	r.win, r.winOff = b[:m], off
	return b[:n], nil
}

// Records returns how many valid records Next has returned.
func (r *Reader) Records() int64 { return r.records }

// Damages returns the damaged stretches found so far.
func (r *Reader) Damages() []Damage { return r.damages }

// Close closes the segment file when the reader came from [Spool.Open].
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}
