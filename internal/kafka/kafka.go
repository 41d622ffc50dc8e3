// Package kafka publishes connection events to Kafka without ever making a
// connection wait, spooling to disk what the broker cannot take, and holds
// the Kafka connection settings (TLS, SASL SCRAM, AWS MSK IAM) that the app
// and the ingest share ([Security]).
//
// # Delivery
//
// Two buffer modes ([ProducerConfig.Buffer], the app's --kafka-buffer)
// decide where an event waits for the broker.
//
// In disk mode (the default), [Producer.Publish] appends the event to the
// on-disk spool (package spool: one write(2) of one CRC-framed record, no
// fsync) before it returns, and every event reaches Kafka through the
// spool: [Producer.Run] owns the delivery goroutine, which lets a batch
// gather in the spool's active segment (up to BatchSize events or Linger),
// seals it (one fsync per batch: a group commit), writes its records to
// Kafka and deletes the segment once Kafka acknowledged all of them. In
// memory mode, Publish puts the event in a bounded in-memory queue; the
// delivery goroutine takes batches of up to BatchSize events (waiting at
// most Linger for a batch to fill), and only what the broker cannot take
// (or what overflows the queue, appended by the caller) goes to the spool.
//
// Either way batches are written with a synchronous kafka-go
// WriteMessages (acks=all, so a returned nil means every in-sync replica
// has it). The Kafka message key is the client IP (one client's events
// stay ordered in one partition), the value is the event JSON, and the
// header "schema-version" carries [event.SchemaVersion].
//
// A batch that fails (broker down, topic missing, timeout) goes to (or
// stays in) the spool, and the producer is degraded, logged once: every
// event goes to the spool and the broker is probed every RetryInterval.
// A probe is a metadata request that reaches a broker (not kafka-go's
// cached answer), and recovery is declared, and logged once, only when one
// succeeds. Then the spool is replayed oldest segment first; while the
// spool holds anything, new events are appended behind it, so the order of
// the events is kept across an outage (except, in memory mode, for events
// that overflowed the queue meanwhile). Delivery is at least once: a crash
// during a replay, or a write whose acknowledgement was lost, sends some
// events twice; every event carries its event.id, which makes the ingest
// idempotent.
//
// # What a crash loses
//
// "Written" means Publish returned. Disk mode: a SIGKILL (or any crash of
// the process alone) loses no written event: it is in the kernel's page
// cache, and the next start replays it. A power loss or kernel crash loses
// at most the events written since the last fsync: the spool is fsynced
// at every batch and every FsyncInterval, so at most FsyncInterval of
// events. The app publishes a connection's event right after closing the
// connection, so a connection being closed at the instant of the kill may
// have been answered without its event being written (at most one per
// connection being closed then). Memory mode: a SIGKILL loses the queue
// and the batch in flight, at most QueueSize + BatchSize events; in
// practice the events of the last Linger plus one broker round trip
// (measured: 76 of 1076 answered connections with a 500 ms linger, all of
// them when killed before the first batch left; TestKafkaSIGKILLUnderLoad).
// What it spooled (an outage, a full queue) is as safe as in disk mode.
//
// Disk mode costs 2.3-2.8 µs per Publish instead of 1.1-1.25 µs (a
// write(2) instead of a channel send; 2 allocations instead of 1), about
// half the producer's own capacity (130-163k instead of 234-323k events/s
// against the in-process broker, 9 allocations per event instead of 5),
// and about 18% of the app's peak connection rate on 2 cores (11.4-12.6k
// instead of 14.3-15.8k connections/s), which still leaves the sink 12-14
// times faster than the app (BenchmarkBuffer, BenchmarkPublish, cmd/app
// BenchmarkKafkaSinkHeadroom). It is the default because that price buys
// the statement above for every answered connection not being closed at
// the instant of the kill, where memory mode loses up to a linger's worth.
//
// The spool is capped at SpoolMaxBytes: past it the oldest segments are
// deleted and their events counted in
// originlens_kafka_events_dropped_total{reason="spool_cap"} and logged.
// Damaged spool records are skipped and counted once each (see package
// spool): in events_dropped_total{reason="spool_corrupt"} when their number
// is known, else their bytes in spool_corrupt_bytes_total. The spool holds
// its segment files open until Kafka has them, so a spool directory removed
// or replaced while serving (or a segment file unlinked) loses nothing: the
// segments are read through the open files, new ones go to a recreated
// directory (one WARN line), and a clean stop writes the removed ones back
// for the next start. What cannot be saved is counted:
// events_dropped_total{reason="spool_removed"} (a removed segment the spool
// did not hold open, or could not write back at Close), or
// {reason="spool_error"} for events refused because no directory can be
// made (after the disk mode's fallback to memory).
//
// The spool directory defaults (SpoolDir empty) to /var/lib/originlens/spool
// when it exists or can be created and is writable, else ./spool under the
// working directory (spool.DefaultDir). One process at a time may use a
// spool directory (flock on its LOCK file); a restarted process replays what
// the previous one left.
//
// # Metrics
//
// All prefixed originlens_kafka_: events_queued_total (memory mode),
// events_sent_total (acknowledged: the live path in memory mode, every
// event in disk mode), events_spooled_total (every event in disk mode),
// events_replayed_total (memory mode: acknowledged from the spool),
// events_dropped_total{reason}, with reason spool_cap, spool_corrupt,
// spool_removed (a spool segment file deleted behind the spool's back
// that it could not read or write back), spool_error (the disk, or a
// spool directory that cannot be recreated, refused the write), encode or
// closed (published after Close); spool_corrupt_bytes_total; queue_depth, spool_bytes,
// spool_records (in disk mode normally the batch being formed),
// broker_errors_total, degraded (0 or 1).
//
// # Pointing the app at Amazon MSK
//
// MSK's IAM listener is TLS on port 9098 (SCRAM is 9096, plain TLS 9094):
//
//	app --kafka-brokers b-1.xxx.kafka.eu-west-1.amazonaws.com:9098,b-2...:9098 \
//	    --kafka-tls --kafka-sasl aws-msk-iam [--kafka-aws-region eu-west-1]
//
// Credentials come from the default AWS chain (environment, shared files,
// web identity, ECS task role, EC2 instance profile); the role needs
// kafka-cluster:Connect, DescribeTopic and WriteData on the topic (plus
// CreateTopic with --kafka-create-topic). The region defaults to the AWS
// configuration's (AWS_REGION); MSK's certificates chain to public roots, so
// --kafka-ca-file is not needed.
package kafka

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Security holds how to reach a broker: TLS and SASL. Its zero value is a
// plaintext connection without authentication.
type Security struct {
	TLS       bool   // --kafka-tls
	CAFile    string // --kafka-ca-file; empty: system roots
	SASL      string // "", "none", "scram-sha-512" or "aws-msk-iam"
	Username  string // SCRAM
	Password  string // SCRAM
	AWSRegion string // MSK IAM; empty: from the default AWS config chain
}

