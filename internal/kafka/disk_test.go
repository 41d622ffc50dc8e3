package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestProducerDiskBuffer: in disk mode every event is in the spool file
// when Publish returns (so a SIGKILL cannot lose it), and all of them reach
// Kafka through the spool, counted as sent; Close delivers what the spool
// still holds and leaves no segment behind.
func TestProducerDiskBuffer(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, testTopic))
	addr := c.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, BatchSize: 100})
	h.run(t)
	const n = 2000
	var ids []string
	for i := range n / 100 {
		ids = append(ids, publishN(h.p, i*100, 100)...)
		// Synchronous: counted as spooled, in the file, on return.
		if got := h.metric(t, "originlens_kafka_events_spooled_total"); got != float64(len(ids)) {
			t.Fatalf("events_spooled_total = %v right after %d Publish calls returned, want %d", got, len(ids), len(ids))
		}
	}
	waitFor(t, "half acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") >= n/2 })
	h.close(t)
	if got := h.metric(t, "originlens_kafka_events_sent_total"); got != n {
		t.Errorf("events_sent_total after Close = %v, want %d: Close delivers the spool", got, n)
	}
	if r, b := h.metric(t, "originlens_kafka_spool_records"), h.metric(t, "originlens_kafka_spool_bytes"); r != 0 || b != 0 {
		t.Errorf("spool after Close: %v records, %v bytes, want 0", r, b)
	}
	if q := h.metric(t, "originlens_kafka_events_queued_total"); q != 0 {
		t.Errorf("events_queued_total = %v in disk mode, want 0", q)
	}
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
}
