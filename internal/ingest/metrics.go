package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus metrics.
type Metrics struct {
	Fetched       prometheus.Counter
	Indexed       prometheus.Counter
	Duplicates    prometheus.Counter
	Retried       *prometheus.CounterVec // by reason: rejected (429/5xx), blocked, request
	DeadLettered  *prometheus.CounterVec // by reason: invalid, mapping
	BulkRequests  *prometheus.CounterVec // by outcome
	BulkDuration  prometheus.Histogram
	BulkDocs      prometheus.Histogram
	Lag           *prometheus.GaugeVec // by topic, partition
	InFlightBytes prometheus.Gauge
	WriteBlocked  prometheus.Gauge
	KafkaUp       prometheus.Gauge // set by BrokerCheck
	Commits       prometheus.Counter
	CommitErrors  prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Fetched:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_messages_fetched_total", Help: "Kafka messages fetched."}),
		Indexed:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_docs_indexed_total", Help: "Documents OpenSearch accepted (created, or already present: 409)."}),
		Duplicates:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_docs_duplicate_total", Help: "Documents answered 409 (already indexed: a redelivery)."}),
		Retried:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_docs_retried_total", Help: "Document sends that will be retried, by reason."}, []string{"reason"}),
		DeadLettered:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_docs_dead_lettered_total", Help: "Messages written to the dead-letter topic, by reason."}, []string{"reason"}),
		BulkRequests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_bulk_requests_total", Help: "Bulk requests, by outcome."}, []string{"outcome"}),
		BulkDuration:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_bulk_duration_seconds", Help: "Bulk request latency.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		BulkDocs:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_bulk_docs", Help: "Documents per bulk request.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		Lag:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ingest_consumer_lag", Help: "Messages between the last fetched offset and the partition's high watermark."}, []string{"topic", "partition"}),
		InFlightBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ingest_inflight_bytes", Help: "Bytes of fetched messages not yet acknowledged by OpenSearch or the DLQ."}),
		WriteBlocked:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "ingest_write_blocked", Help: "1 while OpenSearch refuses writes (flood-stage or read-only block, permissions): operator action needed."}),
		KafkaUp:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "ingest_kafka_reachable", Help: "1 while the last readiness probe reached a Kafka broker (a new connection and a metadata request); 0 while none answers: nothing can be consumed."}),
		Commits:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_offset_commits_total", Help: "Successful offset commits."}),
		CommitErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_offset_commit_errors_total", Help: "Failed offset commits (retried)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Fetched, m.Indexed, m.Duplicates, m.Retried, m.DeadLettered, m.BulkRequests, m.BulkDuration, m.BulkDocs, m.Lag, m.InFlightBytes, m.WriteBlocked, m.KafkaUp, m.Commits, m.CommitErrors)
	}
	return m
}
