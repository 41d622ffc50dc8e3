package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/ingest"
	"github.com/originlens/originlens/internal/opensearch"
	"github.com/originlens/originlens/internal/opensearchtest"
)

const (
	topic    = "conn-events"
	dlqTopic = "conn-events-dlq"
	group    = "originlens-ingest-test"
)

type env struct {
	brokers []string
	srv     *opensearchtest.Server
	os      *opensearch.Client
	prod    *kgo.Client
}

func newEnv(t testing.TB, partitions int32) *env {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic), kfake.SeedTopics(1, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	srv := opensearchtest.NewServer()
	t.Cleanup(srv.Close)
	osc, err := opensearch.New(context.Background(), opensearch.Config{URLs: []string{srv.URL}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { osc.Close() })
	if err := osc.Setup(context.Background(), opensearch.SetupConfig{IndexPrefix: "conn-events-", TemplateName: "conn-events", PolicyID: "conn-events-retention", Retention: "30d", Template: opensearchassets.IndexTemplate, Policy: opensearchassets.ISMPolicy}); err != nil {
		t.Fatal(err)
	}
	return &env{brokers: c.ListenAddrs(), srv: srv, os: osc, prod: prod}
}

func (e *env) produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	if err := e.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func eventRecord(t testing.TB, ev event.Event) *kgo.Record {
	t.Helper()
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Key: ev.Key(), Value: b, Headers: []kgo.RecordHeader{{Key: event.HeaderSchemaVersion, Value: []byte(event.SchemaVersion)}}}
}

func (e *env) reader() *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.brokers, GroupID: group, Topic: topic,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 50 * time.Millisecond,
		StartOffset: kafka.FirstOffset, CommitInterval: 0,
		HeartbeatInterval: 250 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
	})
}

func (e *env) dlqWriter() *kafka.Writer {
	return &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: dlqTopic, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
}

