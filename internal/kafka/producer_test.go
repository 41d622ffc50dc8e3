package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/syncbuf"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// The app's server declares this interface; the producer must satisfy it.
var _ interface{ Publish(event.Event) } = (*Producer)(nil)

const testTopic = "conn-events"

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = syncbuf.Buffer

// testEvent returns event i from one of 50 client addresses in the
// documentation ranges.
func testEvent(i int) event.Event {
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	ev := event.New(start)
	ev.Event.Action = event.ActionClosed
	ev.Event.Outcome = event.OutcomeSuccess
	ev.Source.IP = netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%50)})
	ev.Source.Port = uint16(40000 + i%20000)
	ev.Destination.IP = netip.MustParseAddr("198.51.100.10")
	ev.Destination.Port = 80
	ev.Network.Type = "ipv4"
	ev.Network.Protocol = event.ProtocolLine
	ev.ClientIP = event.ClientIP{Via: event.ViaDirect, Peer: event.Peer{IP: ev.Source.IP, Port: ev.Source.Port}}
	ev.Source.Geo = event.Geo{Class: "documentation"}
	ev.Finish(start.Add(3 * time.Millisecond))
	return ev
}

type harness struct {
	p    *Producer
	reg  *prometheus.Registry
	logs *syncBuffer
	cfg  ProducerConfig
	done chan error
}

// newHarness builds a producer with fast retries and a private registry.
// Unset Brokers default to addr.
func newHarness(t *testing.T, addr string, cfg ProducerConfig) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	if cfg.Brokers == nil {
		cfg.Brokers = []string{addr}
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = t.TempDir()
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 100 * time.Millisecond
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 10 * time.Millisecond
	}
	if cfg.Buffer == "" {
		cfg.Buffer = BufferMemory // the disk mode's tests set it
	}
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Registerer = h.reg
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	h.p, h.cfg = p, cfg
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.p.Close(ctx)
		if t.Failed() {
			t.Logf("producer log:\n%s", h.logs.String())
		}
	})
	return h
}

// run starts Run in a goroutine; Close stops it.
func (h *harness) run(t *testing.T) {
	h.done = make(chan error, 1)
	go func() { h.done <- h.p.Run(context.Background()) }()
}

// close closes the producer and checks Run returned nil.
func (h *harness) close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.p.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if h.done != nil {
		if err := <-h.done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	}
}

// metric returns the value of a counter or gauge in the registry, summing
// over labels unless label values are given (name=value).
func (h *harness) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// waitFor polls cond every 20 ms until it holds or the generous bound
// passes (a failure bound, not a speed goal).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reservePort returns a loopback port nobody listens on (right now).
func reservePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// readTopic reads every message of every partition of topic with kafka-go
// readers (no consumer group, so nothing is committed).
func readTopic(t testing.TB, addr, topic string) []kafkago.Message {
	t.Helper()
	return readTopicWith(t, &kafkago.Dialer{Timeout: 10 * time.Second}, addr, topic)
}

// readTopicWith is readTopic through a given dialer (TLS, SASL).
func readTopicWith(t testing.TB, d *kafkago.Dialer, addr, topic string) []kafkago.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("ReadPartitions(%s): %v", topic, err)
	}
	var out []kafkago.Message
	for _, part := range parts {
		lc, err := d.DialLeader(ctx, "tcp", addr, topic, part.ID)
		if err != nil {
			t.Fatalf("DialLeader: %v", err)
		}
		first, last, err := lc.ReadOffsets()
		lc.Close()
		if err != nil {
			t.Fatalf("ReadOffsets: %v", err)
		}
		if last <= first {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: []string{addr}, Topic: topic, Partition: part.ID, Dialer: d,
			MaxWait: 100 * time.Millisecond, StartOffset: kafkago.FirstOffset,
		})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("reading partition %d: %v", part.ID, err)
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return out
}