// Defaults for the zero values of [ProducerConfig].
const (
	DefaultTopic         = "conn-events"
	DefaultBatchSize     = 1000
	DefaultLinger        = 100 * time.Millisecond
	DefaultCompression   = "lz4" // see ProducerConfig.Compression
	DefaultQueueSize     = 65536
	DefaultFsyncInterval = time.Second
	DefaultRetryInterval = 2 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	DefaultPartitions    = 6
	DefaultBuffer        = BufferDisk // see BenchmarkBuffer and the package doc
)

// Buffer modes ([ProducerConfig.Buffer]).
const (
	// BufferMemory: Publish puts the event in the in-memory queue; the
	// spool takes what Kafka cannot (outage, full queue). A SIGKILL loses
	// what the queue and the batch in flight hold.
	BufferMemory = "memory"
	// BufferDisk: Publish appends the event to the spool (one write(2))
	// before it returns, and every event reaches Kafka through the spool,
	// so a SIGKILL loses nothing Publish returned for.
	BufferDisk = "disk"
)

// ProducerConfig configures a [Producer]. Zero values take the defaults
// above.
type ProducerConfig struct {
	Brokers   []string
	Topic     string // default "conn-events"
	Security  Security
	BatchSize int           // records per batch
	Linger    time.Duration // batch timeout
	// Compression of the batches: "lz4" (default), "zstd" or "none".
	// On the app's events lz4 costs 2-3.5x less CPU than zstd (about
	// 1.1-1.7 µs instead of 2.5-5.6 µs per event) for batches 1.6-1.8x
	// larger on the wire (10% of the JSON instead of 6%, at 100-1000
	// events a batch); see BenchmarkCompression.
	Compression       string
	QueueSize         int    // bounded in-memory queue; full: spool
	SpoolDir          string // empty: spool.DefaultDir()
	SpoolMaxBytes     int64  // 0: spool.DefaultMaxBytes (1 GiB)
	FsyncInterval     time.Duration
	CreateTopic       bool
	Partitions        int // for CreateTopic; 0: DefaultPartitions
	ReplicationFactor int // for CreateTopic; 0 or -1: the broker's default
	Logger            *slog.Logger
	Registerer        prometheus.Registerer // nil: metrics are not registered

	// RetryInterval is how often a degraded producer probes the broker.
	RetryInterval time.Duration
	// WriteTimeout bounds one batch write (all retries included) and one
	// probe.
	WriteTimeout time.Duration
	// SpoolSegmentBytes is the spool's rotation size; 0: the spool's
	// default (SpoolMaxBytes/8, at most 16 MiB).
	SpoolSegmentBytes int64
	// Buffer is BufferMemory or BufferDisk (see the package doc); empty:
	// DefaultBuffer.
	Buffer string
}
