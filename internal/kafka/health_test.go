package kafka

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// maxLogLine bounds every log line of the producer, whatever number of
// events fails at once.
const maxLogLine = 2048

// TestProducerHealthDoesNotFlap: the broker dies and stays dead for many
// probe intervals while events keep failing. The producer must log exactly
// one degrade line and no recovery (kafka-go answers metadata requests from
// its cache, so a probe through the writer's transport looked healthy
// every other interval), then exactly one recovery line once the broker is
// back on the same port; no log line may grow with the number of events
// that failed together. Both buffer modes.
func TestProducerHealthDoesNotFlap(t *testing.T) {
	for _, mode := range []string{BufferMemory, BufferDisk} {
		t.Run(mode, func(t *testing.T) { healthDoesNotFlap(t, mode) })
	}
}

func healthDoesNotFlap(t *testing.T, mode string) {
	port := reservePort(t)
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, testTopic)}
	c1, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// A long linger and a large batch: the first failing write carries
	// many events, whose errors must not all land in one line.
	h := newHarness(t, addr, ProducerConfig{Buffer: mode, BatchSize: 2000, Linger: 300 * time.Millisecond})
	h.run(t)
	ids := publishN(h.p, 0, 100)
	waitFor(t, "first events acknowledged", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total") == 100 && h.metric(t, "originlens_kafka_spool_records") == 0
	})

	c1.Close()
	ids = append(ids, publishN(h.p, 100, 1000)...)
	waitFor(t, "degraded after the broker died", h.p.Degraded)
	// Stay dead for many probe intervals (RetryInterval is 100 ms): count
	// failed probes instead of sleeping.
	before := h.metric(t, "originlens_kafka_broker_errors_total")
	waitFor(t, "10 failed probes", func() bool {
		ids = append(ids, publishN(h.p, 10000+len(ids), 1)...)
		return h.metric(t, "originlens_kafka_broker_errors_total") >= before+10
	})
	logs := h.logs.String()
	if n := strings.Count(logs, "sink degraded"); n != 1 {
		t.Errorf("%d degrade lines while the broker stays dead, want 1", n)
	}
	if n := strings.Count(logs, "sink recovered"); n != 0 {
		t.Errorf("%d recovery lines while the broker stays dead, want 0:\n%s", n, grepLines(logs, "sink recovered"))
	}
	if !h.p.Degraded() {
		t.Errorf("not degraded while the broker is dead")
	}

	c2, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	waitFor(t, "recovered", func() bool { return !h.p.Degraded() && h.metric(t, "originlens_kafka_spool_records") == 0 })
	h.close(t)
	logs = h.logs.String()
	if n := strings.Count(logs, "sink recovered"); n != 1 {
		t.Errorf("%d recovery lines after the broker came back, want 1:\n%s", n, grepLines(logs, "sink recovered"))
	}
	if n := strings.Count(logs, "sink degraded"); n != 1 {
		t.Errorf("%d degrade lines in all, want 1", n)
	}
	for l := range strings.Lines(logs) {
		if len(l) > maxLogLine {
			t.Errorf("log line of %d bytes, want at most %d: %.300s...", len(l), maxLogLine, l)
		}
	}
	// The first 100 were acknowledged by the first broker, whose data is
	// gone: only the rest can be on the new one.
	checkDelivered(t, ids[100:], checkMessages(t, readTopic(t, addr, testTopic)))
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			b.WriteString(l)
		}
	}
	return b.String()
}
