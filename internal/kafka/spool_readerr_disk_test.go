package kafka

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/spool"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestProducerDiskReadErrorRefusedEventsGoLive: in disk mode, while the
// producer waits to retry a spool segment it cannot read, events the spool
// refuses (here: the directory was replaced by a symbolic link, so no new
// segment can be made) go to Kafka, which is up, as they do outside that
// wait. Before, the wait tried to spool them again, which the spool
// refused once more: they were dropped as spool_error though Kafka was
// reachable.
func TestProducerDiskReadErrorRefusedEventsGoLive(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, testTopic))
	addr := c.ListenAddrs()[0]
	dir := filepath.Join(t.TempDir(), "spool")
	var fails, reads atomic.Int64
	fails.Store(-1) // every read of every segment fails
	spool.SetReadHook(func(_ string, r io.ReaderAt) io.ReaderAt {
		return failingReaderAt{r: r, fails: &fails, reads: &reads}
	})
	t.Cleanup(func() { spool.SetReadHook(nil) })
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096,
		BatchSize: 50, Linger: 50 * time.Millisecond, RetryInterval: 5 * time.Second})
	h.run(t)
	waitFor(t, "connected", func() bool { return h.p.state.Load() == stateHealthy })
	publishN(h.p, 0, 5)
	waitFor(t, "the failed read", func() bool { return strings.Contains(h.logs.String(), "cannot be read; retrying") })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), dir); err != nil {
		t.Fatal(err)
	}
	const m = 20
	more := publishN(h.p, 5, m)
	waitFor(t, "the refused events handled", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+
			h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error") >= m
	})
	if d := h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error"); d != 0 {
		t.Errorf("dropped{spool_error} = %v while Kafka was up: refused events were spooled again instead of sent", d)
	}
	h.close(t)
	got := checkMessages(t, readTopic(t, addr, testTopic))
	for _, id := range more {
		if got[id] != 1 {
			t.Errorf("event %s arrived %d times, want 1", id, got[id])
		}
	}
}
