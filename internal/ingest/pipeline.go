// Package ingest moves connection events from Kafka into OpenSearch without
// losing or doubling any: it fetches (never auto-commits), bulk-indexes with
// op create and _id = event.id into the daily index of the event's own
// @timestamp, retries failed items one by one with capped jittered backoff,
// dead-letters what OpenSearch can never accept, and commits per partition
// only the highest offset below which every message is indexed or
// dead-lettered.
//
// Backpressure: fetched but unacknowledged bytes are bounded; when
// OpenSearch slows down or refuses, fetching stops and Kafka is the buffer.
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/opensearch"
)

// Source is the consumer side of Kafka: *kafka.Reader with a GroupID.
type Source interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Indexer sends bulk requests: *opensearch.Client.
type Indexer interface {
	Bulk(ctx context.Context, body []byte) (opensearch.BulkResponse, error)
}

// DeadLetters writes to the dead-letter topic: *kafka.Writer with its Topic
// set and synchronous writes (it must return only once the broker acked).
type DeadLetters interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Sink receives every event once OpenSearch accepted it (the live heat
// map). Add must not block.
type Sink interface {
	Add(ev *event.Event)
}

// DLQ headers: the error, and where the message came from.
const (
	HeaderError     = "error"
	HeaderTopic     = "source-topic"
	HeaderPartition = "source-partition"
	HeaderOffset    = "source-offset"
)

// Config tunes the pipeline. Zero values take the defaults in brackets.
type Config struct {
	IndexPrefix      string        // ["conn-events-"]
	BulkBytes        int           // flush when a bulk body reaches this [5 MiB]
	BulkDocs         int           // or this many documents [20000]
	FlushInterval    time.Duration // or when the oldest document waited this long [1s]
	Workers          int           // concurrent bulk requests [2]
	ParseWorkers     int           // goroutines decoding events [GOMAXPROCS]
	MaxInFlightBytes int64         // fetched, unacknowledged bytes [4 × BulkBytes]
	BackoffMin       time.Duration // first retry delay [100ms]
	BackoffMax       time.Duration // retry delay cap [30s]
	ShutdownGrace    time.Duration // time the in-flight bulks get after ctx ends [10s]
	Logger           *slog.Logger
	Metrics          *Metrics
}

func (c *Config) defaults() {
	if c.IndexPrefix == "" {
		c.IndexPrefix = "conn-events-"
	}
	if c.BulkBytes <= 0 {
		c.BulkBytes = 5 << 20
	}
	if c.BulkDocs <= 0 {
		c.BulkDocs = 20000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.ParseWorkers <= 0 {
		c.ParseWorkers = runtime.GOMAXPROCS(0)
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = 4 * int64(c.BulkBytes)
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Pipeline is one consumer. Run it once.
type Pipeline struct {
	cfg     Config
	src     Source
	idx     Indexer
	dlq     DeadLetters
	sink    Sink
	log     *slog.Logger
	m       *Metrics
	tracker *tracker
	sem     *semaphore.Weighted

	running atomic.Bool
	blocked atomic.Int32 // workers currently seeing a write block

	// bufs recycles bulk bodies whose requests all completed (never one a
	// failed or abandoned request might still be reading).
	bufs sync.Pool

	commitMu      sync.Mutex
	commitPending map[partKey]kafka.Message
	commitNotify  chan struct{}
}

// New builds a pipeline. sink may be nil. idx may be nil: then nothing is
// indexed, and a valid message is done (its offset committable) once sink
// has it; invalid messages still go to the dead-letter topic.
func New(cfg Config, src Source, idx Indexer, dlq DeadLetters, sink Sink) *Pipeline {
	cfg.defaults()
	return &Pipeline{
		cfg: cfg, src: src, idx: idx, dlq: dlq, sink: sink,
		log: cfg.Logger, m: cfg.Metrics,
		tracker:       newTracker(),
		sem:           semaphore.NewWeighted(cfg.MaxInFlightBytes),
		commitPending: map[partKey]kafka.Message{},
		commitNotify:  make(chan struct{}, 1),
	}
}

// Ready reports whether the pipeline runs and OpenSearch accepts writes.
// It is safe for concurrent use.
func (p *Pipeline) Ready() bool { return p.running.Load() && p.blocked.Load() == 0 }

// Blocked reports whether OpenSearch currently refuses writes.
func (p *Pipeline) Blocked() bool { return p.blocked.Load() > 0 }

type item struct {
	msg        kafka.Message
	ev         *event.Head // nil: invalid, dead-letter with err
	err        error
	start, end int // this document's action and source lines in batch.buf
	ent        *entry
	weight     int64
	state      uint8 // 0 pending, 1 indexed, 2 dead
}

type batch struct {
	items  []item
	buf    []byte
	docs   int
	weight int64
}

// Run consumes until ctx ends or fetching fails for good. It blocks. When
// ctx ends it stops fetching, gives the in-flight bulks ShutdownGrace to
// finish (then abandons them), commits what was acknowledged, and returns
// nil.
func (p *Pipeline) Run(ctx context.Context) error {
	p.running.Store(true)
	defer p.running.Store(false)

	fetched := make(chan *item, 1024)
	items := make(chan *item, 4096)
	work := make(chan *batch)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	workersDone := make(chan struct{})

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { defer close(fetched); return p.fetch(gctx, fetched) })
	var parsers sync.WaitGroup
	for i := 0; i < p.cfg.ParseWorkers; i++ {
		parsers.Add(1)
		g.Go(func() error {
			defer parsers.Done()
			p.parseLoop(gctx, fetched, items)
			return nil
		})
	}
	g.Go(func() error { p.batch(gctx, workCtx, items, work); return nil })
	var wg sync.WaitGroup
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			for b := range work {
				p.process(workCtx, b)
			}
			return nil
		})
	}
	g.Go(func() error { wg.Wait(); close(workersDone); return nil })
	g.Go(func() error { // shutdown grace for the in-flight bulks
		select {
		case <-workersDone:
			return nil
		case <-gctx.Done():
		}
		t := time.NewTimer(p.cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-workersDone:
		case <-t.C:
			p.log.Warn("abandoning in-flight bulk requests at shutdown; their offsets stay uncommitted", "grace", p.cfg.ShutdownGrace)
			cancelWork()
		}
		return nil
	})
	g.Go(func() error { p.commitLoop(workersDone); return nil })
	return g.Wait()
}

