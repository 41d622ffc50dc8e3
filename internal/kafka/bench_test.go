package kafka

import (
	"context"
	"io"
	"log/slog"
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
