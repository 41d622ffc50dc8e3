package main

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// noBrokerConfig is a configuration with args whose one broker is a
// loopback port nothing listens on (returned), probed every 50 ms.
func noBrokerConfig(t *testing.T, args ...string) (Config, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg, err := parseConfig(append([]string{"--kafka-brokers", "127.0.0.1:" + strconv.Itoa(port), "--ui", ""}, args...), noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.kafkaProbeInterval = 50 * time.Millisecond
	return cfg, port
}

// Ensure /readyz is 503 while no broker answers, names the broker (not the
// dead-letter topic) as the cause, turns 200 once a broker starts on that
// port, and is 503 again when it goes away; each change is one log line.
// The old ingest logged "DEAD-LETTER TOPIC NOT CREATED", then "consuming",
// and answered 200 with --kafka-brokers 127.0.0.1:1.
func TestReadyNeedsABroker(t *testing.T) {
	cfg, port := noBrokerConfig(t, "--admin", "127.0.0.1:0", "--flush-interval", "20ms")
	broker := "127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	waitFor(t, "admin listening", 60*time.Second, func() bool { return adminRE.MatchString(logs.String()) })
	readyz := "http://" + adminRE.FindStringSubmatch(logs.String())[1] + "/readyz"
	waitFor(t, "the unreachable log line", 60*time.Second, func() bool { return strings.Contains(logs.String(), "Kafka unreachable") })

	// Many probes later: still not ready, the broker named, one log line.
	for range 20 {
		code, body := get(t, readyz)
		if code != 503 || !strings.Contains(body, "Kafka unreachable") || !strings.Contains(body, broker) {
			t.Fatalf("/readyz with no broker = %d %q; want 503 naming %s", code, body, broker)
		}
		time.Sleep(25 * time.Millisecond)
	}
	metrics := strings.TrimSuffix(readyz, "readyz") + "metrics"
	if _, m := get(t, metrics); !strings.Contains(m, "\ningest_kafka_reachable 0\n") {
		t.Errorf("/metrics lacks ingest_kafka_reachable 0 with no broker")
	}
	out := logs.String()
	if n := strings.Count(out, "Kafka unreachable"); n != 1 {
		t.Errorf("%d unreachable lines for one outage; want 1:\n%s", n, out)
	}
	if line := lineWith(out, "Kafka unreachable"); !strings.Contains(line, broker) || !strings.Contains(line, "level=ERROR") {
		t.Errorf("unreachable line %q; want an error naming %s", line, broker)
	}
	for _, bad := range []string{"DEAD-LETTER", "msg=consuming"} {
		if strings.Contains(out, bad) {
			t.Errorf("log has %q with no broker:\n%s", bad, out)
		}
	}

	// A broker starts on that port: ready, consuming, events committed.
	k := newKafkaOpts(t, kfake.Ports(port), kfake.SeedTopics(1, topic), kfake.SeedTopics(1, dlqTopic))
	k.produceEvents(t, 0, 20, time.Now())
	waitFor(t, "/readyz 200 with the broker up", 60*time.Second, func() bool { code, _ := get(t, readyz); return code == 200 })
	waitFor(t, "offsets committed", 60*time.Second, func() bool { return k.lagZero(t) })
	if _, m := get(t, metrics); !strings.Contains(m, "\ningest_kafka_reachable 1\n") {
		t.Errorf("/metrics lacks ingest_kafka_reachable 1 with the broker up")
	}
	if out := logs.String(); !strings.Contains(out, "Kafka reachable") || !strings.Contains(out, "msg=consuming") || strings.Contains(out, "DEAD-LETTER") {
		t.Errorf("after the broker started, log lacks reachable/consuming or blames the DLQ:\n%s", out)
	}

	// It goes away: not ready again, one more line.
	k.cluster.Close()
	waitFor(t, "/readyz 503 with the broker gone", 60*time.Second, func() bool {
		code, body := get(t, readyz)
		return code == 503 && strings.Contains(body, broker)
	})
	if n := strings.Count(logs.String(), "Kafka unreachable"); n != 2 {
		t.Errorf("%d unreachable lines after two outages; want 2", n)
	}
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("run = %v after cancel; want nil", err)
	}
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// Ensure a stop while no broker has ever answered is clean and prompt:
// run returns nil, and nothing was consumed or created.
func TestStopWithNoBroker(t *testing.T) {
	cfg, _ := noBrokerConfig(t, "--admin", "")
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	waitFor(t, "the unreachable log line", 60*time.Second, func() bool { return strings.Contains(logs.String(), "Kafka unreachable") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run = %v; want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return within 60 s of cancel")
	}
	if out := logs.String(); strings.Contains(out, "msg=consuming") || strings.Contains(out, "DEAD-LETTER") {
		t.Errorf("logs:\n%s", out)
	}
}