// fetch reads messages, parses them and registers them with the tracker.
// It blocks while the in-flight byte budget is used up.
func (p *Pipeline) fetch(ctx context.Context, out chan<- *item) error {
	failures := 0
	for {
		msg, err := p.src.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("fetching: reader closed: %w", err)
			}
			failures++
			p.log.Error("fetching from Kafka", "err", err)
			if !sleep(ctx, p.backoff(failures)) {
				return nil
			}
			continue
		}
		failures = 0
		p.m.Fetched.Inc()
		if msg.HighWaterMark > 0 {
			p.m.Lag.WithLabelValues(msg.Topic, strconv.Itoa(msg.Partition)).Set(float64(msg.HighWaterMark - msg.Offset - 1))
		}
		w := int64(len(msg.Value) + len(msg.Key) + 256)
		if w > p.cfg.MaxInFlightBytes {
			w = p.cfg.MaxInFlightBytes
		}
		if err := p.sem.Acquire(ctx, w); err != nil {
			return nil
		}
		p.m.InFlightBytes.Add(float64(w))
		it := &item{msg: msg, weight: w}
		it.ent = p.tracker.add(&it.msg) // in fetch order; parsing may reorder
		select {
		case out <- it:
		case <-ctx.Done():
			return nil
		}
	}
}

// parseLoop decodes fetched messages; several run in parallel.
func (p *Pipeline) parseLoop(ctx context.Context, in <-chan *item, out chan<- *item) {
	for it := range in {
		ev, err := parse(&it.msg)
		if err != nil {
			it.err = err
		} else {
			it.ev = &ev
		}
		select {
		case out <- it:
		case <-ctx.Done():
			return
		}
	}
}

// parse checks the schema-version header, that the value is one JSON
// object, and decodes only what the pipeline needs: event.id and
// @timestamp to route the document, and the few fields of the heat map.
// The rest of the schema is OpenSearch's to enforce: the index template is
// dynamic: strict, and a document it refuses comes back as a 400 item,
// which is dead-lettered like an invalid message.
func parse(msg *kafka.Message) (event.Head, error) {
	for _, h := range msg.Headers {
		if h.Key == event.HeaderSchemaVersion && string(h.Value) != event.SchemaVersion {
			return event.Head{}, fmt.Errorf("unsupported %s %q (this ingest reads %q)", event.HeaderSchemaVersion, h.Value, event.SchemaVersion)
		}
	}
	ev, err := event.ParseHead(msg.Value)
	if err != nil {
		return event.Head{}, err
	}
	if len(ev.ID) > 512 {
		return event.Head{}, fmt.Errorf("event.id is %d bytes, OpenSearch _id allows 512", len(ev.ID))
	}
	return ev, nil
}

