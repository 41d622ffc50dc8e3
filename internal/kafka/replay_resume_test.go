package kafka

import (
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/originlens/originlens/internal/spool"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Ensure a replay batch that fails after skipping an undecodable record
// resumes at the first record Kafka did not acknowledge, not past it: the
// records before the bad one in the failed batch must still be delivered.
func TestProducerReplayResumeAfterSkippedRecord(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var payloads [][]byte
	for i := range 4 {
		ev := testEvent(i)
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.Event.ID)
		payloads = append(payloads, appendMessage(nil, &kafkago.Message{Key: ev.Key(), Value: v, Headers: schemaHeaders}))
		if i == 1 {
			// A record whose checksum holds but that is not a message.
			payloads = append(payloads, []byte{recordVersion + 98, 'x'})
		}
	}
	if n, err := sp.Append(payloads...); err != nil || n != len(payloads) {
		t.Fatalf("Append = %d, %v", n, err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(2, testTopic))
	var failing atomic.Bool
	var failed atomic.Int64
	failing.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if failing.Load() {
			failed.Add(1)
			return nil, errors.New("injected produce failure"), true
		}
		return nil, nil, false
	})

	h := newHarness(t, addr, ProducerConfig{SpoolDir: dir})
	h.run(t)
	// The first replay batch (all five records) fails after the bad record
	// was skipped; then the broker heals.
	waitFor(t, "a failed replay", func() bool {
		return failed.Load() > 0 && h.metric(t, "originlens_kafka_degraded") == 1
	})
	failing.Store(false)
	waitFor(t, "replayed", func() bool { return h.metric(t, "originlens_kafka_spool_records") == 0 })
	h.close(t)

	got := checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic))
	checkDelivered(t, ids, got)
	if d := h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_corrupt"); d != 1 {
		t.Errorf("dropped{spool_corrupt} = %v, want 1 (the bad record counted once, however often its batch is retried)", d)
	}
}
