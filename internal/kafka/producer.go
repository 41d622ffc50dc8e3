package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/spool"
	kafkago "github.com/segmentio/kafka-go"
)

// Errors.
var (
	ErrClosed     = errors.New("kafka: producer closed")
	ErrRunning    = errors.New("kafka: Run already called")
	ErrBadConfig  = errors.New("kafka: bad producer settings")
	errNoTopic    = errors.New("topic missing")
	errNoBrokers  = errors.New("no partition leaders")
	schemaHeaders = []kafkago.Header{{Key: event.HeaderSchemaVersion, Value: []byte(event.SchemaVersion)}}
)

// Delivery states.
const (
	stateUnknown int32 = iota // before the first probe
	stateHealthy
	stateDegraded
)

// Producer publishes events asynchronously. Publish is safe for concurrent
// use and never blocks on the broker.
type Producer struct {
	cfg    ProducerConfig
	log    *slog.Logger
	queue  chan queued // encoded events, in publishing order
	spool  *spool.Spool
	writer *kafkago.Writer
	wt     *writerTransport // the writer's transport
	client *kafkago.Client
	m      *metrics

	mu     sync.RWMutex // closed; held shared by Publish
	closed bool

	state   atomic.Int32
	started atomic.Bool
	stop    chan struct{} // closed by Close: Run returns
	abort   chan struct{} // closed when Close's ctx expires: cancel in-flight writes
	runDone chan struct{} // closed when Run returns
	disk    bool          // Buffer is BufferDisk
	wake    chan struct{} // disk mode: an event was appended to the spool
	// Disk mode: appends counts the events appended; Publish signals wake
	// only once appends reaches wakeAt. lingerDisk raises wakeAt to when a
	// batch would be full, so that it is not woken (a goroutine switch
	// each) for every event of a batch; 0 (any append wakes) otherwise.
	appends   atomic.Int64
	wakeAt    atomic.Int64
	flush     chan struct{} // disk mode: closed by Close: replay without lingering
	closeOnce sync.Once
	closeErr  error
	lastLog   atomic.Int64 // unix nanos of the last rate-limited error line
	// lostUnlogged counts events the spool refused (and that are lost)
	// that no log line has reported yet: the next loss line, or Close,
	// says them.
	lostUnlogged atomic.Int64

	// Owned by the delivery goroutine (and by Close once Run returned).
	replay      *replayState
	resumeSeq   uint64 // segment whose first resumeAcked records Kafka has
	resumeAcked int64
	resumeRead  int64             // records of resumeSeq read before: their skips are already counted
	resumeSkips int64             // undecodable records of resumeSeq between resumeAcked and resumeRead
	replayMsgs  []kafkago.Message // replayBatch's batch, reused (kafka-go copies the messages)
	// replayBuf holds the payloads of replayBatch's batch, which its
	// messages' keys and values alias; reused for the next batch only
	// after kafka-go acknowledged this one (see replayBatch).
	replayBuf []byte
	// readFailSeq is the segment whose reads failed readFails times in a
	// row (see spoolReadFailed).
	readFailSeq uint64
	readFails   int
}

// replayState is the segment being replayed.
type replayState struct {
	seg   *spool.Segment
	r     *spool.Reader
	acked int64 // leading records of seg done: acknowledged by Kafka or skipped as undecodable
	read  int64 // records of seg read so far
	eof   bool
}

