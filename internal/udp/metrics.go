package udp

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Datagram results: the result label of originlens_udp_datagrams_total.
const (
	resultAnswered    = "answered"     // a reply was sent (maybe truncated)
	resultRateLimited = "rate-limited" // over the per-source reply limit: no reply (and no new flow)
	resultFlowLimit   = "flow-limit"   // would open a flow over MaxFlowsPerSource: no reply, no flow
	resultHealthCheck = "health-check" // PROXY v2 LOCAL: no reply
	resultProxyPrefix = "proxy-"       // + origin.Kind: spoof, missing (required mode), malformed, crc: dropped
	resultWriteError  = "write-error"  // the reply could not be sent
	resultReadError   = "read-error"   // a transient socket error
	resultLoop        = "loop"         // a reply of a server like this one, or from a service port: no reply, which would start a loop
	resultTooShort    = "too-short"    // under 4 bytes: not even truncated=1 fits in 3x, and an empty reply could start a loop
)

// metrics are the UDP server's Prometheus metrics.
type metrics struct {
	datagrams *prometheus.CounterVec
	flows     *prometheus.CounterVec
	truncated prometheus.Counter
	bytesIn   prometheus.Counter
	bytesOut  prometheus.Counter
	flowsOpen prometheus.Gauge
	// earlyDrops counts the evictions that dropped a one-datagram,
	// unproven flow (see flowTable.victim); they are also in flows{evicted}.
	earlyDrops prometheus.Counter

	mu   sync.RWMutex
	seen map[string]prometheus.Counter // datagrams' children by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_udp_datagrams_total",
			Help: "Datagrams received, by result: answered, rate-limited, flow-limit (its source held --udp-max-flows-per-ip flows), health-check, proxy-<kind> (dropped: spoof, missing, malformed, crc), loop and too-short (not answered, so that two servers cannot answer each other forever), write-error, read-error.",
		}, []string{"result"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_udp_flows_total",
			Help: "UDP flows published, by end: idle-timeout, shutdown, evicted (the flow table was full: the least recently seen flow of the source holding the most flows).",
		}, []string{"end"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "originlens_udp_replies_truncated_total",
			Help: "Replies cut to 3x their datagram's payload (source not yet proven).",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "originlens_udp_received_bytes_total",
			Help: "UDP payload bytes received, PROXY headers included.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "originlens_udp_sent_bytes_total",
			Help: "UDP payload bytes sent in replies.",
		}),
		flowsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "originlens_udp_open_flows",
			Help: "UDP flows tracked now.",
		}),
		earlyDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "originlens_udp_flows_early_dropped_total",
			Help: "Flows evicted from the full flow table while no source held more than one flow: the oldest flow that had seen one datagram and not proven its source (conntrack's early drop). Also counted in originlens_udp_flows_total{end=\"evicted\"} once published.",
		}),
		seen: make(map[string]prometheus.Counter),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.datagrams, m.flows, m.truncated, m.bytesIn, m.bytesOut, m.flowsOpen, m.earlyDrops} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("udp: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// datagram counts a datagram by result. It is safe for concurrent use.
func (m *metrics) datagram(result string) {
	m.mu.RLock()
	c, ok := m.seen[result]
	m.mu.RUnlock()
	if !ok {
		c = m.datagrams.WithLabelValues(result)
		m.mu.Lock()
		m.seen[result] = c
		m.mu.Unlock()
	}
	c.Inc()
}

// flowEnded counts a published flow.
func (m *metrics) flowEnded(end string) { m.flows.WithLabelValues(end).Inc() }
