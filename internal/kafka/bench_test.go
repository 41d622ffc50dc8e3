package kafka

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
)

func benchProducer(b *testing.B, addr string, cfg ProducerConfig) (*Producer, *harness) {
	b.Helper()
	h := &harness{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	cfg.Brokers = []string{addr}
	cfg.SpoolDir = b.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Registerer = h.reg
	cfg.RetryInterval = 100 * time.Millisecond
	if cfg.Buffer == "" {
		cfg.Buffer = BufferMemory
	}
	p, err := NewProducer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	h.p = p
	b.Cleanup(func() { p.Close(context.Background()) })
	return p, h
}

// BenchmarkProducerThroughput pushes b.N events through Publish, the
// queue, batching, zstd and a synchronous acks=all write into the
// in-process broker, and reports events/s and bytes/s (event JSON) from the
// first Publish to the last acknowledgement.
func BenchmarkProducerThroughput(b *testing.B) {
	for _, comp := range []string{"zstd", "lz4", "none"} {
		b.Run(comp, func(b *testing.B) {
			c := startCluster(b, kfake.SeedTopics(6, testTopic))
			p, h := benchProducer(b, c.ListenAddrs()[0], ProducerConfig{Compression: comp, BatchSize: 1000, Linger: 5 * time.Millisecond})
			go p.Run(context.Background())
			for p.state.Load() == stateUnknown {
				time.Sleep(time.Millisecond)
			}
			evs := make([]event.Event, 1000)
			var size int
			for i := range evs {
				evs[i] = testEvent(i)
				js, _ := evs[i].Marshal()
				size += len(js)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				// Pace to the sink: measure Kafka delivery, not the
				// spool taking the overflow.
				for len(p.queue) > cap(p.queue)/2 {
					time.Sleep(50 * time.Microsecond)
				}
				p.Publish(evs[i%len(evs)])
			}
			for h.metric(b, "originlens_kafka_events_sent_total") < float64(b.N) {
				time.Sleep(time.Millisecond)
			}
			el := time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el, "events/s")
			b.ReportMetric(float64(b.N)*float64(size)/float64(len(evs))/el, "bytes/s")
			if s := h.metric(b, "originlens_kafka_events_spooled_total"); s != 0 {
				b.Errorf("%v events spooled during the benchmark", s)
			}
		})
	}
}

// BenchmarkBuffer compares the buffer modes end to end against the
// in-process broker: b.N events through Publish to Kafka's acknowledgement
// (lz4, batches of up to 1000, 5 ms linger), reporting events/s from the
// first Publish to the last acknowledgement and allocations per event (all
// goroutines: publishing, batching, the spool, kafka-go). Publishing is
// paced to the sink: at most half a queue (memory) or 64k records (disk)
// wait, so the measure is delivery, not the spool absorbing an overflow.
func BenchmarkBuffer(b *testing.B) {
	for _, mode := range []string{BufferMemory, BufferDisk} {
		b.Run(mode, func(b *testing.B) {
			c := startCluster(b, kfake.SeedTopics(6, testTopic))
			p, h := benchProducer(b, c.ListenAddrs()[0], ProducerConfig{Buffer: mode, Compression: "lz4", BatchSize: 1000, Linger: 5 * time.Millisecond})
			go p.Run(context.Background())
			for p.state.Load() == stateUnknown {
				time.Sleep(time.Millisecond)
			}
			evs := make([]event.Event, 1000)
			for i := range evs {
				evs[i] = compressionEvent(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if i%256 == 0 {
					for len(p.queue) > cap(p.queue)/2 || p.spool.Records() > 64<<10 {
						time.Sleep(50 * time.Microsecond)
					}
				}
				p.Publish(evs[i%len(evs)])
			}
			for h.metric(b, "originlens_kafka_events_sent_total") < float64(b.N) {
				time.Sleep(time.Millisecond)
			}
			el := time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el, "events/s")
			if mode == BufferMemory {
				if s := h.metric(b, "originlens_kafka_events_spooled_total"); s != 0 {
					b.Errorf("%v events spooled during the benchmark", s)
				}
			}
		})
	}
}