// committed returns the group's committed offsets by partition.
func (e *env) committed(t testing.TB) map[int]int64 {
	t.Helper()
	var parts []int
	for p := range e.endOffsets(t) {
		parts = append(parts, p)
	}
	cl := &kafka.Client{Addr: kafka.TCP(e.brokers...)}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// waitCommittedToEnd waits until the group's committed offsets reach the
// topic's high watermarks, as they are when it is called.
func (e *env) waitCommittedToEnd(t testing.TB) {
	t.Helper()
	end := e.endOffsets(t)
	waitFor(t, "offsets committed to the end", 60*time.Second, func() bool {
		c := e.committed(t)
		for part, off := range end {
			if c[part] != off {
				return false
			}
		}
		return true
	})
}

// endOffsets returns the topic's high watermarks by partition.
func (e *env) endOffsets(t testing.TB) map[int]int64 {
	t.Helper()
	conn, err := kafka.Dial("tcp", e.brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range parts {
		pc, err := kafka.DialLeader(context.Background(), "tcp", e.brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := pc.ReadLastOffset()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[p.ID] = last
	}
	return out
}

// readDLQ reads n records from the DLQ topic.
func (e *env) readDLQ(t testing.TB, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(dlqTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d DLQ records, want %d", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type countingSink struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *countingSink) Add(ev *event.Event) {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[ev.Event.ID]++
	s.mu.Unlock()
}

func (s *countingSink) len() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.n) }

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// TestPipeline streams valid events (some produced twice), poison messages
// and a document OpenSearch rejects, through faults (503s, 429s), and checks
// that every event is indexed once, every bad message is in the DLQ with
// its error and original bytes, and the offsets are committed to the end.
func TestPipeline(t *testing.T) {
	e := newEnv(t, 3)
	e.srv.FailRequests(2)
	e.srv.SetRejectRate(0.2)

	const n = 1500
	ts := time.Date(2026, 11, 27, 23, 59, 59, 0, time.UTC)
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		// two UTC days, to check the index choice
		recs = append(recs, eventRecord(t, opensearchtest.SampleEvent(i, ts.Add(time.Duration(i%2)*time.Second))))
	}
	for i := 0; i < 100; i++ { // redeliveries of the same events
		recs = append(recs, eventRecord(t, opensearchtest.SampleEvent(i, ts.Add(time.Duration(i%2)*time.Second))))
	}
	bad := opensearchtest.SampleEvent(n+1, ts)
	bad.Source.Geo.Location = &event.Location{Lat: 123, Lon: 0} // parses, but not a geo_point
	badRec := eventRecord(t, bad)
	// AppendJSON drops a location that is not a place: write it with
	// encoding/json, as a producer without that check would.
	var err error
	if badRec.Value, err = json.Marshal(&bad); err != nil {
		t.Fatal(err)
	}
	poison := [][]byte{
		[]byte(`{"not":"json"`),
		[]byte(`{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":""}}`),
		[]byte(`{"event":{"id":"x"}}`),
		[]byte(`{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"y"},"unknown":1}`),
	}
	e.produce(t, recs[:700]...)
	for _, p := range poison {
		e.produce(t, &kgo.Record{Key: []byte("k"), Value: p})
	}
	e.produce(t, badRec)
	e.produce(t, recs[700:]...)

	r := e.reader()
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	sink := &countingSink{}
	m := ingest.NewMetrics(nil)
	p := ingest.New(ingest.Config{BulkBytes: 64 << 10, FlushInterval: 50 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: testLogger(t), Metrics: m}, r, e.os, w, sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor(t, "every event indexed", 60*time.Second, func() bool { return e.srv.Count("conn-events-*") >= n })
	dlq := e.readDLQ(t, len(poison)+1)
	e.waitCommittedToEnd(t)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}

	if got := e.srv.Count("conn-events-*"); got != n {
		t.Errorf("documents = %d, want %d", got, n)
	}
	for id, c := range e.srv.IDs("conn-events-*") {
		if c != 1 {
			t.Errorf("_id %s stored %d times", id, c)
		}
	}
	if idx := e.srv.Indices(); len(idx) != 2 || idx[0] != "conn-events-2026.11.27" || idx[1] != "conn-events-2026.11.28" {
		t.Errorf("indices = %v, want the two UTC days of the events", idx)
	}
	if _, rejected := e.srv.Stats(); rejected == 0 {
		t.Error("the stand-in rejected no item: the 429 path was not exercised")
	}
	if got := sink.len(); got != n {
		t.Errorf("sink saw %d distinct events, want %d", got, n)
	}
	if len(dlq) != len(poison)+1 {
		t.Fatalf("DLQ holds %d records, want %d", len(dlq), len(poison)+1)
	}
	want := map[string]bool{string(badRec.Value): true}
	for _, p := range poison {
		want[string(p)] = true
	}
	for _, rec := range dlq {
		if !want[string(rec.Value)] {
			t.Errorf("unexpected DLQ record %q", rec.Value)
		}
		delete(want, string(rec.Value))
		hdr := map[string]string{}
		for _, h := range rec.Headers {
			hdr[h.Key] = string(h.Value)
		}
		if hdr[ingest.HeaderError] == "" || hdr[ingest.HeaderTopic] != topic || hdr[ingest.HeaderOffset] == "" {
			t.Errorf("DLQ record %q headers = %v, want error and source", rec.Value, hdr)
		}
		if string(rec.Value) == string(badRec.Value) && !contains(hdr[ingest.HeaderError], "mapper_parsing_exception") {
			t.Errorf("mapping-rejected record error = %q", hdr[ingest.HeaderError])
		}
		// An unknown field passes the ingest's cheap decode; the strict
		// template refuses it.
		if string(rec.Value) == string(poison[3]) && !contains(hdr[ingest.HeaderError], "strict_dynamic_mapping_exception") {
			t.Errorf("unknown-field record error = %q, want the strict mapping's refusal", hdr[ingest.HeaderError])
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestFloodStage blocks writes: nothing is indexed or committed, the
// pipeline reports itself blocked; lifting the block delivers everything.
func TestFloodStage(t *testing.T) {
	for _, status := range []int{403, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t, 1)
			e.srv.SetWriteBlock(status)
			const n = 200
			for i := 0; i < n; i++ {
				e.produce(t, eventRecord(t, opensearchtest.SampleEvent(i, time.Now())))
			}
			r := e.reader()
			defer r.Close()
			w := e.dlqWriter()
			defer w.Close()
			p := ingest.New(ingest.Config{FlushInterval: 20 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: testLogger(t)}, r, e.os, w, nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			waitFor(t, "the pipeline to report the block", 60*time.Second, p.Blocked)
			time.Sleep(200 * time.Millisecond) // several retries under the block
			if p.Ready() {
				t.Error("Ready() = true under a write block")
			}
			if c := e.srv.Count("*"); c != 0 {
				t.Errorf("documents under the block = %d", c)
			}
			if c := e.committed(t); c[0] > 0 {
				t.Errorf("committed offset under the block = %d, want none", c[0])
			}
			e.srv.SetWriteBlock(0)
			waitFor(t, "delivery after the block is lifted", 60*time.Second, func() bool { return e.srv.Count("*") == n })
			waitFor(t, "ready again", 60*time.Second, p.Ready)
			waitFor(t, "commit to the end", 60*time.Second, func() bool { return e.committed(t)[0] == n })
			cancel()
			<-done
		})
	}
}

// TestShutdownAbandonsUnacknowledged stops the pipeline while OpenSearch is
// too slow to answer within the grace: nothing is committed past what was
// acknowledged, and a restart delivers the rest without duplicates.
func TestShutdownAbandonsUnacknowledged(t *testing.T) {
	e := newEnv(t, 1)
	const n = 300
	for i := 0; i < n; i++ {
		e.produce(t, eventRecord(t, opensearchtest.SampleEvent(i, time.Now())))
	}
	e.srv.SetDelay(2 * time.Second)
	r := e.reader()
	w := e.dlqWriter()
	defer w.Close()
	p := ingest.New(ingest.Config{FlushInterval: 10 * time.Millisecond, ShutdownGrace: 100 * time.Millisecond, Logger: testLogger(t)}, r, e.os, w, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.Close()
	time.Sleep(2 * time.Second) // the abandoned requests may still land in the stand-in
	indexed := e.srv.Count("*")
	if c := e.committed(t)[0]; c > int64(indexed) {
		t.Errorf("committed offset %d > documents indexed %d", c, indexed)
	}

	e.srv.SetDelay(0)
	r2 := e.reader()
	defer r2.Close()
	p2 := ingest.New(ingest.Config{FlushInterval: 10 * time.Millisecond, Logger: testLogger(t)}, r2, e.os, w, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- p2.Run(ctx2) }()
	waitFor(t, "the rest after restart", 60*time.Second, func() bool { return e.srv.Count("*") == n })
	waitFor(t, "commit to the end", 60*time.Second, func() bool { return e.committed(t)[0] == n })
	cancel2()
	<-done2
	for id, c := range e.srv.IDs("*") {
		if c != 1 {
			t.Errorf("_id %s stored %d times", id, c)
		}
	}
}

// TestBackpressure: while OpenSearch is slow, the pipeline fetches no more
// than its in-flight byte budget; Kafka keeps the rest.
func TestBackpressure(t *testing.T) {
	e := newEnv(t, 1)
	const n = 400
	for i := 0; i < n; i++ {
		e.produce(t, eventRecord(t, opensearchtest.SampleEvent(i, time.Now())))
	}
	e.srv.SetDelay(400 * time.Millisecond)
	r := e.reader()
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	m := ingest.NewMetrics(nil)
	const budget = 24 << 10
	p := ingest.New(ingest.Config{BulkBytes: 8 << 10, MaxInFlightBytes: budget, FlushInterval: 10 * time.Millisecond, Logger: testLogger(t), Metrics: m}, r, e.os, w, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	maxInFlight, maxAhead := 0.0, 0.0
	deadline := time.Now().Add(60 * time.Second)
	for e.srv.Count("*") < n && time.Now().Before(deadline) {
		inflight := value(m.InFlightBytes)
		ahead := value(m.Fetched) - float64(e.srv.Count("*"))
		maxInFlight, maxAhead = max(maxInFlight, inflight), max(maxAhead, ahead)
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if got := e.srv.Count("*"); got != n {
		t.Fatalf("indexed %d of %d", got, n)
	}
	if maxInFlight > budget {
		t.Errorf("in-flight bytes reached %v, budget %d", maxInFlight, budget)
	}
	// each message weighs its size plus 256 bytes: the budget holds at most
	// budget/256 of them, plus the one the fetcher waits with.
	if maxAhead > budget/256+1 {
		t.Errorf("fetched up to %v messages ahead of OpenSearch, want at most %d", maxAhead, budget/256+1)
	}
	t.Logf("max in-flight bytes %v (budget %d), max messages fetched ahead %v", maxInFlight, budget, maxAhead)
}

func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestTooLarge: a cluster with a smaller http.max_content_length than
// --bulk-bytes answers 413; the pipeline splits the request and delivers.
func TestTooLarge(t *testing.T) {
	e := newEnv(t, 1)
	e.srv.SetMaxContentLength(10 << 10)
	const n = 120
	for i := 0; i < n; i++ {
		e.produce(t, eventRecord(t, opensearchtest.SampleEvent(i, time.Now())))
	}
	r := e.reader()
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	p := ingest.New(ingest.Config{BulkBytes: 256 << 10, FlushInterval: 50 * time.Millisecond, Logger: testLogger(t)}, r, e.os, w, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "every event indexed in split requests", 60*time.Second, func() bool { return e.srv.Count("*") == n })
	waitFor(t, "commit to the end", 60*time.Second, func() bool { return e.committed(t)[0] == n })
	cancel()
	<-done
}

// TestRebalance scales the group out and back in while events stream: the
// partitions move between consumers, and the index still ends with each
// event exactly once.
func TestRebalance(t *testing.T) {
	e := newEnv(t, 4)
	e.srv.SetRejectRate(0.1)
	const n = 3000
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 50 {
			var recs []*kgo.Record
			for j := i; j < min(i+50, n); j++ {
				recs = append(recs, eventRecord(t, opensearchtest.SampleEvent(j, time.Now())))
			}
			if err := e.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	w := e.dlqWriter()
	defer w.Close()
	start := func() (context.CancelFunc, chan error, *kafka.Reader) {
		r := e.reader()
		p := ingest.New(ingest.Config{BulkBytes: 32 << 10, FlushInterval: 20 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: testLogger(t)}, r, e.os, w, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return cancel, done, r
	}
	stop := func(cancel context.CancelFunc, done chan error, r *kafka.Reader) {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		r.Close() // leaves the group: the other member takes over
	}
	c1, d1, r1 := start()
	waitFor(t, "a first part indexed", 60*time.Second, func() bool { return e.srv.Count("*") >= n/4 })
	c2, d2, r2 := start() // scale out: partitions are split
	waitFor(t, "a second part indexed", 60*time.Second, func() bool { return e.srv.Count("*") >= n/2 })
	stop(c1, d1, r1) // scale in: the second takes everything
	<-produced
	waitFor(t, "every event indexed", 60*time.Second, func() bool { return e.srv.Count("*") == n })
	e.waitCommittedToEnd(t)
	stop(c2, d2, r2)
	ids := e.srv.IDs("*")
	if len(ids) != n {
		t.Errorf("distinct _ids = %d, want %d", len(ids), n)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("_id %s stored %d times", id, c)
		}
	}
	t.Logf("redelivered creates answered 409: %d", e.srv.Conflicts())
}

// TestPipelineWithoutOpenSearch runs without an indexer: every valid event
// reaches the sink once, a poison message reaches the DLQ, nothing is sent
// to OpenSearch, and the offsets are committed to the end.
func TestPipelineWithoutOpenSearch(t *testing.T) {
	e := newEnv(t, 2)
	const n = 300
	for i := 0; i < n; i++ {
		e.produce(t, eventRecord(t, opensearchtest.SampleEvent(i, time.Now())))
	}
	e.produce(t, &kgo.Record{Value: []byte(`{"event":{"id":"no-timestamp"}}`)})
	r := e.reader()
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	sink := &countingSink{}
	p := ingest.New(ingest.Config{FlushInterval: 20 * time.Millisecond, Logger: testLogger(t)}, r, nil, w, sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "every event in the sink", 60*time.Second, func() bool { return sink.len() == n })
	dlq := e.readDLQ(t, 1)
	e.waitCommittedToEnd(t)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if string(dlq[0].Value) != `{"event":{"id":"no-timestamp"}}` {
		t.Errorf("DLQ record = %q", dlq[0].Value)
	}
	if reqs, _ := e.srv.Stats(); reqs != 0 || e.srv.Count("*") != 0 {
		t.Errorf("bulk requests = %d, documents = %d; want none without an indexer", reqs, e.srv.Count("*"))
	}
	if got := sink.len(); got != n {
		t.Errorf("sink saw %d events, want %d", got, n)
	}
}