// NewProducer checks the config, builds the Kafka transport and opens the
// spool. It does not contact the broker; Run does.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.WriteTimeout)
	defer cancel()
	wt, err := cfg.Security.Transport(ctx)
	if err != nil {
		return nil, err
	}
	ct, err := cfg.Security.Transport(ctx)
	if err != nil {
		return nil, err
	}
	// kafka-go transports cache the cluster layout (and a failure to get
	// it) until a refresh at a random point within MetadataTTL; refresh
	// as often as a degraded producer probes, so recovery is noticed.
	wt.MetadataTTL, ct.MetadataTTL = cfg.RetryInterval, cfg.RetryInterval
	comp, _ := compressionCodec(cfg.Compression)
	wtr := &writerTransport{Transport: wt, topic: cfg.Topic}
	p := &Producer{
		wt:      wtr,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "kafka", "topic", cfg.Topic),
		queue:   make(chan queued, cfg.QueueSize),
		stop:    make(chan struct{}),
		abort:   make(chan struct{}),
		runDone: make(chan struct{}),
		disk:    cfg.Buffer == BufferDisk,
		wake:    make(chan struct{}, 1),
		flush:   make(chan struct{}),
		writer: &kafkago.Writer{
			Addr:            kafkago.TCP(cfg.Brokers...),
			Topic:           cfg.Topic,
			Balancer:        &kafkago.Murmur2Balancer{}, // the Java client's key hashing
			MaxAttempts:     3,
			WriteBackoffMin: 50 * time.Millisecond,
			WriteBackoffMax: 500 * time.Millisecond,
			// kafka-go splits a WriteMessages call by partition and
			// allocates each partition's batch with room for BatchSize
			// messages (~170 B each, with pointers, so the GC scans all of
			// it). A batch of 1,000 events over 6 partitions allocated
			// 6,000 slots for 1,000 events: ~0.7 KiB of garbage per event
			// (of the ~3.5 KiB the app allocated per connection). A
			// partition's share of a larger batch goes in more than one
			// request instead.
			BatchSize: min(cfg.BatchSize, writerBatchSize),
			// Batches are formed by the delivery goroutine; kafka-go must
			// send a partition's share at once instead of lingering again.
			// (Zero means kafka-go's default of 1s; the timer cannot fire
			// before WriteMessages has added all of its messages, since
			// both take the partition writer's lock.)
			BatchTimeout: time.Nanosecond,
			ReadTimeout:  cfg.WriteTimeout,
			WriteTimeout: cfg.WriteTimeout,
			RequiredAcks: kafkago.RequireAll,
			Compression:  comp,
			Transport:    wtr,
		},
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: ct, Timeout: cfg.WriteTimeout},
	}
	// Before the spool: Open reports the losses it finds in what an
	// earlier run left. The spool gauges read p.spool when scraped.
	p.m = newMetrics(cfg.Registerer, p)
	sp, err := spool.Open(spool.Config{
		Dir:          cfg.SpoolDir,
		MaxBytes:     cfg.SpoolMaxBytes,
		SegmentBytes: cfg.SpoolSegmentBytes,
		Logger:       p.log,
		OnLoss:       func(reason string, n int64) { p.m.dropped.WithLabelValues(reason).Add(float64(n)) },
		OnLostBytes:  func(n int64) { p.m.corruptBytes.Add(float64(n)) },
	})
	if err != nil {
		return nil, fmt.Errorf("opening kafka spool: %w", err)
	}
	p.spool = sp
	return p, nil
}

