package kafka

import (
	"io"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/segmentio/kafka-go/compress"
	kafkalz4 "github.com/segmentio/kafka-go/compress/lz4"
)

// lz4BlockSize is the largest block the lz4 codec compresses at once: 64
// KiB, the Java client's size. kafka-go's own codec takes pierrec/lz4's
// default of 4 MiB, and each of its pooled writers holds two blocks of
// that size (the input block and the compressed one): 8 MiB of heap for
// batches of a few hundred KiB, which the garbage collector's pacing then
// doubled into the app's peak RSS (BENCHMARKS.md, issue 14, this session).
const lz4BlockSize = lz4.Block64Kb

// lz4Codec is kafka-go's lz4 codec with lz4BlockSize blocks and no
// content checksum (an xxHash32 over every byte of the batch, which the
// Java client does not write either: Kafka's record batch has its own
// CRC32C over the compressed records). The frames are standard LZ4 frames
// (both settings are in each frame's descriptor), so any Kafka consumer
// reads them; reading is kafka-go's own.
type lz4Codec struct {
	kafkalz4.Codec
	writers sync.Pool // *lz4.Writer, with the block size applied
}

// lz4Writer closes into its codec's pool.
type lz4Writer struct {
	*lz4.Writer
	c *lz4Codec
}

// NewWriter implements compress.Codec. It is safe for concurrent use.
func (c *lz4Codec) NewWriter(w io.Writer) io.WriteCloser {
	z, _ := c.writers.Get().(*lz4.Writer)
	if z == nil {
		z = lz4.NewWriter(nil)
		// Apply only fails for an invalid option on a used writer.
		_ = z.Apply(lz4.BlockSizeOption(lz4BlockSize), lz4.ChecksumOption(false))
	}
	z.Reset(w) // keeps the options
	return &lz4Writer{Writer: z, c: c}
}

// Close flushes the frame and returns the writer to the pool.
func (w *lz4Writer) Close() error {
	z := w.Writer
	if z == nil {
		return nil
	}
	w.Writer = nil
	err := z.Close()
	z.Reset(nil)
	w.c.writers.Put(z)
	return err
}

// kafka-go looks a batch's codec up in its global table by the
// Compression code of the Writer; the Writer takes no codec of its own.
// Installing ours there is the only way to set the block size, and it only
// changes how this process compresses (readers are kafka-go's).
func init() {
	compress.Codecs[compress.Lz4] = &lz4Codec{}
}
