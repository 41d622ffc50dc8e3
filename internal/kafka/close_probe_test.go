package kafka

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestCloseDuringFirstProbeDelivers: a Close (SIGTERM) that came while the
// first broker probe was still out left disk mode's spooled events in the
// spool for the next start: the flush before the stop waited only while
// the producer was known healthy, and it did not know yet. cmd/app's
// TestKafkaUDPFlows saw it as "0 events on the topic" about once in 13
// runs. Close must wait for the probe's answer (within its context) and
// deliver.
func TestCloseDuringFirstProbeDelivers(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(2, testTopic))
	addr := c.ListenAddrs()[0]
	var metadata atomic.Int64
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if metadata.Add(1) == 1 {
			time.Sleep(300 * time.Millisecond) // the first probe's answer is slow
		}
		return nil, nil, false
	})
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, RetryInterval: 5 * time.Second})
	ids := publishN(h.p, 0, 20)
	h.run(t)
	waitFor(t, "the first probe sent", func() bool { return metadata.Load() > 0 })
	h.close(t)
	if n := h.metric(t, "originlens_kafka_spool_records"); n != 0 {
		t.Errorf("%v events left in the spool after Close, want 0 (Kafka was reachable)", n)
	}
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
}