// checkMessages parses every message and checks key, header and
// partitioning; it returns how many times each event.id was seen.
func checkMessages(t testing.TB, msgs []kafkago.Message) map[string]int {
	t.Helper()
	ids := map[string]int{}
	partOfKey := map[string]int{}
	for _, m := range msgs {
		ev, err := event.Parse(m.Value)
		if err != nil {
			t.Errorf("partition %d offset %d: event.Parse: %v", m.Partition, m.Offset, err)
			continue
		}
		ids[ev.Event.ID]++
		if string(m.Key) != ev.Source.IP.String() {
			t.Errorf("message key %q, want the client IP %s", m.Key, ev.Source.IP)
		}
		var schema []string
		for _, h := range m.Headers {
			if h.Key == event.HeaderSchemaVersion {
				schema = append(schema, string(h.Value))
			}
		}
		if !slices.Equal(schema, []string{event.SchemaVersion}) {
			t.Errorf("headers %v, want %s=%s once", m.Headers, event.HeaderSchemaVersion, event.SchemaVersion)
		}
		if p, ok := partOfKey[string(m.Key)]; ok && p != m.Partition {
			t.Errorf("key %s in partitions %d and %d, want one", m.Key, p, m.Partition)
		}
		partOfKey[string(m.Key)] = m.Partition
	}
	return ids
}

// checkDelivered checks that every published id arrived; duplicates are
// counted and logged (delivery is at least once).
func checkDelivered(t testing.TB, published []string, ids map[string]int) (dups int) {
	t.Helper()
	missing := 0
	for _, id := range published {
		switch n := ids[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d published events missing from the topic", missing, len(published))
	}
	if extra := len(ids) - (len(published) - missing); extra > 0 {
		t.Errorf("%d unknown event ids on the topic", extra)
	}
	t.Logf("%d events published, %d distinct delivered, %d duplicates", len(published), len(published)-missing, dups)
	return dups
}

func publishN(p *Producer, from, n int) []string {
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		ev := testEvent(i)
		ids = append(ids, ev.Event.ID)
		p.Publish(ev)
	}
	return ids
}

func TestProducerDeliversEveryEvent(t *testing.T) {
	for _, comp := range []string{"zstd", "lz4", "none"} {
		t.Run(comp, func(t *testing.T) {
			c := startCluster(t, kfake.SeedTopics(3, testTopic))
			addr := c.ListenAddrs()[0]
			h := newHarness(t, addr, ProducerConfig{Compression: comp, BatchSize: 100})
			h.run(t)
			const n = 1000
			ids := publishN(h.p, 0, n)
			waitFor(t, "every event acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == n })
			h.close(t)

			got := checkMessages(t, readTopic(t, addr, testTopic))
			if dups := checkDelivered(t, ids, got); dups != 0 {
				t.Errorf("%d duplicates without any failure, want 0", dups)
			}
			if s := h.metric(t, "originlens_kafka_events_spooled_total"); s != 0 {
				t.Errorf("events_spooled_total = %v with a healthy broker, want 0", s)
			}
			if q := h.metric(t, "originlens_kafka_events_queued_total"); q != n {
				t.Errorf("events_queued_total = %v, want %d", q, n)
			}
			if h.p.Degraded() {
				t.Errorf("Degraded() = true with a healthy broker")
			}
		})
	}
}

func TestProducerCloseDrainsQueueToKafka(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(2, testTopic))
	addr := c.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{Linger: time.Hour, BatchSize: 1 << 20})
	h.run(t)
	waitFor(t, "the first probe", func() bool { return h.p.state.Load() == stateHealthy })
	ids := publishN(h.p, 0, 300) // Linger of an hour: only Close can flush them
	h.close(t)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
	if s := h.metric(t, "originlens_kafka_events_spooled_total"); s != 0 {
		t.Errorf("events_spooled_total = %v, want 0: Close should deliver to a healthy broker", s)
	}
	h.p.Publish(testEvent(1))
	if d := h.metric(t, "originlens_kafka_events_dropped_total", "reason=closed"); d != 1 {
		t.Errorf("dropped{closed} = %v after a Publish after Close, want 1", d)
	}
}

// TestProducerOutage: no broker while M events are published; Publish
// must not wait; then the broker appears on the same port and every event
// arrives.
func TestProducerOutage(t *testing.T) {
	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	h := newHarness(t, addr, ProducerConfig{BatchSize: 200})
	h.run(t)

	const m = 3000
	publishDone := make(chan []string)
	go func() { publishDone <- publishN(h.p, 0, m) }()
	var ids []string
	select {
	case ids = <-publishDone:
	case <-time.After(30 * time.Second): // failure bound only
		t.Fatalf("publishing %d events with the broker absent did not return: Publish blocks", m)
	}
	waitFor(t, "degraded", h.p.Degraded)
	waitFor(t, "every event spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == m })
	if b := h.metric(t, "originlens_kafka_spool_bytes"); b <= 0 {
		t.Errorf("spool_bytes = %v during the outage, want > 0", b)
	}
	if !strings.Contains(h.logs.String(), "sink degraded") {
		t.Errorf("no degraded log line")
	}

	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(4, testTopic))
	waitFor(t, "every event replayed", func() bool { return h.metric(t, "originlens_kafka_events_replayed_total") >= m })
	waitFor(t, "recovered", func() bool { return !h.p.Degraded() })
	if !strings.Contains(h.logs.String(), "sink recovered") {
		t.Errorf("no recovered log line")
	}
	waitFor(t, "spool emptied", func() bool { return h.metric(t, "originlens_kafka_spool_records") == 0 })
	h.close(t)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic)))
	if segs, _ := filepath.Glob(filepath.Join(h.cfg.SpoolDir, "*.seg")); len(segs) != 0 {
		t.Errorf("segments left after a full replay: %v", segs)
	}
}

