package kafka

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

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

// TestProducerDiskBufferFullDisk: in disk mode with the spool on a full
// file system (a 64 KiB tmpfs) and a healthy broker, the events the spool
// refuses wait in memory and reach Kafka: nothing is dropped, and nothing
// is counted twice.
func TestProducerDiskBufferFullDisk(t *testing.T) {
	dir := tinyTmpfs(t)
	c := startCluster(t, kfake.SeedTopics(3, testTopic))
	addr := c.ListenAddrs()[0]
	// Batches larger than the file system, and a long linger: the spool
	// fills up before the first batch leaves.
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolMaxBytes: 1 << 30, BatchSize: 5000, Linger: time.Second})
	h.run(t)
	waitFor(t, "connected", func() bool { return h.p.state.Load() == stateHealthy })
	const n = 1000 // ~600 KB of events
	ids := publishN(h.p, 0, n)
	if q := h.metric(t, "originlens_kafka_events_queued_total"); q == 0 {
		t.Fatalf("no event was refused by the 64 KiB spool; the test proves nothing")
	}
	waitFor(t, "all acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") >= n })
	h.close(t)
	if d := h.metric(t, "originlens_kafka_events_dropped_total"); d != 0 {
		t.Errorf("dropped_total = %v, want 0", d)
	}
	t.Logf("%v of %d events refused by the full spool and sent from memory", h.metric(t, "originlens_kafka_events_queued_total"), n)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
}

// tinyTmpfs mounts a 64 KiB tmpfs on a temporary directory for the test,
// or skips it when that is not allowed.
func tinyTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): needs CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestDiskBatchWakes: Publish wakes the delivery goroutine in disk mode
// only at the event that can fill a batch (not at every event), so a wake
// lost between batches would hold events back. With a linger of an hour,
// each batch must leave at its BatchSize-th event, batch after batch, and
// a partial one must wait; with a short linger, a partial batch must leave
// after it, and so must a single event published after that (the bound
// the linger set for the next wake must not outlive it).
func TestDiskBatchWakes(t *testing.T) {
	const batch = 50
	c := startCluster(t, kfake.SeedTopics(2, "full", "partial"))
	addr := c.ListenAddrs()[0]
	sent := func(h *harness) float64 { return h.metric(t, "originlens_kafka_events_sent_total") }
	t.Run("FullBatchLeavesWithoutLinger", func(t *testing.T) {
		h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, BatchSize: batch, Linger: time.Hour, Topic: "full"})
		h.run(t)
		waitFor(t, "the first probe", func() bool { return h.p.state.Load() == stateHealthy })
		for round := range 3 {
			publishN(h.p, round*batch, batch-1)
			time.Sleep(50 * time.Millisecond) // a chance to leave early: not a timing assertion
			if got := sent(h); got != float64(round*batch) {
				t.Fatalf("round %d: %v events sent with %d of a batch spooled, want %d", round, got, batch-1, round*batch)
			}
			publishN(h.p, round*batch+batch-1, 1)
			want := float64((round + 1) * batch)
			waitFor(t, fmt.Sprintf("batch %d sent within the linger of an hour", round+1), func() bool { return sent(h) >= want })
		}
		h.close(t)
	})
	t.Run("PartialBatchThenOneEvent", func(t *testing.T) {
		h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, BatchSize: batch, Linger: 100 * time.Millisecond, Topic: "partial"})
		h.run(t)
		waitFor(t, "the first probe", func() bool { return h.p.state.Load() == stateHealthy })
		ids := publishN(h.p, 0, 10)
		waitFor(t, "the partial batch sent after the linger", func() bool { return sent(h) >= 10 })
		ids = append(ids, publishN(h.p, 10, 1)...)
		waitFor(t, "the next single event sent after the linger", func() bool { return sent(h) >= 11 })
		h.close(t)
		checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, "partial")))
	})
}

// TestProducerDiskBufferFullDiskOutage: in disk mode with no broker and
// the spool on a full file system (a 64 KiB tmpfs), the events the spool
// refuses must wait in memory (the queue has room for them) and reach
// Kafka when it appears, not be dropped while the process lives. Before,
// the delivery goroutine took them from the queue, the spool refused them
// again and they were counted lost at once (914 of 1000 with the app
// binary, its broker killed and its spool on a 64 KiB tmpfs).
func TestProducerDiskBufferFullDiskOutage(t *testing.T) {
	dir := tinyTmpfs(t)
	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolMaxBytes: 1 << 30, BatchSize: 200, RetryInterval: 100 * time.Millisecond})
	h.run(t)
	waitFor(t, "degraded", h.p.Degraded)
	const n = 1000 // ~600 KB of events
	ids := publishN(h.p, 0, n)
	if q := h.metric(t, "originlens_kafka_events_queued_total"); q == 0 {
		t.Fatalf("no event was refused by the 64 KiB spool; the test proves nothing")
	}
	// A few retry intervals with the broker still absent.
	time.Sleep(500 * time.Millisecond)
	if d := h.metric(t, "originlens_kafka_events_dropped_total"); d != 0 {
		t.Errorf("dropped_total = %v while the broker is absent and the queue has room, want 0", d)
	}
	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
	waitFor(t, "all acknowledged", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+h.metric(t, "originlens_kafka_events_dropped_total") >= n
	})
	h.close(t)
	if d := h.metric(t, "originlens_kafka_events_dropped_total"); d != 0 {
		t.Errorf("dropped_total = %v, want 0", d)
	}
	checkDelivered(t, ids, checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic)))
}
