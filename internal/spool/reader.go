package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
)

// Reader iterates over the records of one segment. It never panics on
// malformed input: a record with a bad checksum is skipped, and a torn or
// garbled tail ends the segment; both are logged and counted. A Reader is
// not safe for concurrent use.
type Reader struct {
	r    io.Reader
	name string
	log  *slog.Logger

	started   bool
	done      bool
	offset    int64
	records   int64
	corrupt   int64
	tornBytes int64
	hdr       [recordHeader]byte

	closer    io.Closer
	onCorrupt func(int64)
}

// NewReader returns a reader over a segment's bytes (magic included). name
// identifies the segment in log lines; log may be nil.
func NewReader(r io.Reader, name string, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{r: r, name: name, log: log}
}

// Next returns the next valid payload, or io.EOF at the end of the segment
// (including after a torn or garbled tail). Other errors come from the
// underlying reader. The returned slice is the caller's.
func (r *Reader) Next() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	if !r.started {
		r.started = true
		var m [len(Magic)]byte
		n, err := io.ReadFull(r.r, m[:])
		r.offset += int64(n)
		switch {
		case err == io.EOF:
			// Empty file: created, then the process died before the magic.
			return r.end()
		case errors.Is(err, io.ErrUnexpectedEOF) || (err == nil && !bytes.Equal(m[:], []byte(Magic))):
			r.log.Warn("spool: not a spool segment or torn header, skipped", "segment", r.name)
			return r.tail(1)
		case err != nil:
			return nil, err
		}
	}
	for {
		n, err := io.ReadFull(r.r, r.hdr[:])
		switch {
		case err == io.EOF:
			return r.end()
		case errors.Is(err, io.ErrUnexpectedEOF):
			r.offset += int64(n)
			r.log.Warn("spool: torn record header at the end of a segment, skipped",
				"segment", r.name, "offset", r.offset-int64(n), "bytes", n)
			r.tornBytes += int64(n)
			return r.tail(1)
		case err != nil:
			return nil, err
		}
		at := r.offset
		r.offset += recordHeader
		length := binary.LittleEndian.Uint32(r.hdr[0:4])
		sum := binary.LittleEndian.Uint32(r.hdr[4:8])
		if length == 0 || length > MaxRecord {
			r.log.Warn("spool: impossible record length, rest of the segment skipped",
				"segment", r.name, "offset", at, "length", length)
			r.tornBytes += recordHeader
			return r.tail(1)
		}
		payload := make([]byte, length)
		n, err = io.ReadFull(r.r, payload)
		r.offset += int64(n)
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF:
			r.log.Warn("spool: torn record at the end of a segment, skipped",
				"segment", r.name, "offset", at, "want_bytes", length, "have_bytes", n)
			r.tornBytes += recordHeader + int64(n)
			return r.tail(1)
		case err != nil:
			return nil, err
		}
		if crc32.Checksum(payload, castagnoli) != sum {
			r.log.Warn("spool: record checksum mismatch, record skipped",
				"segment", r.name, "offset", at, "length", length)
			r.corrupt++
			if r.onCorrupt != nil {
				r.onCorrupt(1)
			}
			continue
		}
		r.records++
		return payload, nil
	}
}

// tail ends the segment after a torn or garbled stretch, counting lost
// records and discarding what is left.
func (r *Reader) tail(lost int64) ([]byte, error) {
	n, _ := io.Copy(io.Discard, r.r)
	r.tornBytes += n
	r.offset += n
	r.corrupt += lost
	if r.onCorrupt != nil {
		r.onCorrupt(lost)
	}
	return r.end()
}

func (r *Reader) end() ([]byte, error) {
	r.done = true
	return nil, io.EOF
}

// Records returns how many valid records Next has returned.
func (r *Reader) Records() int64 { return r.records }

// Corrupt returns how many records were skipped (a torn tail counts as one).
func (r *Reader) Corrupt() int64 { return r.corrupt }

// TornBytes returns how many bytes at the tail were discarded.
func (r *Reader) TornBytes() int64 { return r.tornBytes }

// Close closes the segment file when the reader came from [Spool.Open].
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}