// TestProducerBrokerRestart: the broker goes away mid-stream and comes
// back on the same port with its data (kfake persistence).
func TestProducerBrokerRestart(t *testing.T) {
	port := reservePort(t)
	data := t.TempDir()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, testTopic), kfake.DataDir(data)}
	c1, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := c1.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{BatchSize: 50})
	h.run(t)
	ids := publishN(h.p, 0, 500)
	waitFor(t, "first half acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == 500 })

	c1.Close()
	ids = append(ids, publishN(h.p, 500, 500)...)
	waitFor(t, "degraded after the broker left", h.p.Degraded)
	ids = append(ids, publishN(h.p, 1000, 500)...)

	c2, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	waitFor(t, "recovered", func() bool { return !h.p.Degraded() })
	ids = append(ids, publishN(h.p, 1500, 500)...)
	waitFor(t, "everything acknowledged", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+h.metric(t, "originlens_kafka_events_replayed_total") >= 2000 &&
			h.metric(t, "originlens_kafka_spool_records") == 0
	})
	h.close(t)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
}

func TestProducerTopicMissing(t *testing.T) {
	t.Run("CreateTopic", func(t *testing.T) {
		c := startCluster(t)
		addr := c.ListenAddrs()[0]
		h := newHarness(t, addr, ProducerConfig{CreateTopic: true, Partitions: 5, ReplicationFactor: 1})
		h.run(t)
		ids := publishN(h.p, 0, 200)
		waitFor(t, "acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == 200 })
		h.close(t)
		if ti := c.TopicInfo(testTopic); ti == nil || len(c.PartitionInfos(testTopic)) != 5 {
			t.Errorf("topic %s after --kafka-create-topic: %+v, want 5 partitions", testTopic, ti)
		}
		checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
	})
	t.Run("SpoolUntilCreated", func(t *testing.T) {
		c := startCluster(t)
		addr := c.ListenAddrs()[0]
		h := newHarness(t, addr, ProducerConfig{})
		h.run(t)
		ids := publishN(h.p, 0, 200)
		waitFor(t, "degraded on a missing topic", h.p.Degraded)
		waitFor(t, "spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == 200 })
		if err := c.CreateTopic(testTopic, 2, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "replayed", func() bool { return h.metric(t, "originlens_kafka_events_replayed_total") == 200 })
		h.close(t)
		checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
	})
	t.Run("BadReplicationFactor", func(t *testing.T) {
		c := startCluster(t)
		h := newHarness(t, c.ListenAddrs()[0], ProducerConfig{CreateTopic: true, Partitions: 1, ReplicationFactor: 3})
		h.run(t)
		waitFor(t, "degraded: 3 replicas on 1 broker", h.p.Degraded)
		if !strings.Contains(h.logs.String(), "Replication") && !strings.Contains(h.logs.String(), "replication") {
			t.Errorf("degraded log line does not name the replication factor problem:\n%s", h.logs.String())
		}
	})
}

func TestProducerQueueOverflowGoesToSpool(t *testing.T) {
	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	h := newHarness(t, addr, ProducerConfig{QueueSize: 8, SpoolDir: dir})
	// Run is not started: nothing drains the queue.
	ids := publishN(h.p, 0, 100)
	if q, s := h.metric(t, "originlens_kafka_events_queued_total"), h.metric(t, "originlens_kafka_events_spooled_total"); q != 8 || s != 92 {
		t.Errorf("queued, spooled = %v, %v; want 8, 92", q, s)
	}
	h.close(t) // the 8 queued go to the spool: no broker was ever seen
	if s := h.metric(t, "originlens_kafka_events_spooled_total"); s != 100 {
		t.Errorf("spooled after Close = %v, want 100", s)
	}

	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(1, testTopic))
	h2 := newHarness(t, addr, ProducerConfig{SpoolDir: dir})
	h2.run(t)
	waitFor(t, "replayed", func() bool { return h2.metric(t, "originlens_kafka_events_replayed_total") == 100 })
	h2.close(t)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic)))
}