// fill validates cfg and applies the defaults.
func (cfg *ProducerConfig) fill() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadConfig, fmt.Sprintf(format, args...))
	}
	if len(cfg.Brokers) == 0 {
		return bad("no brokers")
	}
	for _, b := range cfg.Brokers {
		if b == "" {
			return bad("empty broker address")
		}
	}
	if err := cfg.Security.Validate(); err != nil {
		return err
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.Compression == "" {
		cfg.Compression = DefaultCompression
	}
	switch cfg.Buffer {
	case "":
		cfg.Buffer = DefaultBuffer
	case BufferMemory, BufferDisk:
	default:
		return bad("buffer %q: want memory or disk", cfg.Buffer)
	}
	if _, ok := compressionCodec(cfg.Compression); !ok {
		return bad("compression %q: want zstd, lz4 or none", cfg.Compression)
	}
	switch {
	case cfg.BatchSize < 0:
		return bad("batch size %d < 0", cfg.BatchSize)
	case cfg.Linger < 0:
		return bad("linger %s < 0", cfg.Linger)
	case cfg.QueueSize < 0:
		return bad("queue size %d < 0", cfg.QueueSize)
	case cfg.SpoolMaxBytes < 0:
		return bad("spool max bytes %d < 0", cfg.SpoolMaxBytes)
	case cfg.FsyncInterval < 0:
		return bad("fsync interval %s < 0", cfg.FsyncInterval)
	case cfg.Partitions < 0:
		return bad("partitions %d < 0", cfg.Partitions)
	case cfg.ReplicationFactor < -1:
		return bad("replication factor %d < -1", cfg.ReplicationFactor)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.FsyncInterval == 0 {
		cfg.FsyncInterval = DefaultFsyncInterval
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = -1
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = spool.DefaultDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func compressionCodec(name string) (kafkago.Compression, bool) {
	switch name {
	case "zstd":
		return kafkago.Zstd, true
	case "lz4":
		return kafkago.Lz4, true
	case "none":
		return 0, true
	}
	return 0, false
}

// queued is one encoded event waiting in the queue: the Kafka key (the
// client IP) followed by the value (the event JSON) in one allocation.
// Queueing the encoded bytes, not the Event, keeps the queue's slots
// small (the buffer exists only while an event waits) and does the
// encoding in the publishing goroutines instead of the one delivery
// goroutine.
type queued struct {
	b      []byte
	keyLen int
}

// encodeBufs are scratch buffers for encode (*[]byte).
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledEncodeBuf bounds the scratch buffers kept in encodeBufs.
const maxPooledEncodeBuf = 64 << 10

// encode encodes ev for the queue: into a pooled scratch buffer, then
// copied into one of the exact size (cheaper than a zeroed buffer sized for
// the largest event, and smaller while it waits in the queue).
func encode(ev *event.Event) (queued, error) {
	bp := encodeBufs.Get().(*[]byte)
	b := ev.AppendKey((*bp)[:0])
	k := len(b)
	b, err := ev.AppendJSON(b)
	var q queued
	if err == nil {
		q = queued{b: bytes.Clone(b), keyLen: k}
	}
	if cap(b) <= maxPooledEncodeBuf {
		*bp = b[:0] // keep a buffer a large event grew
		encodeBufs.Put(bp)
	}
	return q, err
}

// message is q as the Kafka message to send; its slices alias q's buffer.
func (q queued) message() kafkago.Message {
	return kafkago.Message{Key: q.b[:q.keyLen:q.keyLen], Value: q.b[q.keyLen:], Headers: schemaHeaders}
}

// Publish encodes one event and queues it; when the queue is full it goes
// to the spool (one file write in the caller's goroutine). It never waits
// for the broker. After Close the event is counted as dropped (reason
// "closed"); an event that cannot be encoded is dropped (reason "encode").
func (p *Producer) Publish(ev event.Event) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.m.dropped.WithLabelValues("closed").Inc()
		p.logLimited("kafka: event published after Close, dropped", "event_id", ev.Event.ID)
		return
	}
	if p.disk {
		p.publishDisk(&ev)
		return
	}
	q, err := encode(&ev)
	if err != nil {
		p.m.dropped.WithLabelValues("encode").Inc()
		p.logLimited("kafka: event cannot be encoded, dropped", "err", errText(err))
		return
	}
	p.enqueue(q)
}

// enqueue puts q in the queue, or in the spool when the queue is full.
func (p *Producer) enqueue(q queued) {
	select {
	case p.queue <- q:
		p.m.queued.Inc()
	default:
		p.spoolMessages([]kafkago.Message{q.message()})
	}
}

// publishDisk appends ev to the spool (disk mode). When the spool refuses
// it (a full disk), the event takes the memory path instead: lost on a
// crash, but not now.
func (p *Producer) publishDisk(ev *event.Event) {
	bp := encodeBufs.Get().(*[]byte)
	rp := encodeBufs.Get().(*[]byte)
	defer func() {
		for _, b := range []*[]byte{bp, rp} {
			if cap(*b) <= maxPooledEncodeBuf {
				*b = (*b)[:0]
				encodeBufs.Put(b)
			}
		}
	}()
	b := ev.AppendKey((*bp)[:0])
	k := len(b)
	b, err := ev.AppendJSON(b)
	*bp = b
	if err != nil {
		p.m.dropped.WithLabelValues("encode").Inc()
		p.logLimited("kafka: event cannot be encoded, dropped", "err", errText(err))
		return
	}
	m := kafkago.Message{Key: b[:k:k], Value: b[k:], Headers: schemaHeaders}
	*rp = appendMessage((*rp)[:0], &m)
	if _, err := p.spool.Append(*rp); err != nil {
		p.logLimited("kafka: the spool refused an event; it waits in memory instead", "err", errText(err))
		p.enqueue(queued{b: bytes.Clone(b), keyLen: k})
		return
	}
	p.m.spooled.Inc()
	if p.appends.Add(1) >= p.wakeAt.Load() {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// Degraded reports whether events are currently going to the spool
// because the broker is unreachable or refuses them.
func (p *Producer) Degraded() bool { return p.state.Load() == stateDegraded }

// Run delivers queued and spooled events until ctx is done or Close is
// called, and fsyncs the spool every FsyncInterval. It blocks, and returns
// nil on a clean stop. Cancelling ctx cancels the batch in flight, which
// goes to the spool (Kafka may have received it: at least once).
func (p *Producer) Run(ctx context.Context) error {
	// Check closed and mark started under one lock, so that Close (which
	// sets closed under the write lock, then looks at started) either sees
	// this Run started and waits for it, or this Run sees closed.
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrClosed
	}
	if !p.started.CompareAndSwap(false, true) {
		p.mu.RUnlock()
		return ErrRunning
	}
	p.mu.RUnlock()
	defer close(p.runDone)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (defers run last-in first-out)
	wg.Go(func() {
		select {
		case <-p.abort:
			cancel()
		case <-ctx.Done():
		}
	})
	wg.Go(func() { p.fsyncLoop(ctx) })
	p.deliver(ctx)
	cancel()
	return nil
}

// fsyncLoop fsyncs the spool every FsyncInterval until ctx is done.
func (p *Producer) fsyncLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.spool.Sync(); err != nil {
				p.logLimited("kafka: fsync of the spool failed", "err", errText(err))
			}
		}
	}
}