// batch groups items into bulk bodies and hands them to the workers.
func (p *Pipeline) batch(ctx, workCtx context.Context, in <-chan *item, work chan<- *batch) {
	defer close(work)
	var cur *batch
	var timer *time.Timer
	var timerC <-chan time.Time
	send := func(sendCtx context.Context) bool {
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
		b := cur
		cur = nil
		select {
		case work <- b:
			return true
		case <-sendCtx.Done():
			return false
		}
	}
	for {
		select {
		case it := <-in:
			if cur == nil {
				cur = &batch{}
				if bp, ok := p.bufs.Get().(*[]byte); ok {
					cur.buf = (*bp)[:0]
				} else {
					cur.buf = make([]byte, 0, p.cfg.BulkBytes+p.cfg.BulkBytes/8)
				}
				timer = time.NewTimer(p.cfg.FlushInterval)
				timerC = timer.C
			}
			p.appendItem(cur, it)
			if len(cur.buf) >= p.cfg.BulkBytes || cur.docs >= p.cfg.BulkDocs {
				if !send(ctx) {
					return
				}
			}
		case <-timerC:
			timer, timerC = nil, nil
			if cur != nil && !send(ctx) {
				return
			}
		case <-ctx.Done():
			if cur != nil {
				send(workCtx) // the last partial batch gets the grace too
			}
			return
		}
	}
}

func (p *Pipeline) appendItem(b *batch, it *item) {
	b.weight += it.weight
	if it.ev == nil || p.idx == nil {
		if it.ev != nil {
			b.docs++ // no bulk body without OpenSearch: flush by count
		}
		b.items = append(b.items, *it)
		return
	}
	it.start = len(b.buf)
	b.buf = append(b.buf, `{"create":{"_index":"`...)
	b.buf = append(b.buf, p.cfg.IndexPrefix...)
	b.buf = it.ev.Timestamp.UTC().AppendFormat(b.buf, "2006.01.02")
	b.buf = append(b.buf, `","_id":`...)
	b.buf = appendJSONString(b.buf, it.ev.ID)
	b.buf = append(b.buf, "}}\n"...)
	if v := it.msg.Value; bytes.IndexByte(v, '\n') >= 0 || bytes.IndexByte(v, '\r') >= 0 { // vectorized, unlike ContainsAny
		var c bytes.Buffer
		_ = json.Compact(&c, it.msg.Value) // valid: event.ParseHead accepted it
		b.buf = append(b.buf, c.Bytes()...)
	} else {
		b.buf = append(b.buf, bytes.TrimSpace(it.msg.Value)...)
	}
	b.buf = append(b.buf, '\n')
	it.end = len(b.buf)
	b.docs++
	b.items = append(b.items, *it)
}

