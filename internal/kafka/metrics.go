package kafka

import (
	"github.com/originlens/originlens/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the producer's Prometheus metrics (see the package doc).
type metrics struct {
	queued, sent, spooled, replayed prometheus.Counter
	dropped                         *prometheus.CounterVec
	corruptBytes                    prometheus.Counter
	brokerErrors                    prometheus.Counter
	degraded                        prometheus.Gauge
}

// dropReasons are pre-created so that dashboards see zeros.
var dropReasons = []string{spool.LossCap, spool.LossCorrupt, spool.LossRemoved, "spool_error", "encode", "closed"}

func newMetrics(reg prometheus.Registerer, p *Producer) *metrics {
	f := promauto.With(reg)
	counter := func(name, help string) prometheus.Counter {
		return f.NewCounter(prometheus.CounterOpts{Namespace: "originlens", Subsystem: "kafka", Name: name, Help: help})
	}
	m := &metrics{
		queued:   counter("events_queued_total", "Events put in the in-memory queue by Publish (memory buffer mode, or the disk refused them)."),
		sent:     counter("events_sent_total", "Events Kafka acknowledged (acks=all): on the live path in memory buffer mode, every event in disk buffer mode."),
		spooled:  counter("events_spooled_total", "Events written to the on-disk spool: every published event in disk buffer mode."),
		replayed: counter("events_replayed_total", "Spooled events Kafka acknowledged during a replay (memory buffer mode)."),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "originlens", Subsystem: "kafka", Name: "events_dropped_total",
			Help: "Events lost: spool_cap (oldest spool segment deleted at the size cap), spool_corrupt (bad checksum or torn tail; garbled stretches of unknown count are in spool_corrupt_bytes_total instead), spool_removed (a spool segment file deleted by someone else that the spool did not hold open), spool_error (the disk or a missing spool directory refused the write), spool_read_error (a spool segment the disk could not read, moved aside after 3 attempts), encode, closed (published after Close).",
		}, []string{"reason"}),
		corruptBytes: counter("spool_corrupt_bytes_total", "Bytes of damaged spool stretches skipped whose number of events cannot be known (those events are not in events_dropped_total)."),
		brokerErrors: counter("broker_errors_total", "Failed batch writes and broker probes."),
		degraded: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "originlens", Subsystem: "kafka", Name: "degraded",
			Help: "1 while events go to the spool because Kafka is unavailable.",
		}),
	}
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(r)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "originlens", Subsystem: "kafka", Name: "queue_depth",
		Help: "Events waiting in the in-memory queue.",
	}, func() float64 { return float64(len(p.queue)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "originlens", Subsystem: "kafka", Name: "spool_bytes",
		Help: "Bytes of the on-disk spool.",
	}, func() float64 {
		if p.spool == nil {
			return 0
		}
		return float64(p.spool.Bytes())
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "originlens", Subsystem: "kafka", Name: "spool_records",
		Help: "Events waiting in the on-disk spool.",
	}, func() float64 {
		if p.spool == nil {
			return 0
		}
		return float64(p.spool.Records())
	})
	return m
}