// TestProducerCorruptSpoolTail: a spool left by a previous run has a
// garbled, truncated last record; a new producer replays the rest and
// logs and counts the bad record.
func TestProducerCorruptSpoolTail(t *testing.T) {
	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	h := newHarness(t, addr, ProducerConfig{SpoolDir: dir})
	h.run(t)
	const n = 120
	ids := publishN(h.p, 0, n)
	waitFor(t, "spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == n })
	h.close(t)

	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no spool segment")
	}
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-40] ^= 0xff // garble the last record's payload
	b = b[:len(b)-7]     // and tear it
	if err := os.WriteFile(last, b, 0o640); err != nil {
		t.Fatal(err)
	}

	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(2, testTopic))
	h2 := newHarness(t, addr, ProducerConfig{SpoolDir: dir})
	h2.run(t)
	waitFor(t, "replayed", func() bool { return h2.metric(t, "originlens_kafka_spool_records") == 0 })
	h2.close(t)
	got := checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic))
	checkDelivered(t, ids[:n-1], got)
	if got[ids[n-1]] != 0 {
		t.Errorf("the garbled last event was delivered")
	}
	if d := h2.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_corrupt"); d != 1 {
		t.Errorf("dropped{spool_corrupt} = %v, want 1", d)
	}
	if !strings.Contains(h2.logs.String(), "torn tail") {
		t.Errorf("no log line for the torn record:\n%s", h2.logs.String())
	}
}

func TestProducerSpoolCap(t *testing.T) {
	port := reservePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	const capBytes = 128 << 10
	h := newHarness(t, addr, ProducerConfig{SpoolMaxBytes: capBytes, SpoolSegmentBytes: 16 << 10})
	h.run(t)
	const n = 2000 // ~1.4 MB of events: ten times the cap
	ids := publishN(h.p, 0, n)
	waitFor(t, "all spooled", func() bool {
		return h.metric(t, "originlens_kafka_events_spooled_total") == n
	})
	dropped := h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_cap")
	if dropped == 0 {
		t.Fatalf("no event counted as dropped at the spool cap")
	}
	if b := h.metric(t, "originlens_kafka_spool_bytes"); b > capBytes {
		t.Errorf("spool_bytes = %v, over the cap %d", b, capBytes)
	}
	if !strings.Contains(h.logs.String(), "spool full") {
		t.Errorf("no log line for the dropped segments")
	}

	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(2, testTopic))
	waitFor(t, "replayed", func() bool { return h.metric(t, "originlens_kafka_spool_records") == 0 && !h.p.Degraded() })
	h.close(t)
	got := checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic))
	kept := int(n - dropped)
	if len(got) != kept {
		t.Errorf("delivered %d, want %d published - %v dropped", len(got), kept, dropped)
	}
	// The oldest were dropped: what arrived is exactly the newest.
	checkDelivered(t, ids[n-kept:], got)
}

func TestNewProducerConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  ProducerConfig
		want error
	}{
		{"NoBrokers", ProducerConfig{}, ErrBadConfig},
		{"EmptyBroker", ProducerConfig{Brokers: []string{""}}, ErrBadConfig},
		{"Compression", ProducerConfig{Brokers: []string{"a:1"}, Compression: "gzip2"}, ErrBadConfig},
		{"NegativeBatch", ProducerConfig{Brokers: []string{"a:1"}, BatchSize: -1}, ErrBadConfig},
		{"NegativeQueue", ProducerConfig{Brokers: []string{"a:1"}, QueueSize: -1}, ErrBadConfig},
		{"ReplicationFactor", ProducerConfig{Brokers: []string{"a:1"}, ReplicationFactor: -2}, ErrBadConfig},
		{"Security", ProducerConfig{Brokers: []string{"a:1"}, Security: Security{SASL: "scram-sha-512"}}, ErrBadSecurity},
		{"CAFileMissing", ProducerConfig{Brokers: []string{"a:1"}, Security: Security{TLS: true, CAFile: filepath.Join(dir, "nope.pem")}}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.SpoolDir = t.TempDir()
			p, err := NewProducer(tt.cfg)
			if !errors.Is(err, tt.want) {
				t.Errorf("NewProducer(%s) = %v, want %v", tt.name, err, tt.want)
			}
			if p != nil {
				p.Close(context.Background())
			}
		})
	}
	t.Run("SpoolLocked", func(t *testing.T) {
		cfg := ProducerConfig{Brokers: []string{"127.0.0.1:1"}, SpoolDir: dir}
		p, err := NewProducer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		if _, err := NewProducer(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second producer on one spool = %v, want the lock error", err)
		}
	})
}

