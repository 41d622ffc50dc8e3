package ingest_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/originlens/originlens/internal/ingest"
	"github.com/originlens/originlens/internal/opensearchtest"
)

func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPipeline measures documents per second from the in-process
// Kafka broker (kfake) through the whole pipeline (fetch, parse, bulk body,
// HTTP, per-item results, commit) into the stand-in's bulk endpoint, and
// the process CPU per 1,000 documents. The CPU includes kfake and the
// stand-in, which run in the same process, so it over-states the
// pipeline's own share.
//
//	go test -run '^$' -bench Pipeline -benchtime 200000x ./internal/ingest/
func BenchmarkPipeline(b *testing.B) {
	e := newEnv(b, 6)
	e.srv.SetFast(true)
	n := b.N
	ts := time.Now()
	// Produce the corpus before the clock starts.
	const chunk = 5000
	for i := 0; i < n; i += chunk {
		recs := make([]*kgo.Record, 0, chunk)
		for j := i; j < min(i+chunk, n); j++ {
			recs = append(recs, eventRecord(b, opensearchtest.SampleEvent(j, ts)))
		}
		e.produce(b, recs...)
	}
	r := kafka.NewReader(ingest.ReaderConfig(e.brokers, topic, group, nil, 6*time.Second))
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	p := ingest.New(ingest.Config{FlushInterval: 200 * time.Millisecond}, r, e.os, w, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	b.ResetTimer()
	cpu0, t0 := cpuTime(b), time.Now()
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(10*time.Minute + time.Duration(n)*time.Millisecond)
	for e.srv.Count("*") < n {
		if time.Now().After(deadline) {
			b.Fatalf("indexed %d of %d before the deadline", e.srv.Count("*"), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed, cpu := time.Since(t0), cpuTime(b)-cpu0
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(n)/elapsed.Seconds(), "docs/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/(float64(n)/1000), "cpu-ms/1000docs")
}
