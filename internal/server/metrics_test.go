package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// series returns the value of each series of the named metric in reg, by
// its label values joined with commas.
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key string
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetValue()
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// TestMetricsConnCache: the cached children count the same series as
// CounterVec.WithLabelValues would, one per distinct label set.
func TestMetricsConnCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	calls := []connLabels{
		{"connection-closed", "served", "proxy-v2"},
		{"connection-closed", "served", "proxy-v2"},
		{"connection-closed", "served", "direct"},
		{"connection-denied", "denied", "proxy-v2"},
		{"connection-closed", "served", "proxy-v2"},
	}
	for _, c := range calls {
		m.conn(c.action, c.reason, c.via)
	}
	m.headerError("spoof")
	m.headerError("spoof")
	m.headerError("novel")
	// Labels are gathered in name order: action, reason, via.
	want := map[string]float64{
		"connection-closed,served,proxy-v2": 3,
		"connection-closed,served,direct":   1,
		"connection-denied,denied,proxy-v2": 1,
	}
	if diff := cmp.Diff(want, series(t, reg, "originlens_connections_total")); diff != "" {
		t.Errorf("originlens_connections_total (-want +got):\n%s", diff)
	}
	got := series(t, reg, "originlens_proxy_header_errors_total")
	if got["spoof"] != 2 || got["novel"] != 1 || got["crc"] != 0 {
		t.Errorf("originlens_proxy_header_errors_total = %v, want spoof 2, novel 1, crc 0", got)
	}
}

func BenchmarkMetricsConn(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.conn("connection-closed", "served", "proxy-v2")
		}
	})
	b.Run("WithLabelValues", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.conns.WithLabelValues("connection-closed", "served", "proxy-v2").Inc()
		}
	})
}