func TestRunTwiceAndAfterClose(t *testing.T) {
	h := newHarness(t, fmt.Sprintf("127.0.0.1:%d", reservePort(t)), ProducerConfig{})
	h.run(t)
	waitFor(t, "first probe", func() bool { return h.p.state.Load() != stateUnknown })
	if err := h.p.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	h.close(t)
	if err := h.p.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

// TestProducerOverTLSAndSCRAM: the whole path (probe, writes, read back)
// against a broker that requires TLS and SCRAM-SHA-512.
func TestProducerOverTLSAndSCRAM(t *testing.T) {
	ca := newTestCA(t, "ca")
	c := startCluster(t, kfake.TLS(ca.serverTLS(t)), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "app", "app-secret"), kfake.SeedTopics(2, testTopic))
	addr := c.ListenAddrs()[0]
	sec := Security{TLS: true, CAFile: ca.pemPath, SASL: SASLSCRAM512, Username: "app", Password: "app-secret"}
	h := newHarness(t, addr, ProducerConfig{Security: sec})
	h.run(t)
	ids := publishN(h.p, 0, 100)
	waitFor(t, "acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == 100 })
	h.close(t)
	d, err := sec.Dialer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, ids, checkMessages(t, readTopicWith(t, d, addr, testTopic)))

	// A wrong password degrades to the spool instead of losing events.
	bad := sec
	bad.Password = "wrong"
	h2 := newHarness(t, addr, ProducerConfig{Security: bad})
	h2.run(t)
	publishN(h2.p, 100, 10)
	waitFor(t, "degraded on bad credentials", h2.p.Degraded)
	waitFor(t, "spooled", func() bool { return h2.metric(t, "originlens_kafka_events_spooled_total") == 10 })
}

// TestProducerDropsUnencodableEvent: an event that cannot be encoded (a
// time after the year 9999; a NaN location no longer fails, it is written
// as source.geo.location_invalid) is dropped at Publish and counted; the
// events around it are delivered.
func TestProducerDropsUnencodableEvent(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(1, testTopic))
	addr := c.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{BatchSize: 10})
	h.run(t)
	bad := testEvent(1)
	bad.Event.End = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := publishN(h.p, 0, 1)
	h.p.Publish(bad)
	ids = append(ids, publishN(h.p, 2, 1)...)
	waitFor(t, "both good events acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == 2 })
	h.close(t)
	checkDelivered(t, ids, checkMessages(t, readTopic(t, addr, testTopic)))
	if d := h.metric(t, "originlens_kafka_events_dropped_total", "reason=encode"); d != 1 {
		t.Errorf("dropped{encode} = %v, want 1", d)
	}
}

// TestQueueSlotSize: the queue holds encoded events, not Event values, so
// that a full-size queue costs little memory until events wait in it.
func TestQueueSlotSize(t *testing.T) {
	if got, evSize := unsafe.Sizeof(queued{}), unsafe.Sizeof(event.Event{}); got > 32 || got*8 > evSize {
		t.Errorf("queue slot = %d bytes (event.Event is %d), want at most 32", got, evSize)
	}
}

// TestEncodeOwnsItsBytes: encoded events keep their bytes while later
// events (larger than the scratch buffer, or smaller) are encoded.
func TestEncodeOwnsItsBytes(t *testing.T) {
	big := testEvent(1)
	big.Source.Geo.CityName = strings.Repeat("Ü", 3000) // > the 2 KiB scratch buffer
	evs := []event.Event{testEvent(0), big, testEvent(2), big, testEvent(3)}
	var qs []queued
	for i := range evs {
		q, err := encode(&evs[i])
		if err != nil {
			t.Fatalf("encode(%d): %v", i, err)
		}
		qs = append(qs, q)
	}
	for i, q := range qs {
		m := q.message()
		want, _ := evs[i].Marshal()
		if !bytes.Equal(m.Value, want) || string(m.Key) != evs[i].Source.IP.String() {
			t.Errorf("event %d: key %q value %.60q...; want key %s value %.60q...", i, m.Key, m.Value, evs[i].Source.IP, want)
		}
	}
}
