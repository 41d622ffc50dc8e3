// Package kafka publishes connection events to Kafka without ever making a
// connection wait, spooling to disk what the broker cannot take, and holds
// the Kafka connection settings (TLS, SASL SCRAM, AWS MSK IAM) that the app
// and the ingest share ([Security]).
//
// # Delivery
//
// [Producer.Publish] puts the event in a bounded in-memory queue and
// returns; when the queue is full the event is appended to the on-disk
// spool (package spool) by the caller, which costs a write(2) but never a
// broker round trip. [Producer.Run] owns the delivery goroutine: it takes
// batches of up to BatchSize events (waiting at most Linger for a batch to
// fill), and writes each with a synchronous kafka-go WriteMessages
// (acks=all, so a returned nil means every in-sync replica has it). The
// Kafka message key is the client IP (one client's events stay ordered in
// one partition), the value is the event JSON, and the header
// "schema-version" carries [event.SchemaVersion].
//
// A batch that fails (broker down, topic missing, timeout) goes to the
// spool, and the producer is degraded: every event goes to the spool and the
// broker is probed every RetryInterval. When the broker is back, the spool is
// replayed oldest segment first; while the spool holds anything, new events
// are appended behind it, so the order of the events is kept across an
// outage (except for events that overflowed the queue meanwhile). A segment
// is deleted once Kafka acknowledged every record in it. Delivery is at
// least once: a crash during a replay, or a write whose acknowledgement was
// lost, sends some events twice; every event carries its event.id, which
// makes the ingest idempotent.
//
// The spool is fsynced every FsyncInterval and on Close. Events are in the
// spool file (and so survive SIGKILL) as soon as they are written there,
// which happens at once while degraded; at most the last FsyncInterval can
// be lost on a power failure, and at most the queue plus one in-flight
// batch (bounded by WriteTimeout) if the process is killed while a broker
// write hangs. The spool is capped at SpoolMaxBytes: past it the oldest
// segments are deleted and their events counted in
// originlens_kafka_events_dropped_total{reason="spool_cap"} and logged.
//
// The spool directory defaults (SpoolDir empty) to /var/lib/originlens/spool
// when it exists or can be created and is writable, else ./spool under the
// working directory (spool.DefaultDir). One process at a time may use a
// spool directory (flock on its LOCK file); a restarted process replays what
// the previous one left.
//
// # Metrics
//
// All prefixed originlens_kafka_: events_queued_total, events_sent_total
// (live, acknowledged), events_spooled_total, events_replayed_total
// (acknowledged from the spool), events_dropped_total{reason}, with reason
// spool_cap, spool_corrupt, spool_error (the disk refused the write),
// encode or closed (published after Close); queue_depth, spool_bytes,
// spool_records, broker_errors_total, degraded (0 or 1).
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
	DefaultBuffer        = BufferMemory
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
