package kafka

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/segmentio/kafka-go/compress"
)

// TestLZ4BlockSize checks that the lz4 codec kafka-go uses writes frames
// of 64 KiB blocks (the frame descriptor's BD byte), not pierrec/lz4's 4
// MiB default that held 8 MiB per pooled writer, without a content
// checksum (FLG), and that kafka-go's lz4 reader gets back what was
// written, across several blocks.
func TestLZ4BlockSize(t *testing.T) {
	codec := compress.Lz4.Codec()
	var raw []byte
	for i := 0; len(raw) < 3*64<<10; i++ {
		raw = fmt.Appendf(raw, `{"event":{"id":"%08d"},"client":{"ip":"192.0.2.%d"}}`, i, i%256)
	}
	for range 2 { // the second round reuses the pooled writer
		var out bytes.Buffer
		w := codec.NewWriter(&out)
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		b := out.Bytes()
		if len(b) < 6 || !bytes.Equal(b[:4], []byte{0x04, 0x22, 0x4d, 0x18}) {
			t.Fatalf("not an LZ4 frame: % x", b[:min(len(b), 6)])
		}
		if got := b[5] >> 4 & 7; got != 4 { // 4: 64 KiB, 7: 4 MiB
			t.Errorf("block size index %d in the frame descriptor, want 4 (64 KiB)", got)
		}
		if b[4]&0x04 != 0 { // FLG bit 2: content checksum
			t.Errorf("frame flags %08b ask for a content checksum", b[4])
		}
		r := codec.NewReader(bytes.NewReader(b))
		back, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !bytes.Equal(back, raw) {
			t.Fatalf("read back %d bytes, not the %d written", len(back), len(raw))
		}
	}
}