// BenchmarkPublish is the cost Publish adds to a connection: "queue" is
// the normal path (an event into the bounded queue, drained concurrently);
// "spool" is the overflow path (queue full: encode and append to the spool
// file in the caller).
func BenchmarkPublish(b *testing.B) {
	ev := testEvent(1)
	b.Run("queue", func(b *testing.B) {
		p, _ := benchProducer(b, "127.0.0.1:1", ProducerConfig{QueueSize: 1 << 16})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // stands in for the delivery goroutine
			defer close(done)
			for {
				select {
				case <-p.queue:
				case <-stop:
					return
				}
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			p.Publish(ev)
		}
		b.StopTimer()
		close(stop)
		<-done
	})
	b.Run("disk", func(b *testing.B) {
		// Disk mode with the broker absent: every Publish appends to the
		// spool file (write(2), no fsync: that is per batch and per
		// FsyncInterval, off the caller's path).
		p, _ := benchProducer(b, "127.0.0.1:1", ProducerConfig{Buffer: BufferDisk, SpoolMaxBytes: 1 << 40})
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			p.Publish(ev)
		}
	})
	b.Run("spool", func(b *testing.B) {
		p, _ := benchProducer(b, "127.0.0.1:1", ProducerConfig{QueueSize: 1, SpoolMaxBytes: 1 << 40})
		p.Publish(ev) // fills the queue
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			p.Publish(ev)
		}
	})
}

// compressionEvent is an event as the app publishes it for a served,
// located line client (varying id, times, client and place).
func compressionEvent(i int) event.Event {
	places := []event.Geo{
		{CountryISOCode: "US", CountryName: "United States", ContinentCode: "NA", CityName: "Chicago", Location: &event.Location{Lat: 41.8781, Lon: -87.6298}, Class: "public"},
		{CountryISOCode: "JP", CountryName: "Japan", ContinentCode: "AS", CityName: "Tokyo", Location: &event.Location{Lat: 35.6895, Lon: 139.6917}, Class: "public"},
		{CountryISOCode: "BR", CountryName: "Brazil", ContinentCode: "SA", CityName: "Curitiba", Location: &event.Location{Lat: -25.4284, Lon: -49.2733}, Class: "public"},
	}
	start := time.Now().Add(time.Duration(i) * 97 * time.Microsecond)
	ev := event.New(start)
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason = event.ActionClosed, event.OutcomeSuccess, "served"
	ev.Source.IP = netip.AddrFrom4([4]byte{192, 0, 2, byte(i * 7)})
	ev.Source.Port, ev.Source.Bytes = uint16(20000+i*13), 41
	ev.Source.Geo = places[i%len(places)]
	ev.Destination.IP, ev.Destination.Port, ev.Destination.Bytes = netip.MustParseAddr("203.0.113.254"), 80, int64(200+i%3)
	ev.Network.Type, ev.Network.Protocol = "ipv4", event.ProtocolLine
	ev.ClientIP = event.ClientIP{Via: event.ViaProxyV2, Peer: event.Peer{IP: netip.MustParseAddr("127.0.0.1"), Port: uint16(30000 + i)}}
	ev.Residency = event.Residency{Decision: "serve", Region: "us-east-2", Rule: "default"}
	ev.App.Lang = "en"
	ev.Finish(start.Add(time.Duration(300+i%500) * time.Microsecond))
	return ev
}

// BenchmarkCompression compresses batches of encoded events with the
// codecs kafka-go uses for --kafka-compression (it compresses a batch's
// records together), and reports the CPU per event and the compressed
// size as a share of the JSON.
func BenchmarkCompression(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		var raw []byte
		for i := range n {
			ev := compressionEvent(i)
			raw = ev.AppendKey(raw)
			var err error
			if raw, err = ev.AppendJSON(raw); err != nil {
				b.Fatal(err)
			}
		}
		for _, name := range []string{"zstd", "lz4"} {
			comp, _ := compressionCodec(name)
			codec := comp.Codec()
			b.Run(fmt.Sprintf("%s/batch=%d", name, n), func(b *testing.B) {
				var out bytes.Buffer
				b.ReportAllocs()
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					out.Reset()
					w := codec.NewWriter(&out)
					if _, err := w.Write(raw); err != nil {
						b.Fatal(err)
					}
					if err := w.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/event")
				b.ReportMetric(float64(out.Len())/float64(len(raw)), "ratio")
			})
		}
	}
}