// stopped reports whether Run must return.
func (p *Producer) stopped(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-p.stop:
		return true
	default:
		return false
	}
}

// deliver is the delivery goroutine's loop.
func (p *Producer) deliver(ctx context.Context) {
	healthy := p.probe(ctx)
	retry := time.NewTimer(p.cfg.RetryInterval)
	defer retry.Stop()
	for !p.stopped(ctx) {
		if !healthy {
			select {
			case <-ctx.Done():
			case <-p.stop:
			case q := <-p.outageQueue():
				p.spoolMessages(p.drainQueue(q.message()))
			case <-retry.C:
				if healthy = p.probe(ctx); !healthy {
					retry.Reset(p.cfg.RetryInterval)
				}
			}
			continue
		}
		var err error
		switch {
		case p.replay != nil || p.spool.Pending():
			if p.disk && p.replay == nil {
				p.lingerDisk(ctx)
			}
			// Keep the order: live events queue up behind the spool. In
			// disk mode the queue holds only events the spool refused (a
			// full disk): they go straight to Kafka instead.
			if msgs := p.drainQueue(); len(msgs) > 0 {
				if p.disk {
					err = p.sendLive(ctx, msgs)
				} else {
					p.spoolMessages(msgs)
				}
			}
			if err == nil {
				err = p.replayBatch(ctx)
			}
		case p.disk:
			// Wait for an append (or an event the spool refused).
			select {
			case <-p.wake:
			case q := <-p.queue:
				err = p.sendLive(ctx, p.drainQueue(q.message()))
			case <-ctx.Done():
			case <-p.stop:
			}
		default:
			err = p.sendLive(ctx, p.collect(ctx))
		}
		if e := (*spoolReadError)(nil); errors.As(err, &e) {
			// The disk's failure, not the broker's: not degraded.
			if p.spoolReadFailed(e) {
				p.waitRetry(ctx, retry)
			}
			continue
		}
		if err != nil && !p.stopped(ctx) {
			healthy = false
			p.setDegraded(err)
			retry.Reset(p.cfg.RetryInterval)
		}
	}
}

// lingerDisk lets a batch gather in the spool's active segment (disk
// mode): it returns when a sealed segment waits, when the active one holds
// BatchSize records, after Linger, or when Close flushes. Replaying seals
// the active segment, with an fsync: one fsync per batch (group commit).
func (p *Producer) lingerDisk(ctx context.Context) {
	// Wake at the append that can fill the batch (counted from before
	// Backlog, so an append in between only wakes early), or at once
	// again after: the deliver loop may wait for the next append.
	// A segment sealed for its size during the linger is seen at that
	// append or when the linger ends.
	defer p.wakeAt.Store(0)
	awaitFull := func() bool {
		n := p.appends.Load()
		sealed, active := p.spool.Backlog()
		if sealed > 0 || active >= int64(p.cfg.BatchSize) {
			return true
		}
		p.wakeAt.Store(n + int64(p.cfg.BatchSize) - active)
		return false
	}
	if awaitFull() {
		return
	}
	t := time.NewTimer(p.cfg.Linger)
	defer t.Stop()
	for {
		select {
		case <-p.wake:
			if awaitFull() {
				return
			}
		case <-t.C:
			return
		case <-p.flush:
			return
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		}
	}
}

// drainQueue returns first (if any) plus the messages of what the queue
// holds now, up to one queue's worth.
func (p *Producer) drainQueue(first ...kafkago.Message) []kafkago.Message {
	msgs := first
	for range cap(p.queue) {
		select {
		case q := <-p.queue:
			msgs = append(msgs, q.message())
		default:
			return msgs
		}
	}
	return msgs
}

// collect waits for a first event, then gathers up to BatchSize events
// for at most Linger, as Kafka messages. It returns early, possibly empty,
// when Run must stop.
func (p *Producer) collect(ctx context.Context) []kafkago.Message {
	var msgs []kafkago.Message
	select {
	case q := <-p.queue:
		msgs = make([]kafkago.Message, 0, min(p.cfg.BatchSize, 64))
		msgs = append(msgs, q.message())
	case <-ctx.Done():
		return nil
	case <-p.stop:
		return nil
	}
	linger := time.NewTimer(p.cfg.Linger)
	defer linger.Stop()
	for len(msgs) < p.cfg.BatchSize {
		// Take what is queued now with plain receives, not a select per
		// event (selectgo was ~2% of the app's CPU under load). The
		// delivery goroutine is the queue's only receiver, so a receive
		// of fewer than len(queue) events does not block.
		for n := min(len(p.queue), p.cfg.BatchSize-len(msgs)); n > 0; n-- {
			msgs = append(msgs, (<-p.queue).message())
		}
		if len(msgs) == p.cfg.BatchSize {
			break
		}
		select {
		case q := <-p.queue:
			msgs = append(msgs, q.message())
		case <-linger.C:
			return msgs
		case <-ctx.Done():
			return msgs
		case <-p.stop:
			return msgs
		}
	}
	return msgs
}