func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			j, _ := json.Marshal(s)
			return append(dst, j...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// process indexes one batch until every item is indexed or dead-lettered,
// or ctx ends (the batch is then abandoned: nothing of it is committed).
func (p *Pipeline) process(ctx context.Context, b *batch) {
	defer func() {
		// The gauge first: released bytes may be taken by the fetcher at
		// once, and the gauge must never show more than the budget.
		p.m.InFlightBytes.Sub(float64(b.weight))
		p.sem.Release(b.weight)
	}()
	var pending, dead []int
	for i := range b.items {
		if b.items[i].ev == nil {
			dead = append(dead, i)
		} else {
			pending = append(pending, i)
		}
	}
	if p.idx == nil { // no OpenSearch: the sink is the only destination
		for _, i := range pending {
			b.items[i].state = 1
		}
		pending = nil
	}
	body := b.buf
	attempt := 0
	wasBlocked := false
	setBlocked := func(v bool) {
		if v != wasBlocked {
			wasBlocked = v
			if v {
				p.blocked.Add(1)
			} else {
				p.blocked.Add(-1)
			}
			p.m.WriteBlocked.Set(float64(min(p.blocked.Load(), 1)))
		}
	}
	defer setBlocked(false)
	reusable := true      // no request failed: b.buf can be recycled
	limit := len(pending) // documents per request; halved on 413
	retryNow := false     // resend at once (after a split), no backoff
	for len(pending) > 0 {
		send := pending
		if len(send) > limit {
			send = send[:limit]
		}
		if attempt > 0 {
			if !retryNow && !sleep(ctx, p.backoff(attempt)) {
				return
			}
			retryNow = false
			body = make([]byte, 0, len(b.buf))
			for _, i := range send {
				body = append(body, b.buf[b.items[i].start:b.items[i].end]...)
			}
		}
		attempt++
		start := time.Now()
		resp, err := p.idx.Bulk(ctx, body)
		p.m.BulkDuration.Observe(time.Since(start).Seconds())
		p.m.BulkDocs.Observe(float64(len(send)))
		if err != nil {
			if ctx.Err() != nil {
				p.m.BulkRequests.WithLabelValues("abandoned").Inc()
				return
			}
			reusable = false
			var se *opensearch.StatusError
			if errors.As(err, &se) && se.Status == http.StatusRequestEntityTooLarge && limit > 1 {
				limit = max(1, len(send)/2)
				retryNow = true
				p.m.BulkRequests.WithLabelValues("too_large").Inc()
				p.log.Warn("bulk request too large for the cluster; splitting (lower --bulk-bytes)", "docs", len(send), "bytes", len(body), "now", limit)
				continue
			}
			out := opensearch.ClassifyError(err)
			p.m.BulkRequests.WithLabelValues("error_" + out.String()).Inc()
			p.m.Retried.WithLabelValues("request").Add(float64(len(send)))
			if out == opensearch.Blocked {
				setBlocked(true)
				p.log.Error("OPENSEARCH REFUSES WRITES: bulk request blocked; retrying, nothing is committed until an operator lifts the block", "err", err, "docs", len(send), "attempt", attempt)
			} else {
				p.log.Warn("bulk request failed; retrying", "err", err, "docs", len(send), "attempt", attempt)
			}
			continue
		}
		if len(resp.Items) != len(send) {
			p.m.BulkRequests.WithLabelValues("error_item_count").Inc()
			p.log.Error("bulk answer has the wrong number of items; retrying the batch", "sent", len(send), "items", len(resp.Items))
			continue
		}
		var next []int
		var blockedItem *opensearch.BulkItem
		retried := 0
		for k := range resp.Items {
			it := &resp.Items[k]
			i := send[k]
			switch opensearch.Classify(*it) {
			case opensearch.Indexed:
				b.items[i].state = 1
				p.m.Indexed.Inc()
				if it.Status == 409 {
					p.m.Duplicates.Inc()
				}
			case opensearch.Retry:
				next = append(next, i)
				retried++
			case opensearch.Blocked:
				next = append(next, i)
				blockedItem = it
			case opensearch.DeadLetter:
				b.items[i].err = fmt.Errorf("opensearch rejected the document: %d %s: %s", it.Status, it.ErrType, it.ErrReason)
				dead = append(dead, i)
			}
		}
		outcome := "ok"
		if len(next) > 0 || len(dead) > 0 {
			outcome = "partial"
		}
		p.m.BulkRequests.WithLabelValues(outcome).Inc()
		if retried > 0 {
			p.m.Retried.WithLabelValues("rejected").Add(float64(retried))
		}
		if blockedItem != nil {
			setBlocked(true)
			p.m.Retried.WithLabelValues("blocked").Add(float64(len(next) - retried))
			p.log.Error("OPENSEARCH REFUSES WRITES: documents blocked (flood-stage watermark or read-only index?); retrying, nothing is committed until an operator lifts the block",
				"status", blockedItem.Status, "type", blockedItem.ErrType, "reason", blockedItem.ErrReason, "index", blockedItem.Index, "docs", len(next)-retried, "attempt", attempt)
		} else {
			setBlocked(false)
		}
		rest := pending[len(send):]
		if len(next) == 0 && len(rest) > 0 {
			retryNow = true // the split's next part: no failure, no backoff
		}
		pending = append(next, rest...)
	}
	if len(dead) > 0 && !p.deadLetter(ctx, b, dead) {
		return
	}
	keys := make([]partKey, len(b.items))
	ents := make([]*entry, len(b.items))
	for i := range b.items {
		it := &b.items[i]
		keys[i] = partKey{it.msg.Topic, it.msg.Partition}
		ents[i] = it.ent
		if it.state == 1 && p.sink != nil {
			ev := it.ev.Event()
			p.sink.Add(&ev)
		}
	}
	p.queueCommits(p.tracker.done(keys, ents))
	if reusable {
		buf := b.buf[:0]
		p.bufs.Put(&buf)
	}
}

// deadLetter writes the items to the DLQ, retrying until the broker acks
// or ctx ends (false: abandoned).
func (p *Pipeline) deadLetter(ctx context.Context, b *batch, idx []int) bool {
	msgs := make([]kafka.Message, 0, len(idx))
	for _, i := range idx {
		it := &b.items[i]
		hdrs := append([]kafka.Header(nil), it.msg.Headers...)
		hdrs = append(hdrs,
			kafka.Header{Key: HeaderError, Value: []byte(it.err.Error())},
			kafka.Header{Key: HeaderTopic, Value: []byte(it.msg.Topic)},
			kafka.Header{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(it.msg.Partition), 10)},
			kafka.Header{Key: HeaderOffset, Value: strconv.AppendInt(nil, it.msg.Offset, 10)},
		)
		msgs = append(msgs, kafka.Message{Key: it.msg.Key, Value: it.msg.Value, Headers: hdrs})
	}
	for attempt := 1; ; attempt++ {
		err := p.dlq.WriteMessages(ctx, msgs...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		p.log.Error("writing to the dead-letter topic; retrying (offsets stay uncommitted)", "err", err, "messages", len(msgs), "attempt", attempt)
		if !sleep(ctx, p.backoff(attempt)) {
			return false
		}
	}
	for _, i := range idx {
		it := &b.items[i]
		reason := "mapping"
		if it.ev == nil {
			reason = "invalid"
		}
		it.state = 2
		p.m.DeadLettered.WithLabelValues(reason).Inc()
		p.log.Warn("dead-lettered a message", "reason", reason, "err", it.err, "topic", it.msg.Topic, "partition", it.msg.Partition, "offset", it.msg.Offset)
	}
	return true
}

func (p *Pipeline) queueCommits(msgs []kafka.Message) {
	if len(msgs) == 0 {
		return
	}
	p.commitMu.Lock()
	for _, m := range msgs {
		k := partKey{m.Topic, m.Partition}
		if cur, ok := p.commitPending[k]; !ok || m.Offset > cur.Offset {
			p.commitPending[k] = m
		}
	}
	p.commitMu.Unlock()
	select {
	case p.commitNotify <- struct{}{}:
	default:
	}
}

// commitLoop commits queued offsets as they come, and once more after the
// workers are done, with a fresh deadline.
func (p *Pipeline) commitLoop(workersDone <-chan struct{}) {
	for {
		select {
		case <-p.commitNotify:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if !p.commitOnce(ctx) {
				select { // back off a failed commit, but not past shutdown
				case <-time.After(time.Second):
				case <-workersDone:
				}
				select {
				case p.commitNotify <- struct{}{}:
				default:
				}
			}
			cancel()
		case <-workersDone:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			p.commitOnce(ctx)
			cancel()
			return
		}
	}
}

func (p *Pipeline) commitOnce(ctx context.Context) bool {
	p.commitMu.Lock()
	msgs := make([]kafka.Message, 0, len(p.commitPending))
	for _, m := range p.commitPending {
		msgs = append(msgs, m)
	}
	clear(p.commitPending)
	p.commitMu.Unlock()
	if len(msgs) == 0 {
		return true
	}
	if err := p.src.CommitMessages(ctx, msgs...); err != nil {
		p.m.CommitErrors.Inc()
		p.log.Error("committing offsets; will retry (a crash now only means redelivery, answered 409)", "err", err)
		p.queueCommitsNoNotify(msgs)
		return false
	}
	p.m.Commits.Inc()
	return true
}

func (p *Pipeline) queueCommitsNoNotify(msgs []kafka.Message) {
	p.commitMu.Lock()
	defer p.commitMu.Unlock()
	for _, m := range msgs {
		k := partKey{m.Topic, m.Partition}
		if cur, ok := p.commitPending[k]; !ok || m.Offset > cur.Offset {
			p.commitPending[k] = m
		}
	}
}

// backoff is a capped exponential delay with jitter in [d/2, d].
func (p *Pipeline) backoff(attempt int) time.Duration {
	d := p.cfg.BackoffMin
	for i := 1; i < attempt && d < p.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, p.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ReaderConfig returns the kafka-go consumer-group reader configuration the
// pipeline is built for: explicit synchronous commits only (CommitInterval
// 0: the pipeline commits what OpenSearch acknowledged), start at the
// earliest offset for a new group, large fetches. dialer may be nil.
func ReaderConfig(brokers []string, topic, group string, dialer *kafka.Dialer, sessionTimeout time.Duration) kafka.ReaderConfig {
	if sessionTimeout <= 0 {
		sessionTimeout = 30 * time.Second
	}
	return kafka.ReaderConfig{
		Brokers:           brokers,
		GroupID:           group,
		Topic:             topic,
		Dialer:            dialer,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     4096,
		CommitInterval:    0,
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    sessionTimeout,
		HeartbeatInterval: sessionTimeout / 10,
		RebalanceTimeout:  sessionTimeout,
	}
}
