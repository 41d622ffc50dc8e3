package server

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	conns      *prometheus.CounterVec
	headerErrs *prometheus.CounterVec
	open       prometheus.Gauge
	upstream   *prometheus.CounterVec

	// The children of conns resolved so far, so that ending a connection
	// costs a map lookup instead of CounterVec.WithLabelValues (validating
	// and hashing the label values, locking the vector). The label values
	// are a small closed set (action x reason x via); children are created
	// on first use, so /metrics shows only the series that occurred.
	connsMu   sync.RWMutex
	connsSeen map[connLabels]prometheus.Counter
	// headerErrs' children, one per kind, resolved at start.
	headerKinds map[string]prometheus.Counter
}

// connLabels are the label values of originlens_connections_total.
type connLabels struct{ action, reason, via string }

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
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_relay_upstream_errors_total",
			Help: "Relay mode: upstream dials that failed, by result (upstream-refused, upstream-unreachable); the client was closed at once.",
		}, []string{"result"}),
	}
	m.connsSeen = make(map[connLabels]prometheus.Counter)
	m.headerKinds = make(map[string]prometheus.Counter)
	for _, k := range []string{"spoof", "missing", "malformed", "crc", "empty", "timeout", "io"} {
		m.headerKinds[k] = m.headerErrs.WithLabelValues(k)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.headerErrs, m.open, m.upstream} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("server: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// registerParked registers originlens_parked_connections, read from n (the
// server's count of parked connections) at each scrape, so that parking
// costs no metric update. A nil reg registers nothing.
func registerParked(reg prometheus.Registerer, n *atomic.Int64) error {
	if reg == nil {
		return nil
	}
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "originlens_parked_connections",
		Help: "Connections waiting for the client's bytes without a goroutine (before the first byte, or between lines).",
	}, func() float64 { return float64(n.Load()) })
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("server: registering metrics: %w", err)
	}
	return nil
}

// conn counts an ended connection. It is safe for concurrent use.
func (m *metrics) conn(action, reason, via string) {
	k := connLabels{action, reason, via}
	m.connsMu.RLock()
	c, ok := m.connsSeen[k]
	m.connsMu.RUnlock()
	if !ok {
		c = m.conns.WithLabelValues(action, reason, via)
		m.connsMu.Lock()
		m.connsSeen[k] = c
		m.connsMu.Unlock()
	}
	c.Inc()
}

// headerError counts a PROXY header error. It is safe for concurrent use.
func (m *metrics) headerError(kind string) {
	if c, ok := m.headerKinds[kind]; ok {
		c.Inc()
		return
	}
	m.headerErrs.WithLabelValues(kind).Inc()
}

// upstreamError counts a failed upstream dial. It is safe for concurrent use.
func (m *metrics) upstreamError(result string) { m.upstream.WithLabelValues(result).Inc() }