// sendLive writes live events; what Kafka does not acknowledge goes to the
// spool. The returned error means the broker failed.
func (p *Producer) sendLive(ctx context.Context, msgs []kafkago.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	err := p.write(ctx, msgs)
	if err == nil {
		p.m.sent.Add(float64(len(msgs)))
		return nil
	}
	var werrs kafkago.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(msgs) {
		failed := msgs[:0:0]
		for i, e := range werrs {
			if e != nil {
				failed = append(failed, msgs[i])
			}
		}
		p.m.sent.Add(float64(len(msgs) - len(failed)))
		msgs = failed
	}
	if !p.disk {
		p.spoolMessages(msgs)
		return err
	}
	// Disk mode: these are events the spool refused already (a full
	// disk); one it refuses again waits in the queue, in memory, for the
	// broker (see outageQueue), while the queue has room.
	for i := range msgs {
		m := &msgs[i]
		if _, serr := p.spool.Append(appendMessage(nil, m)); serr == nil {
			p.m.spooled.Inc()
			continue
		}
		b := append(bytes.Clone(m.Key), m.Value...)
		select {
		case p.queue <- queued{b: b, keyLen: len(m.Key)}:
		default:
			p.spoolMessages(msgs[i:])
			return err
		}
	}
	return err
}

// write is one synchronous, acknowledged (acks=all) batch write bounded by
// WriteTimeout.
func (p *Producer) write(ctx context.Context, msgs []kafkago.Message) error {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	p.wt.newBatch()
	err := p.writer.WriteMessages(wctx, msgs...)
	if err != nil {
		p.m.brokerErrors.Inc()
		var werrs kafkago.WriteErrors
		if errors.As(err, &werrs) {
			err = writeErrors{werrs}
		}
		return fmt.Errorf("writing %d events to kafka: %w", len(msgs), err)
	}
	return nil
}

// writeErrors is kafka-go's WriteErrors (one error per message) with a
// text of bounded size: how many failed and the first error.
type writeErrors struct{ kafkago.WriteErrors }

func (e writeErrors) Error() string {
	var first error
	for _, err := range e.WriteErrors {
		if err != nil {
			first = err
			break
		}
	}
	return fmt.Sprintf("%d of %d events failed, first: %v", e.Count(), len(e.WriteErrors), first)
}

func (e writeErrors) Unwrap() error { return e.WriteErrors }

// maxErrText bounds the text of an error in a log line.
const maxErrText = 512

