package ingest

import (
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// BenchmarkParse isolates the per-message decode (event.ParseHead plus the
// header check).
func BenchmarkParse(b *testing.B) {
	ev := opensearchtest.SampleEvent(1, time.Now())
	v, _ := ev.Marshal()
	msg := kafka.Message{Value: v}
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(&msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendItem isolates building one document's bulk lines.
func BenchmarkAppendItem(b *testing.B) {
	ev := opensearchtest.SampleEvent(1, time.Now())
	v, _ := ev.Marshal()
	p := New(Config{}, nil, unusedIndexer{}, nil, nil)
	h, err := event.ParseHead(v)
	if err != nil {
		b.Fatal(err)
	}
	it := &item{msg: kafka.Message{Value: v}, ev: &h}
	bt := &batch{buf: make([]byte, 0, 8<<20)}
	b.ReportAllocs()
	for b.Loop() {
		if len(bt.buf) > 7<<20 {
			bt.buf, bt.items = bt.buf[:0], bt.items[:0]
		}
		p.appendItem(bt, it)
	}
}
