package spool

import (
	"bytes"
	"encoding/binary"
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
		r := NewReader(bytes.NewReader(seg.Bytes()), int64(seg.Len()), "fuzz")
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
		r := NewReader(bytes.NewReader(data), int64(len(data)), "fuzz")
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

// FuzzSegmentRecovery damages one spot of a segment of valid records (a
// flipped byte, an overwritten length field, a cut, inserted bytes) and
// checks the recovery: no panic, every byte accounted for exactly once
// (the magic, the records returned, the damaged stretches), the records
// returned are original records in order, every record the damage did not
// touch is among them, and a flipped payload byte loses exactly that one
// record, counted.
func FuzzSegmentRecovery(f *testing.F) {
	f.Add(uint8(20), uint8(0), uint16(100), uint32(0x40))       // flipped byte
	f.Add(uint8(20), uint8(1), uint16(7), uint32(0x137))        // length field of record 7
	f.Add(uint8(20), uint8(1), uint16(3), uint32(0xffffffff))   // impossible length
	f.Add(uint8(20), uint8(2), uint16(333), uint32(0))          // cut
	f.Add(uint8(20), uint8(3), uint16(200), uint32(0x05000000)) // inserted bytes
	f.Add(uint8(1), uint8(0), uint16(2), uint32(1))             // flipped magic
	f.Fuzz(func(t *testing.T, nrec uint8, op uint8, where uint16, val uint32) {
		var seg []byte
		seg = append(seg, Magic...)
		var recs [][]byte
		var starts []int
		for i := range int(nrec%40) + 1 {
			p := bytes.Repeat(rec(i), 1+i%5)
			recs = append(recs, p)
			starts = append(starts, len(seg))
			seg = AppendRecord(seg, p)
		}
		orig := len(seg)
		lo, hi := 0, 0 // the damaged byte range of the original
		payloadFlip := -1
		switch op % 4 {
		case 0:
			x := int(where) % len(seg)
			seg[x] ^= byte(val) | 1
			lo, hi = x, x+1
			for i, s := range starts {
				if x >= s+recordHeader && x < s+recordHeader+len(recs[i]) {
					payloadFlip = i
				}
			}
		case 1:
			i := int(where) % len(starts)
			binary.LittleEndian.PutUint32(seg[starts[i]:], val)
			lo, hi = starts[i], starts[i]+4
		case 2:
			x := int(where) % (len(seg) + 1)
			seg = seg[:x]
			lo, hi = x, orig
		case 3:
			x := int(where) % (len(seg) + 1)
			ins := binary.LittleEndian.AppendUint32(nil, val)
			seg = append(seg[:x:x], append(ins, seg[x:]...)...)
			lo, hi = x, x
		}
		r := NewReader(bytes.NewReader(seg), int64(len(seg)), "fuzz")
		var got [][]byte
		accounted := int64(0)
		for range len(seg) + 2 {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			got = append(got, p)
			accounted += recordHeader + int64(len(p))
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("reader did not reach EOF")
		}
		var knownLost int64
		for _, d := range r.Damages() {
			accounted += d.Bytes
			if d.Known {
				knownLost += d.Records
			}
		}
		if len(seg) >= len(Magic) && bytes.Equal(seg[:len(Magic)], []byte(Magic)) {
			accounted += int64(len(Magic))
		}
		if accounted != int64(len(seg)) {
			t.Fatalf("%d of %d bytes accounted for (damages %v)", accounted, len(seg), r.Damages())
		}
		// Returned records are originals, in order; untouched ones are
		// all there.
		j := 0
		for i, p := range recs {
			s, e := starts[i], starts[i]+recordHeader+len(p)
			untouched := e <= lo || s >= hi
			if op%4 == 3 {
				untouched = e <= lo || s >= lo
			}
			if j < len(got) && bytes.Equal(got[j], p) {
				j++
			} else if untouched {
				t.Fatalf("untouched record %d missing (damage [%d,%d), damages %v)", i, lo, hi, r.Damages())
			}
		}
		if j != len(got) {
			t.Fatalf("%d records returned that are not originals in order", len(got)-j)
		}
		if payloadFlip >= 0 && (len(got) != len(recs)-1 || knownLost != 1) {
			t.Fatalf("a flipped payload byte of record %d: %d of %d returned, %d counted lost; want all but one, 1",
				payloadFlip, len(got), len(recs), knownLost)
		}
	})
}