// errText is err's text for a log line, cut at maxErrText bytes.
func errText(err error) string {
	s := err.Error()
	if len(s) > maxErrText {
		s = s[:maxErrText] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// writerBatchSize bounds the messages of one kafka-go produce batch (one
// partition's share of a delivery batch, ~170 of a 1,000-event batch over
// the 6 default partitions).
const writerBatchSize = 256

// replayYield is how many records replayBatch reads and decodes between
// yields of its P. Reading a batch of 1,000 took the delivery goroutine
// about 1 ms at a stretch (more with the GC assists its allocations
// drew), and with GOMAXPROCS=1 every connection waited for it: the
// app's reply p99 (BENCHMARKS.md, issue 14, this session).
const replayYield = 64

// maxReplayBuf bounds the payload buffer kept between replayed batches
// (a batch of 1,000 ~700-byte events needs ~0.7 MB).
const maxReplayBuf = 4 << 20

// spoolReadAttempts is how many times in a row a spool segment may fail
// to read (an error of the disk, not of the broker) before it is
// quarantined; the attempts are RetryInterval apart.
const spoolReadAttempts = 3

// spoolReadError is a failure to read a spool segment: the disk's, not
// the broker's.
type spoolReadError struct {
	seg *spool.Segment
	err error
}

func (e *spoolReadError) Error() string { return "reading the spool: " + e.err.Error() }
func (e *spoolReadError) Unwrap() error { return e.err }

// replayBatch sends the next batch of the oldest spool segment and deletes
// the segment once all of it is acknowledged. An error means the broker
// failed, or the segment could not be read (a *spoolReadError); the
// segment stays, and the next replay resumes after the records already
// acknowledged.
//
// The batch's payloads are read into one buffer (replayBuf) reused for the
// next batch, so a replayed event costs no allocation of its own. kafka-go
// reads the messages' keys and values until the batch is acknowledged: a
// synchronous WriteMessages that returns nil has every partition's batch
// done, but one that returns early (ctx expired) leaves them in flight,
// so after a failed write the buffer is dropped, never reused.
func (p *Producer) replayBatch(ctx context.Context) error {
	if p.replay == nil {
		seg, ok, err := p.spool.Oldest()
		if err != nil || !ok {
			return err
		}
		r, err := p.spool.Open(seg)
		if errors.Is(err, spool.ErrGone) {
			return nil // counted and forgotten by the spool; not the broker's fault
		}
		if err != nil {
			return &spoolReadError{seg: seg, err: err}
		}
		p.replay = &replayState{seg: seg, r: r}
		if seg.Seq == p.resumeSeq {
			buf := p.replayBuf
			for p.replay.acked < p.resumeAcked {
				if buf, err = r.AppendNext(buf[:0]); err != nil {
					if err != io.EOF {
						p.endReplay()
						return &spoolReadError{seg: seg, err: err}
					}
					break
				}
				p.replay.acked++
				p.replay.read++
			}
			p.replayBuf = buf[:0]
		}
	}
	rs := p.replay
	msgs := p.replayMsgs[:0]
	buf := p.replayBuf[:0]
	p.replayBuf = nil // until kafka-go is done with this batch
	defer func() {
		clear(msgs) // drop the payloads until the next batch
		p.replayMsgs = msgs[:0]
	}()
	// Undecodable records have nothing to send, but count as done only
	// together with the batch they are in: resuming past them while records
	// before them failed would lose those.
	var skipped int64
	for len(msgs) < p.cfg.BatchSize && !rs.eof {
		out, err := rs.r.AppendNext(buf)
		if err == io.EOF {
			rs.eof = true
			break
		}
		if err != nil {
			p.saveResume(rs, skipped)
			p.endReplay()
			return &spoolReadError{seg: rs.seg, err: err}
		}
		// payload aliases buf; when append grew it, the earlier
		// payloads stay in the old array, which nothing writes again.
		payload := out[len(buf):]
		buf = out
		rs.read++
		m, err := decodeMessage(payload)
		if err != nil {
			skipped++
			if rs.seg.Seq != p.resumeSeq || rs.read > p.resumeRead {
				// Not counted by an earlier attempt at this batch.
				p.m.dropped.WithLabelValues(spool.LossCorrupt).Inc()
				p.log.Warn("kafka: undecodable spool record skipped", "segment", rs.seg.Path, "err", errText(err))
			}
			continue
		}
		msgs = append(msgs, m)
		if len(msgs)%replayYield == 0 {
			runtime.Gosched()
		}
	}
	if len(msgs) > 0 {
		if err := p.write(ctx, msgs); err != nil {
			p.saveResume(rs, skipped)
			p.endReplay()
			return err
		}
		if p.disk {
			p.m.sent.Add(float64(len(msgs)))
		} else {
			p.m.replayed.Add(float64(len(msgs)))
		}
	}
	if cap(buf) <= maxReplayBuf {
		p.replayBuf = buf[:0]
	}
	rs.acked += int64(len(msgs)) + skipped
	if p.readFailSeq == rs.seg.Seq {
		p.readFails = 0 // read again: the failures were not lasting
	}
	if rs.eof {
		p.endReplay()
		if err := p.spool.Ack(rs.seg); err != nil {
			// Kafka has it all: a failed delete means a duplicate
			// replay later, not a loss.
			p.logLimited("kafka: deleting a replayed spool segment", "err", errText(err))
		}
		p.resumeSeq, p.resumeAcked, p.resumeRead, p.resumeSkips = 0, 0, 0, 0
		if p.spool.Records() == 0 && !p.disk {
			p.log.Info("kafka: spool replayed")
		}
	}
	return nil
}

// saveResume records where the next replay of rs's segment resumes after
// a batch failed: after the records acknowledged (rs.acked), not counting
// again the undecodable ones the failed attempts read (skipped in this one).
func (p *Producer) saveResume(rs *replayState, skipped int64) {
	read, skips := rs.read, skipped
	if p.resumeSeq == rs.seg.Seq && p.resumeRead > read {
		read, skips = p.resumeRead, p.resumeSkips
	}
	p.resumeSeq, p.resumeAcked, p.resumeRead, p.resumeSkips = rs.seg.Seq, rs.acked, read, skips
}

// spoolReadFailed handles a spool segment that could not be read (the
// disk's failure, not the broker's: the producer stays healthy). The
// first failure of a segment is logged (WARN); the caller retries after
// RetryInterval. At the spoolReadAttempts-th failure in a row the segment
// is quarantined (moved aside, its undelivered events counted in
// events_dropped_total{reason="spool_read_error"}, one ERROR line; see
// [spool.Spool.Quarantine]) and delivery goes on with the next segment. It
// reports whether the caller must wait before retrying.
func (p *Producer) spoolReadFailed(e *spoolReadError) (wait bool) {
	if e.seg.Seq != p.readFailSeq {
		p.readFailSeq, p.readFails = e.seg.Seq, 0
	}
	p.readFails++
	if p.readFails < spoolReadAttempts {
		if p.readFails == 1 {
			p.log.Warn("kafka: a spool segment cannot be read; retrying", "segment", e.seg.Path,
				"err", errText(e.err), "attempts", spoolReadAttempts, "retry_interval", p.cfg.RetryInterval)
		}
		return true
	}
	var delivered, skips int64
	if p.resumeSeq == e.seg.Seq {
		// Undecodable records read past the acknowledged ones were
		// counted (spool_corrupt) when read.
		delivered, skips = p.resumeAcked, p.resumeSkips
	}
	p.spool.Quarantine(e.seg, delivered+skips, e.err)
	if p.resumeSeq == e.seg.Seq {
		p.resumeSeq, p.resumeAcked, p.resumeRead, p.resumeSkips = 0, 0, 0, 0
	}
	p.readFailSeq, p.readFails = 0, 0
	return false
}

// outageQueue is the queue the delivery goroutine spools from while it
// cannot send: the queue in memory mode; nil (never ready) in disk mode,
// where the queue holds only events the spool refused (a full disk), which
// must wait there, in memory, for Kafka rather than be refused again and
// lost. When they fill it, enqueue counts the overflow as lost.
func (p *Producer) outageQueue() <-chan queued {
	if p.disk {
		return nil
	}
	return p.queue
}

// waitRetry waits for the retry timer (reset to RetryInterval), spooling
// what the queue receives meanwhile (memory mode; see outageQueue), or
// until Run must stop.
func (p *Producer) waitRetry(ctx context.Context, retry *time.Timer) {
	retry.Reset(p.cfg.RetryInterval)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case q := <-p.outageQueue():
			p.spoolMessages(p.drainQueue(q.message()))
		case <-retry.C:
			return
		}
	}
}

