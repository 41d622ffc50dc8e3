package spool

import "testing"

// benchPayload is the size of a spooled event (key, header and event JSON).
const benchPayload = 700

// BenchmarkAppend is one event appended to the spool, as disk-mode Publish
// does: one record framed and written.
func BenchmarkAppend(b *testing.B) {
	s, _, _ := openTest(b, Config{MaxBytes: 1 << 30, SegmentBytes: 64 << 20})
	p := make([]byte, benchPayload)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	for i := 0; b.Loop(); i++ {
		if i%(32<<10) == 0 {
			// Keep the segment small: read back and delete it.
			b.StopTimer()
			for {
				seg, ok, err := s.Oldest()
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				if err := s.Ack(seg); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		if _, err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead is one record read back from a sealed segment, as a
// replay does: batches of 1,000 records into one reused buffer.
func BenchmarkRead(b *testing.B) {
	s, _, _ := openTest(b, Config{MaxBytes: 1 << 30, SegmentBytes: 64 << 20})
	p := make([]byte, benchPayload)
	const records = 10000
	for range records {
		if _, err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
	seg, _, err := s.Oldest()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	var r *Reader
	var buf []byte
	for i := 0; b.Loop(); i++ {
		if i%records == 0 {
			b.StopTimer()
			if r != nil {
				r.Close()
			}
			if r, err = s.Open(seg); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if i%1000 == 0 {
			buf = buf[:0]
		}
		var rec []byte
		rec, buf, err = readNext(r, buf)
		if err != nil || len(rec) != benchPayload {
			b.Fatal(len(rec), err)
		}
	}
	if r != nil {
		r.Close()
	}
}

// readNext is the way a replay reads a record: into a buffer reused
// across batches.
func readNext(r *Reader, buf []byte) ([]byte, []byte, error) {
	out, err := r.AppendNext(buf)
	if err != nil {
		return nil, buf, err
	}
	return out[len(buf):], out, nil
}
