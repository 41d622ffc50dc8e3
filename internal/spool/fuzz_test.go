package spool

import (
	"bytes"
	"io"
	"testing"
)

// FuzzReader feeds a segment made of valid records followed by arbitrary
// bytes to the reader: it must never panic or loop, and it must return the
// valid records first, in order.
func FuzzReader(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(3), []byte{})
	f.Add(uint8(2), []byte{0x05, 0, 0, 0})                           // torn header
	f.Add(uint8(2), []byte{0x05, 0, 0, 0, 1, 2, 3, 4, 'a', 'b'})     // torn payload
	f.Add(uint8(1), []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})      // impossible length
	f.Add(uint8(1), make([]byte, 64))                                // zero-filled tail
	f.Add(uint8(1), AppendRecord(nil, []byte("a valid record too"))) // valid suffix
	f.Add(uint8(4), []byte("\x03\x00\x00\x00\x00\x00\x00\x00abc"))   // bad CRC
	f.Fuzz(func(t *testing.T, nvalid uint8, tail []byte) {
		var seg bytes.Buffer
		seg.WriteString(Magic)
		var want [][]byte
		for i := range int(nvalid % 16) {
			p := rec(i)
			want = append(want, p)
			seg.Write(AppendRecord(nil, p))
		}
		seg.Write(tail)
		r := NewReader(bytes.NewReader(seg.Bytes()), "fuzz", nil)
		var got [][]byte
		for range seg.Len() + 1 { // each Next consumes at least one byte or ends
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			got = append(got, p)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("reader did not reach EOF within %d calls", seg.Len()+1)
		}
		if len(got) < len(want) {
			t.Fatalf("got %d records, want at least the %d valid ones", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("record %d = %q, want %q", i, got[i], want[i])
			}
		}
	})
}

// FuzzReaderRaw feeds arbitrary bytes, magic or not.
func FuzzReaderRaw(f *testing.F) {
	f.Add([]byte(Magic))
	f.Add([]byte("OLSPOOL"))
	f.Add(append([]byte(Magic), AppendRecord(nil, []byte("x"))...))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), "fuzz", nil)
		for range len(data) + 2 {
			p, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if len(p) == 0 || len(p) > MaxRecord {
				t.Fatalf("Next returned a %d-byte payload", len(p))
			}
		}
		t.Fatalf("reader did not reach EOF on %d bytes", len(data))
	})
}
