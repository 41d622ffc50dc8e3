package heatmap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// udpEvent is ev for a UDP flow.
func udpEvent(tb testing.TB, iso, name string, lat, lon float64) *event.Event {
	e := ev(tb, iso, name, lat, lon, event.ActionClosed, "serve")
	e.Network.Transport = event.TransportUDP
	return e
}

// TestAggregatorByTransport: TCP connections and UDP flows are counted side
// by side, and each transport alone has its own cells, table and totals.
func TestAggregatorByTransport(t *testing.T) {
	a := heatmap.NewAggregator()
	a.Add(ev(t, "DE", "Germany", 52.5, 13.4, event.ActionClosed, "serve"))
	a.Add(ev(t, "DE", "Germany", 52.5, 13.4, event.ActionDenied, "deny"))
	a.Add(udpEvent(t, "BR", "Brazil", -23.5, -46.6))
	a.Add(udpEvent(t, "BR", "Brazil", -23.5, -46.6))
	a.Add(udpEvent(t, "JP", "Japan", 35.7, 139.7))
	all := snapshot(t, a)
	if all.Totals.Events != 5 || all.Totals.TCP != 2 || all.Totals.UDP != 3 {
		t.Errorf("all: totals %+v, want 5 events, 2 tcp, 3 udp", all.Totals)
	}
	u, err := a.SnapshotTransport(context.Background(), "udp")
	if err != nil {
		t.Fatal(err)
	}
	if u.Totals.Events != 3 || u.Totals.UDP != 3 || u.Totals.TCP != 0 || len(u.Cells) != 2 || len(u.Countries) != 2 || u.Countries[0].ISO != "BR" {
		t.Errorf("udp: %+v", u)
	}
	tc, _ := a.SnapshotTransport(context.Background(), "tcp")
	if tc.Totals.Events != 2 || tc.Totals.Denied != 1 || len(tc.Countries) != 1 || tc.Countries[0].ISO != "DE" {
		t.Errorf("tcp: %+v", tc)
	}
	if other, _ := a.SnapshotTransport(context.Background(), "sctp"); other.Totals.Events != 0 {
		t.Errorf("sctp: %+v, want nothing", other.Totals)
	}
}

type plainSource struct{}

func (plainSource) Snapshot(context.Context) (heatmap.Snapshot, error) {
	return heatmap.Snapshot{Source: "plain"}, nil
}

// TestHandlerTransport: /api/heatmap?transport=udp answers the UDP flows
// only; an unknown transport, or a source that cannot filter, is a 400.
func TestHandlerTransport(t *testing.T) {
	a := heatmap.NewAggregator()
	a.Add(ev(t, "DE", "Germany", 52.5, 13.4, event.ActionClosed, "serve"))
	a.Add(udpEvent(t, "BR", "Brazil", -23.5, -46.6))
	srv := httptest.NewServer(heatmap.Handler(heatmap.Fallback(a, a)))
	defer srv.Close()
	plain := httptest.NewServer(heatmap.Handler(plainSource{}))
	defer plain.Close()
	get := func(url string) (int, heatmap.Snapshot) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s heatmap.Snapshot
		json.NewDecoder(resp.Body).Decode(&s)
		return resp.StatusCode, s
	}
	if code, s := get(srv.URL + "/api/heatmap?transport=udp"); code != 200 || s.Totals.Events != 1 || s.Totals.UDP != 1 || s.Countries[0].ISO != "BR" {
		t.Errorf("?transport=udp: %d %+v", code, s)
	}
	if code, s := get(srv.URL + "/api/heatmap"); code != 200 || s.Totals.Events != 2 || s.Totals.TCP != 1 || s.Totals.UDP != 1 {
		t.Errorf("no filter: %d %+v", code, s.Totals)
	}
	if code, _ := get(srv.URL + "/api/heatmap?transport=sctp"); code != http.StatusBadRequest {
		t.Errorf("?transport=sctp: %d, want 400", code)
	}
	if code, _ := get(plain.URL + "/api/heatmap?transport=udp"); code != http.StatusBadRequest {
		t.Errorf("a source without the filter, ?transport=udp: %d, want 400", code)
	}
}

// TestOpenSearchSourceByTransport indexes TCP and UDP events into the
// stand-in and filters the aggregation by network.transport.
func TestOpenSearchSourceByTransport(t *testing.T) {
	st := opensearchtest.NewServer()
	defer st.Close()
	var bulk bytes.Buffer
	ts := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	for i := range 6 {
		e := opensearchtest.SampleEvent(i, ts)
		if i >= 4 {
			e = opensearchtest.SampleUDPEvent(i, ts)
		}
		b, _ := e.Marshal()
		fmt.Fprintf(&bulk, `{"index":{"_index":"conn-events-2026.12.03","_id":%q}}`+"\n%s\n", e.Event.ID, b)
	}
	resp, err := http.Post(st.URL+"/_bulk", "application/x-ndjson", &bulk)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bulk: %v %v", err, resp)
	}
	resp.Body.Close()
	client, err := opensearchapi.NewClient(opensearchapi.Config{Client: opensearch.Config{Addresses: []string{st.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	src := heatmap.NewOpenSearchSource(client, heatmap.OpenSearchConfig{Window: 24 * 365 * time.Hour})
	all, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if all.Totals.Events != 6 || all.Totals.TCP != 4 || all.Totals.UDP != 2 {
		t.Errorf("all: %+v, want 6 events, 4 tcp, 2 udp", all.Totals)
	}
	u, err := src.SnapshotTransport(context.Background(), "udp")
	if err != nil {
		t.Fatal(err)
	}
	if u.Totals.Events != 2 || u.Totals.UDP != 2 || u.Totals.TCP != 0 {
		t.Errorf("udp: %+v, want the 2 UDP flows", u.Totals)
	}
}
