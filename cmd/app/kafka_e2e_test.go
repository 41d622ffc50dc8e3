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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/kafka"
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
		return metricValue(body, "originlens_kafka_events_sent_total")+metricValue(body, "originlens_kafka_events_replayed_total") >= m &&
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
		return metricValue(body, "originlens_kafka_events_sent_total")+metricValue(body, "originlens_kafka_events_replayed_total") >= m &&
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

// TestKafkaSIGKILLUnderLoad SIGKILLs the app while clients keep connecting
// and Kafka is healthy, restarts it on the same spool and counts which
// answered connections have their event on the topic.
//
// A connection is "answered" when, before the kill was sent, its client
// read the report line, half-closed, and read EOF (the app closed it). The
// app publishes a connection's event right after closing it, so
// "answered" does not yet mean "written": an event is written when Publish
// returned, which in disk mode means appended to the spool file (counted
// in events_spooled_total). The assertions:
//   - disk: every event counted written before the kill reaches the topic
//     (distinct events >= events_spooled_total scraped before the kill),
//     and an answered connection whose event is missing is one of the last
//     two its client made before the kill (between the app's close and
//     its Publish; two, not one, for scheduling slack on a busy machine);
//   - memory: the loss is reported; it must stay within the stated bound,
//     the queue plus one batch (QueueSize + BatchSize), plus those same
//     in-flight connections. With a 500 ms linger it is roughly the
//     events of the last half second.
func TestKafkaSIGKILLUnderLoad(t *testing.T) {
	for _, mode := range []string{kafka.BufferMemory, kafka.BufferDisk} {
		t.Run(mode, func(t *testing.T) { sigkillUnderLoad(t, mode) })
	}
}

func sigkillUnderLoad(t *testing.T, mode string) {
	const (
		clients  = 4
		maxConns = 5000 // load bound
		killAt   = 600  // answered connections before the kill
	)
	c := kafkaCluster(t, 0)
	addr := c.ListenAddrs()[0]
	args := []string{"--kafka-brokers", addr, "--spool-dir", t.TempDir(), "--kafka-buffer", mode,
		"--kafka-linger", "500ms", "--spool-fsync-interval", "200ms"}
	cmd, listen, admin, _, stderr := startBinary(t, args...)
	waitUntil(t, "kafka connected", func() bool { return strings.Contains(stderr.String(), "kafka connected") })

	var (
		mu       sync.Mutex
		answered []string
		lastTwo  = map[string]bool{} // each client's last two answered
		killed   atomic.Bool
		started  atomic.Int64
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second) // load bound
	for range clients {
		wg.Go(func() {
			var mine []string
			defer func() {
				mu.Lock()
				for _, id := range mine[max(0, len(mine)-2):] {
					lastTwo[id] = true
				}
				mu.Unlock()
			}()
			for started.Add(1) <= maxConns && !killed.Load() && time.Now().Before(deadline) {
				conn, err := net.Dial("tcp", listen)
				if err != nil {
					return // killed
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "hello\n")
				br := bufio.NewReader(conn)
				line, err := br.ReadString('\n')
				conn.(*net.TCPConn).CloseWrite()
				_, err2 := io.ReadAll(br) // until the app closes
				conn.Close()
				_, id, ok := strings.Cut(line, " conn=")
				if err != nil || err2 != nil || !ok {
					continue // cut by the kill
				}
				id, _, _ = strings.Cut(id, " ")
				if !killed.Load() {
					mu.Lock()
					answered = append(answered, id)
					mu.Unlock()
					mine = append(mine, id)
				}
			}
		})
	}
	waitUntil(t, "load answered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answered) >= killAt
	})
	_, body := adminGet(t, admin, "/metrics")
	written := metricValue(body, "originlens_kafka_events_spooled_total")
	killed.Store(true)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	wg.Wait()
	mu.Lock()
	ans := slices.Clone(answered)
	mu.Unlock()

	_, _, admin2, _, _ := startBinary(t, args...)
	waitUntil(t, "the spool delivered", func() bool {
		_, body := adminGet(t, admin2, "/metrics")
		return metricValue(body, "originlens_kafka_spool_records") == 0 && metricValue(body, "originlens_kafka_spool_bytes") == 0
	})
	onTopic := map[string]bool{}
	for _, ev := range kafkaEvents(t, addr) {
		onTopic[ev.Event.ID] = true
	}
	missing, early := 0, 0
	for _, id := range ans {
		if !onTopic[id] {
			missing++
			if !lastTwo[id] {
				early++
			}
		}
	}
	t.Logf("%s: %d connections answered before the SIGKILL, %d of their events missing; %v counted written (spooled) before it; %d distinct events on the topic",
		mode, len(ans), missing, written, len(onTopic))
	switch mode {
	case kafka.BufferDisk:
		if float64(len(onTopic)) < written {
			t.Errorf("%d distinct events on the topic, fewer than the %v written before the kill", len(onTopic), written)
		}
		if early > 0 {
			t.Errorf("%d answered connections lost their event (%d of them before each client's last two): written events were lost", missing, early)
		}
	case kafka.BufferMemory:
		if bound := kafka.DefaultQueueSize + kafka.DefaultBatchSize + clients; missing > bound {
			t.Errorf("%d events lost, more than the stated bound %d", missing, bound)
		}
	}
}

// TestKafkaOutageLogsOnce: the broker dies and stays dead for many probe
// intervals while connections keep coming; the app logs one degrade line
// and no recovery (the probe used to be answered from kafka-go's metadata
// cache: "recovered" every interval), then one recovery line when the
// broker is back on the same port. No log line grows with the number of
// events that failed together (one was 36,735 characters for 462 events).
func TestKafkaOutageLogsOnce(t *testing.T) {
	port := freePort(t)
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := kafkaCluster(t, port)
	_, listen, admin, _, stderr := startBinary(t, "--kafka-brokers", broker, "--spool-dir", t.TempDir(),
		"--kafka-linger", "300ms", "--kafka-retry-interval", "100ms")
	serveLines(t, listen, 20)
	waitUntil(t, "the first events acknowledged", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_sent_total") == 20
	})

	c.Close()
	ports := serveLines(t, listen, 500)
	var errs0 float64
	waitUntil(t, "degraded", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		errs0 = metricValue(body, "originlens_kafka_broker_errors_total")
		return metricValue(body, "originlens_kafka_degraded") == 1
	})
	// Many probe intervals with the broker dead: count failed probes.
	waitUntil(t, "10 failed probes", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_broker_errors_total") >= errs0+10
	})
	if n := strings.Count(stderr.String(), "sink degraded"); n != 1 {
		t.Errorf("%d degrade lines while the broker stays dead, want 1", n)
	}
	if n := strings.Count(stderr.String(), "sink recovered"); n != 0 {
		t.Errorf("%d recovery lines while the broker stays dead, want 0", n)
	}

	c2 := kafkaCluster(t, port)
	waitUntil(t, "recovered and the spool delivered", func() bool {
		_, body := adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_degraded") == 0 && metricValue(body, "originlens_kafka_spool_records") == 0
	})
	logs := stderr.String()
	if n := strings.Count(logs, "sink recovered"); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
	if n := strings.Count(logs, "sink degraded"); n != 1 {
		t.Errorf("%d degrade lines in all, want 1", n)
	}
	for l := range strings.Lines(logs) {
		if len(l) > 2048 {
			t.Errorf("log line of %d bytes, want at most 2048: %.300s...", len(l), l)
		}
	}
	checkEvents(t, kafkaEvents(t, c2.ListenAddrs()[0]), ports)
}
