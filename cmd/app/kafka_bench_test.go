package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/kafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BenchmarkKafkaSinkHeadroom measures, against one in-process broker, the
// app binary's connection rate with the Kafka sink (b.N line-protocol
// connections from 4 clients, until Kafka acknowledged every event) and the
// Kafka sink's own capacity (events pushed straight through a producer),
// and reports both and their ratio: the goal is a ratio of at least
// 5 (the sink is never the bottleneck). It runs once per --kafka-buffer
// mode (memory, disk).
func BenchmarkKafkaSinkHeadroom(b *testing.B) {
	bin, err := buildApp()
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{kafka.BufferMemory, kafka.BufferDisk} {
		b.Run(mode, func(b *testing.B) { sinkHeadroom(b, bin, mode) })
	}
}

func sinkHeadroom(b *testing.B, bin, mode string) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, e2eTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]

	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json", "--kafka-buffer", mode,
		"--kafka-brokers", broker, "--spool-dir", b.TempDir(), "--kafka-linger", "5ms", "--conn-rate-per-ip", "0", "--max-conns-per-ip", "0")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var listen, admin string
	sc := bufio.NewScanner(pipe)
	for listen == "" && sc.Scan() {
		var rec struct{ Msg, Listen, Admin string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
			listen, admin = rec.Listen, rec.Admin
		}
	}
	if listen == "" {
		b.Fatal("no serving log line")
	}
	go io.Copy(io.Discard, pipe)

	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				conn, err := net.Dial("tcp", listen)
				if err != nil {
					b.Error(err)
					return
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "hello\n")
				if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
					b.Error(err)
				}
				conn.Close()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sent := metricValue(string(body), "originlens_kafka_events_sent_total") + metricValue(string(body), "originlens_kafka_events_replayed_total")
		if sent >= float64(b.N) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %v of %d events acknowledged", sent, b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	connRate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()

	sinkRate := sinkCapacity(b, broker, mode, max(b.N, 20000))
	b.ReportMetric(connRate, "conns/s")
	b.ReportMetric(sinkRate, "sink-events/s")
	b.ReportMetric(sinkRate/connRate, "headroom-x")
}

// sinkCapacity pushes n events through a Kafka producer into broker and
// returns events/s from the first Publish to the last acknowledgement.
func sinkCapacity(b *testing.B, broker, mode string, n int) float64 {
	reg := prometheus.NewRegistry()
	p, err := kafka.NewProducer(kafka.ProducerConfig{
		Brokers: []string{broker}, Topic: e2eTopic, SpoolDir: b.TempDir(), Buffer: mode,
		Linger: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { p.Close(context.Background()); cancel(); <-done }()

	evs := make([]event.Event, 1000)
	for i := range evs {
		evs[i] = event.New(time.Now())
		evs[i].Source.IP = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		evs[i].Destination.IP = netip.MustParseAddr("198.51.100.1")
		evs[i].Finish(time.Now())
	}
	acked := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "originlens_kafka_events_sent_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	// Let the producer find the broker before timing.
	p.Publish(evs[0])
	for acked() < 1 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	queued := func() float64 {
		var v float64
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "originlens_kafka_queue_depth" || mf.GetName() == "originlens_kafka_spool_records" {
				v += mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return v
	}
	for i := range n {
		for i%1000 == 0 && queued() > 30000 { // stay on the Kafka path (memory), keep the spool small (disk)
			time.Sleep(100 * time.Microsecond)
		}
		p.Publish(evs[i%len(evs)])
	}
	deadline := time.Now().Add(120 * time.Second)
	for acked() < float64(n+1) {
		if time.Now().After(deadline) {
			b.Fatalf("sink capacity: only %v of %d acknowledged", acked(), n+1)
		}
		time.Sleep(time.Millisecond)
	}
	return float64(n) / time.Since(start).Seconds()
}
