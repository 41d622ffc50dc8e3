// Package kafka publishes connection events to Kafka without ever making a
// connection wait, spooling to disk what the broker cannot take, and holds
// the Kafka connection settings (TLS, SASL SCRAM, AWS MSK IAM) that the app
// and the ingest share.
//
// CONTRACT STUB: the signatures below are the contract cmd/app and
// cmd/ingest build against; the implementation is issue #4's.
package kafka

import (
	"context"
	"log/slog"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/prometheus/client_golang/prometheus"
)

// Security holds how to reach a broker: TLS and SASL.
type Security struct {
	TLS       bool   // --kafka-tls
	CAFile    string // --kafka-ca-file; empty: system roots
	SASL      string // "", "scram-sha-512" or "aws-msk-iam"
	Username  string // SCRAM
	Password  string // SCRAM
	AWSRegion string // MSK IAM; empty: from the default AWS config chain
}

// ProducerConfig configures a [Producer].
type ProducerConfig struct {
	Brokers           []string
	Topic             string // default "conn-events"
	Security          Security
	BatchSize         int           // records per batch
	Linger            time.Duration // batch timeout
	Compression       string        // "zstd" (default), "lz4", "none"
	QueueSize         int           // bounded in-memory queue; full: spool
	SpoolDir          string
	SpoolMaxBytes     int64
	FsyncInterval     time.Duration
	CreateTopic       bool
	Partitions        int
	ReplicationFactor int
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
}

// Producer publishes events asynchronously. Publish is safe for concurrent
// use and never blocks on the broker.
type Producer struct{}

// NewProducer checks the config and opens the spool. It does not contact the
// broker; Run does.
func NewProducer(cfg ProducerConfig) (*Producer, error) { return &Producer{}, nil }

// Publish queues one event; when the queue is full it goes to the spool.
func (p *Producer) Publish(ev event.Event) {}

// Run delivers queued and spooled events until ctx is done. It blocks.
func (p *Producer) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Close flushes the queue to Kafka or the spool, fsyncs and closes. It
// blocks until done or ctx expires.
func (p *Producer) Close(ctx context.Context) error { return nil }

// Degraded reports whether events are currently going to the spool.
func (p *Producer) Degraded() bool { return false }
