package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

const e2eTopic = "conn-events"

// kafkaCluster starts an in-process Kafka broker (kfake, the real wire
// protocol) on loopback, on port when port is not 0.
func kafkaCluster(t *testing.T, port int) *kfake.Cluster {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, e2eTopic)}
	if port != 0 {
		opts = append(opts, kfake.Ports(port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// kafkaEvents reads every message of the topic with kafka-go readers and
// parses the events, checking key and schema header.
func kafkaEvents(t *testing.T, addr string) []event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := kafkago.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(e2eTopic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	for _, p := range parts {
		lc, err := kafkago.DialLeader(ctx, "tcp", addr, e2eTopic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := lc.ReadOffsets()
		lc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if last <= first {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{addr}, Topic: e2eTopic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("reading partition %d: %v", p.ID, err)
			}
			ev, err := event.Parse(m.Value)
			if err != nil {
				t.Errorf("partition %d offset %d: %v", p.ID, m.Offset, err)
			} else {
				if string(m.Key) != ev.Source.IP.String() {
					t.Errorf("key %q, want the client IP %s", m.Key, ev.Source.IP)
				}
				if len(m.Headers) != 1 || m.Headers[0].Key != event.HeaderSchemaVersion || string(m.Headers[0].Value) != event.SchemaVersion {
					t.Errorf("headers %v, want %s=%s", m.Headers, event.HeaderSchemaVersion, event.SchemaVersion)
				}
				evs = append(evs, ev)
			}
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return evs
}

// serveLines makes n line-protocol connections, each answered with a
// report line, and returns the client ports used.
func serveLines(t *testing.T, addr string, n int) map[uint16]bool {
	t.Helper()
	ports := map[uint16]bool{}
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "hello %d\n", i)
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatalf("connection %d: no report line: %v", i, err)
		}
		ports[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = true
		c.Close()
	}
	return ports
}

// adminGet returns the body of an admin endpoint and its status.
func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns a metric's value from a Prometheus text exposition.
func metricValue(body, series string) float64 {
	for l := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return -1
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // failure bound only
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkEvents checks that the events are exactly the connections made
// from ports, each once by event.id (duplicates are counted and logged:
// delivery is at least once).
func checkEvents(t *testing.T, evs []event.Event, ports map[uint16]bool) {
	t.Helper()
	ids := map[string]int{}
	seenPorts := map[uint16]bool{}
	for _, ev := range evs {
		ids[ev.Event.ID]++
		if ids[ev.Event.ID] > 1 {
			continue
		}
		if !ports[ev.Source.Port] {
			t.Errorf("event %s from port %d: not one of the test's connections", ev.Event.ID, ev.Source.Port)
		}
		seenPorts[ev.Source.Port] = true
		if !ev.Source.IP.Is4() || ev.Source.IP.String() != "127.0.0.1" || ev.Network.Transport != "tcp" ||
			ev.Event.Action == "" || ev.Event.Outcome == "" || ev.Destination.Port == 0 || ev.ClientIP.Via == "" {
			t.Errorf("event %s lacks fields: %+v", ev.Event.ID, ev)
		}
	}
	dups := len(evs) - len(ids)
	if len(seenPorts) != len(ports) {
		t.Errorf("%d of %d connections have an event on the topic", len(seenPorts), len(ports))
	}
	t.Logf("%d connections, %d events on the topic, %d distinct, %d duplicates", len(ports), len(evs), len(ids), dups)
}

// TestKafkaEndToEnd: N connections through the app binary produce exactly
// N events on the topic.
func TestKafkaEndToEnd(t *testing.T) {
	c := kafkaCluster(t, 0)
	addr := c.ListenAddrs()[0]
	cmd, listen, admin, _, stderr := startBinary(t, "--kafka-brokers", addr, "--spool-dir", t.TempDir(), "--kafka-linger", "10ms")
	const n = 40
	ports := serveLines(t, listen, n)
	waitUntil(t, "events acknowledged", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_sent_total") == n
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("app exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	evs := kafkaEvents(t, addr)
	if len(evs) != n {
		t.Errorf("%d events on the topic, want exactly %d", len(evs), n)
	}
	checkEvents(t, evs, ports)
}

// TestKafkaCrashDuringOutage: the broker is absent; the app serves
// connections, then is SIGKILLed after more than the fsync interval, and
// restarted with the same spool and the broker present: every event served
// before the kill reaches the topic.
func TestKafkaCrashDuringOutage(t *testing.T) {
	port := freePort(t)
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	spool := t.TempDir()
	args := []string{"--kafka-brokers", broker, "--spool-dir", spool, "--spool-fsync-interval", "200ms", "--kafka-linger", "10ms"}

	cmd, listen, admin, _, stderr := startBinary(t, args...)
	const m = 30
	start := time.Now()
	ports := serveLines(t, listen, m)
	t.Logf("%d connections served with the broker absent in %s", m, time.Since(start))
	if code, body := adminGet(t, admin, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during the outage = %d %q, want 200: the spool absorbs it", code, body)
	}
	// Every event must be in the spool before the kill: wait for the
	// count (a busy machine may take a while), then for a sync.
	var body string
	waitUntil(t, "every event spooled during the outage", func() bool {
		_, body = adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_spooled_total") >= m
	})
	time.Sleep(3 * 200 * time.Millisecond) // more than the fsync interval
	if v := metricValue(body, "originlens_kafka_degraded"); v != 1 {
		t.Errorf("originlens_kafka_degraded = %v during the outage, want 1", v)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if !strings.Contains(stderr.String(), "sink degraded") {
		t.Errorf("no degraded log line:\n%s", stderr.String())
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	if len(segs) == 0 {
		t.Fatalf("no spool segment after the kill")
	}

	c := kafkaCluster(t, port)
	_, _, admin2, _, stderr2 := startBinary(t, args...)
	waitUntil(t, "the spool replayed", func() bool {
		_, body := adminGet(t, admin2, "/metrics")
		return metricValue(body, "originlens_kafka_events_replayed_total") >= m &&
			metricValue(body, "originlens_kafka_spool_records") == 0
	})
	if !strings.Contains(stderr2.String(), "previous run") {
		t.Errorf("the restarted app did not log the leftover spool:\n%s", stderr2.String())
	}
	checkEvents(t, kafkaEvents(t, c.ListenAddrs()[0]), ports)
}

// TestKafkaCorruptSpoolTail: the app is stopped during an outage, the last
// spooled record is garbled and torn; the app restarts with the broker,
// replays the rest and reports the bad record.
func TestKafkaCorruptSpoolTail(t *testing.T) {
	port := freePort(t)
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	spool := t.TempDir()
	args := []string{"--kafka-brokers", broker, "--spool-dir", spool, "--kafka-linger", "10ms"}

	cmd, listen, _, _, stderr := startBinary(t, args...)
	const m = 10
	serveLines(t, listen, m)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("app exit: %v\n%s", err, stderr.String())
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no spool segment")
	}
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-20] ^= 0xff
	if err := os.WriteFile(last, b[:len(b)-5], 0o640); err != nil {
		t.Fatal(err)
	}

	c := kafkaCluster(t, port)
	_, _, admin2, _, stderr2 := startBinary(t, args...)
	waitUntil(t, "the spool replayed", func() bool {
		_, body := adminGet(t, admin2, "/metrics")
		return metricValue(body, "originlens_kafka_spool_records") == 0 &&
			metricValue(body, `originlens_kafka_events_dropped_total{reason="spool_corrupt"}`) == 1
	})
	if !strings.Contains(stderr2.String(), "torn tail") {
		t.Errorf("the bad record is not reported in the log:\n%s", stderr2.String())
	}
	if evs := kafkaEvents(t, c.ListenAddrs()[0]); len(evs) != m-1 {
		t.Errorf("%d events replayed, want the %d before the bad one", len(evs), m-1)
	}
}

// TestKafkaOutageThenBroker: the broker is absent while M connections are
// served (each answered without waiting for Kafka), then it appears: every
// event arrives without restarting the app.
func TestKafkaOutageThenBroker(t *testing.T) {
	port := freePort(t)
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	_, listen, admin, _, stderr := startBinary(t, "--kafka-brokers", broker, "--spool-dir", t.TempDir(), "--kafka-linger", "10ms")
	const m = 50
	start := time.Now()
	ports := serveLines(t, listen, m)
	t.Logf("%d connections served with the broker absent in %s (%s each)", m, time.Since(start), time.Since(start)/m)
	waitUntil(t, "events spooled", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_spooled_total") == m
	})
	if code, _ := adminGet(t, admin, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during the outage = %d, want 200", code)
	}

	c := kafkaCluster(t, port)
	waitUntil(t, "the spool replayed", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_replayed_total") >= m &&
			metricValue(body, "originlens_kafka_spool_records") == 0 &&
			metricValue(body, "originlens_kafka_degraded") == 0
	})
	if !strings.Contains(stderr.String(), "sink recovered") {
		t.Errorf("no recovered log line:\n%s", stderr.String())
	}
	checkEvents(t, kafkaEvents(t, c.ListenAddrs()[0]), ports)
}

// TestKafkaCreateTopic: with --kafka-create-topic the app creates the
// missing topic with the given partitions and delivers to it.
func TestKafkaCreateTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	_, listen, admin, _, _ := startBinary(t, "--kafka-brokers", addr, "--spool-dir", t.TempDir(), "--kafka-linger", "10ms",
		"--kafka-create-topic", "--kafka-partitions", "4", "--kafka-replication-factor", "1")
	const n = 10
	ports := serveLines(t, listen, n)
	waitUntil(t, "events acknowledged", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_sent_total")+metricValue(body, "originlens_kafka_events_replayed_total") == n
	})
	if parts := c.PartitionInfos(e2eTopic); len(parts) != 4 {
		t.Errorf("created topic has %d partitions, want 4", len(parts))
	}
	checkEvents(t, kafkaEvents(t, addr), ports)
}
