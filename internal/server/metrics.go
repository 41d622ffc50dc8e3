package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	conns      *prometheus.CounterVec
	headerErrs *prometheus.CounterVec
	open       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_connections_total",
			Help: "Ended connections by event.action, reason (denied:<rule> counted as denied) and how the client address was learnt (via).",
		}, []string{"action", "reason", "via"}),
		headerErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_proxy_header_errors_total",
			Help: "Connections whose origin could not be resolved, by kind: spoof, missing, malformed, crc, empty, timeout, io.",
		}, []string{"kind"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "originlens_open_connections",
			Help: "Connections accepted and not yet ended.",
		}),
	}
	for _, k := range []string{"spoof", "missing", "malformed", "crc", "empty", "timeout", "io"} {
		m.headerErrs.WithLabelValues(k)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.headerErrs, m.open} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("server: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) conn(action, reason, via string) {
	m.conns.WithLabelValues(action, reason, via).Inc()
}

func (m *metrics) headerError(kind string) {
	m.headerErrs.WithLabelValues(kind).Inc()
}