func (p *Producer) endReplay() {
	if p.replay != nil {
		p.replay.r.Close()
		p.replay = nil
	}
}

// probe checks that the broker answers and the topic has partitions,
// creating the topic when configured to. It updates the state and logs
// transitions.
//
// The probe is a real round trip: kafka-go's transports answer metadata
// requests from a cache (refreshed in the background, and kept when a
// refresh fails), which said "healthy" every other interval while the
// broker was dead. Dropping the probe client's connection pools first
// makes its metadata request go to a broker. After a successful probe the
// writer's pools are dropped too, so its first write does not fail on a
// cached error from the outage.
func (p *Producer) probe(ctx context.Context) bool {
	resetTransport(p.client.Transport)
	err := p.checkTopic(ctx)
	if err != nil && p.cfg.CreateTopic && errors.Is(err, errNoTopic) {
		if err = p.CreateTopic(ctx); err == nil {
			err = p.checkTopic(ctx)
		}
	}
	if err != nil {
		p.m.brokerErrors.Inc()
		p.setDegraded(err)
		return false
	}
	if p.state.Load() != stateHealthy {
		resetTransport(p.wt.Transport)
	}
	p.setHealthy()
	return true
}

// resetTransport drops a kafka-go transport's connection pools and with them
// its cached cluster metadata: its next request dials a broker. Only for a
// transport with no request in flight.
func resetTransport(rt kafkago.RoundTripper) {
	if t, ok := rt.(*kafkago.Transport); ok {
		t.CloseIdleConnections()
	}
}

func (p *Producer) checkTopic(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	md, err := p.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{p.cfg.Topic}})
	if err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	for _, t := range md.Topics {
		if t.Name != p.cfg.Topic {
			continue
		}
		if errors.Is(t.Error, kafkago.UnknownTopicOrPartition) {
			return fmt.Errorf("%w: %s", errNoTopic, p.cfg.Topic)
		}
		if t.Error != nil {
			return fmt.Errorf("kafka metadata for topic %s: %w", p.cfg.Topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return fmt.Errorf("kafka topic %s: %w", p.cfg.Topic, errNoBrokers)
		}
		return nil
	}
	return fmt.Errorf("%w: %s", errNoTopic, p.cfg.Topic)
}

// CreateTopic creates the topic with the configured partitions and
// replication factor; an existing topic is not an error. It blocks for at
// most WriteTimeout.
func (p *Producer) CreateTopic(ctx context.Context) error {
	return CreateTopic(ctx, p.client, p.cfg.Topic, p.cfg.Partitions, p.cfg.ReplicationFactor)
}

