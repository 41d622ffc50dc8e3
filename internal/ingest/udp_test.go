package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/ingest"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// TestPipelineUDPFlows streams TCP connection events and UDP flow events
// through Kafka and the ingest into the stand-in with the real (strict)
// template: every UDP event is indexed with its own fields (packets each
// way, flow.*), and a search by network.transport, as the dashboards' filter
// runs it, splits UDP from TCP.
func TestPipelineUDPFlows(t *testing.T) {
	e := newEnv(t, 2)
	const n = 40
	ts := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	udp := map[string]event.Event{}
	for i := range n {
		if i%2 == 0 {
			recs = append(recs, eventRecord(t, opensearchtest.SampleEvent(i, ts)))
			continue
		}
		ev := opensearchtest.SampleUDPEvent(i, ts)
		ev.Source.Packets, ev.Destination.Packets, ev.Flow.RateLimited = int64(i), int64(i-1), int64(i%3)
		udp[ev.Event.ID] = ev
		recs = append(recs, eventRecord(t, ev))
	}
	e.produce(t, recs...)

	r := e.reader()
	defer r.Close()
	w := e.dlqWriter()
	defer w.Close()
	p := ingest.New(ingest.Config{FlushInterval: 50 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: testLogger(t), Metrics: ingest.NewMetrics(nil)}, r, e.os, w, &countingSink{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "every event indexed", 60*time.Second, func() bool { return e.srv.Count("conn-events-*") >= n })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}

	for id, want := range udp {
		b, ok := e.srv.Doc("conn-events-2026.12.03", id)
		if !ok {
			t.Errorf("UDP event %s not indexed", id)
			continue
		}
		got, err := event.Parse(b)
		if err != nil {
			t.Fatalf("indexed %s: %v", b, err)
		}
		if got.Network.Transport != event.TransportUDP || got.Source.Packets != want.Source.Packets ||
			got.Destination.Packets != want.Destination.Packets || got.Flow != want.Flow {
			t.Errorf("indexed %s: transport %s packets %d/%d flow %+v; want udp %d/%d %+v", id, got.Network.Transport,
				got.Source.Packets, got.Destination.Packets, got.Flow, want.Source.Packets, want.Destination.Packets, want.Flow)
		}
	}

	// The dashboards' transport split and filter.
	body := `{"size":0,"query":{"term":{"network.transport":"udp"}},"aggs":{"t":{"terms":{"field":"network.transport"}}}}`
	resp, err := http.Post(e.srv.URL+"/conn-events-*/_search", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Hits struct {
			Total struct{ Value int } `json:"total"`
		} `json:"hits"`
		Aggregations struct {
			T struct {
				Buckets []struct {
					Key      string `json:"key"`
					DocCount int    `json:"doc_count"`
				} `json:"buckets"`
			} `json:"t"`
		} `json:"aggregations"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if b := out.Aggregations.T.Buckets; out.Hits.Total.Value != len(udp) || len(b) != 1 || b[0].Key != "udp" || b[0].DocCount != len(udp) {
		t.Errorf("search network.transport=udp: %d hits, buckets %+v; want %d, all udp", out.Hits.Total.Value, b, len(udp))
	}
}