// CreateTopic creates topic through c (whose Addr is a bootstrap broker);
// an existing topic is not an error. replicationFactor -1 takes the
// broker's default.
func CreateTopic(ctx context.Context, c *kafkago.Client, topic string, partitions, replicationFactor int) error {
	resp, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: replicationFactor}},
	})
	if err != nil {
		return fmt.Errorf("creating kafka topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("creating kafka topic %s: %w", topic, err)
	}
	return nil
}

func (p *Producer) setDegraded(err error) {
	if p.state.Swap(stateDegraded) != stateDegraded {
		p.m.degraded.Set(1)
		p.log.Warn("kafka unavailable: sink degraded, events go to the spool", "err", errText(err), "spool_dir", p.cfg.SpoolDir)
	}
}

func (p *Producer) setHealthy() {
	switch p.state.Swap(stateHealthy) {
	case stateDegraded:
		p.m.degraded.Set(0)
		p.log.Info("kafka reachable again: sink recovered, replaying the spool", "spooled_events", p.spool.Records())
	case stateUnknown:
		p.log.Info("kafka connected", "brokers", p.cfg.Brokers, "spooled_events", p.spool.Records())
	}
}

// spoolMessages appends messages to the spool in one write; a refused
// write is logged and its events counted as dropped.
func (p *Producer) spoolMessages(msgs []kafkago.Message) {
	if len(msgs) == 0 {
		return
	}
	payloads := make([][]byte, len(msgs))
	for i := range msgs {
		payloads[i] = appendMessage(nil, &msgs[i])
	}
	n, err := p.spool.Append(payloads...)
	p.m.spooled.Add(float64(n))
	if err != nil {
		p.m.dropped.WithLabelValues("spool_error").Add(float64(len(msgs) - n))
		lost := p.lostUnlogged.Add(int64(len(msgs) - n))
		if p.logLimited(lossLine, "events", lost, "err", errText(err)) {
			p.lostUnlogged.Add(-lost)
		}
	}
}

// lossLine is the log message of events the spool refused; its "events"
// are those lost since the previous such line, so that the lines add up
// to originlens_kafka_events_dropped_total{reason="spool_error"}.
const lossLine = "kafka: the spool refused events; they are lost"

// logLimited logs an error line at most once a second, and reports
// whether it did.
func (p *Producer) logLimited(msg string, args ...any) bool {
	now := time.Now().UnixNano()
	last := p.lastLog.Load()
	if now-last < int64(time.Second) || !p.lastLog.CompareAndSwap(last, now) {
		return false
	}
	p.log.Error(msg, args...)
	return true
}

// Close flushes the queue to Kafka (when it is reachable and the spool is
// empty) or to the spool, fsyncs and closes the spool and the Kafka
// connections. It stops Run and waits for it; when ctx expires first, the
// batch in flight is cancelled and spooled. Publish after Close drops. Only
// the first call does the work; later calls return its result.
func (p *Producer) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Producer) close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.disk && p.started.Load() {
		// Deliver what the spool holds while Kafka takes it; before the
		// first probe has answered, wait for its answer (within ctx).
		close(p.flush)
	flush:
		for p.spool.Pending() && p.state.Load() != stateDegraded {
			select {
			case <-ctx.Done():
				break flush
			case <-p.runDone:
				break flush
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	close(p.stop)
	if p.started.Load() {
		select {
		case <-p.runDone:
		case <-ctx.Done():
			close(p.abort)
			<-p.runDone
		}
	}
	p.endReplay()

	msgs := p.drainQueue()
	if len(msgs) > 0 {
		if p.state.Load() == stateHealthy && p.spool.Records() == 0 && ctx.Err() == nil {
			for len(msgs) > 0 {
				n := min(len(msgs), p.cfg.BatchSize)
				if err := p.sendLive(ctx, msgs[:n]); err != nil {
					p.spoolMessages(msgs[n:])
					break
				}
				msgs = msgs[n:]
			}
		} else {
			p.spoolMessages(msgs)
		}
	}
	var errs []error
	if err := p.spool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing kafka spool: %w", err))
	}
	if err := p.writer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing kafka writer: %w", err))
	}
	for _, c := range []*kafkago.Client{p.client} {
		if t, ok := c.Transport.(*kafkago.Transport); ok {
			t.CloseIdleConnections()
		}
	}
	p.wt.CloseIdleConnections()
	if n := p.lostUnlogged.Swap(0); n > 0 {
		p.log.Error(lossLine, "events", n)
	}
	if n := p.spool.Records(); n > 0 {
		p.log.Info("kafka producer closed with events in the spool; the next start replays them", "spooled_events", n)
	}
	return errors.Join(errs...)
}
