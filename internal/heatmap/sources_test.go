package heatmap_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// mixedEvents are decided connections in several countries over TCP and
// UDP, unplaced clients, and refused connections, some of those with a
// country (a public peer that sent a spoofed header).
func mixedEvents(tb testing.TB) []*event.Event {
	tb.Helper()
	var out []*event.Event
	add := func(n int, transport string, e func() *event.Event) {
		for range n {
			x := e()
			x.Network.Transport = transport
			x.Source.IP = netip.AddrFrom4([4]byte{203, 0, 113, byte(len(out))})
			x.Destination.IP = netip.MustParseAddr("198.51.100.10")
			x.ClientIP.Peer.IP = netip.MustParseAddr("192.0.2.7")
			out = append(out, x)
		}
	}
	add(5, "tcp", func() *event.Event { return ev(tb, "US", "United States", 40.71, -74.00, event.ActionClosed, "serve") })
	add(3, "udp", func() *event.Event { return ev(tb, "US", "United States", 40.71, -74.00, event.ActionClosed, "serve") })
	add(4, "tcp", func() *event.Event { return ev(tb, "DE", "Germany", 52.52, 13.40, event.ActionClosed, "redirect") })
	add(2, "udp", func() *event.Event { return ev(tb, "KP", "North Korea", 39.03, 125.75, event.ActionDenied, "deny") })
	add(3, "tcp", func() *event.Event { return ev(tb, "NZ", "New Zealand", -41.29, 174.78, event.ActionClosed, "serve") })
	add(2, "tcp", func() *event.Event { return ev(tb, "", "", 0, 0, event.ActionClosed, "serve") })            // unplaced
	add(1, "udp", func() *event.Event { return ev(tb, "", "", 0, 0, event.ActionDenied, "deny") })             // unplaced
	add(6, "tcp", func() *event.Event { return ev(tb, "", "", 0, 0, event.ActionRefused, "") })                // spoofs
	add(2, "tcp", func() *event.Event { return ev(tb, "FR", "France", 48.85, 2.35, event.ActionRefused, "") }) // refused, placed peer
	return out
}

// indexEvents writes the events into the stand-in as cmd/ingest does:
// the index template first, then one _bulk.
func indexEvents(tb testing.TB, srv *opensearchtest.Server, events []*event.Event) {
	tb.Helper()
	do := func(method, path, ctype string, body []byte) {
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || bytes.Contains(b, []byte(`"errors":true`)) {
			tb.Fatalf("%s %s = %s %.2000s", method, path, res.Status, b)
		}
	}
	do(http.MethodPut, "/_index_template/conn-events", "application/json", opensearchassets.IndexTemplate)
	var bulk []byte
	for i, e := range events {
		bulk = fmt.Appendf(bulk, `{"create":{"_index":"conn-events-2026.11.27","_id":"e%d"}}`+"\n", i)
		var err error
		if bulk, err = e.AppendJSON(bulk); err != nil {
			tb.Fatal(err)
		}
		bulk = append(bulk, '\n')
	}
	do(http.MethodPost, "/_bulk?refresh=true", "application/x-ndjson", bulk)
	if n := srv.Count("conn-events-*"); n != len(events) {
		tb.Fatalf("stand-in holds %d documents, want %d", n, len(events))
	}
}

// cellSums adds up the cells: the grids differ (1° cells in memory,
// geotiles in OpenSearch), the counts per decision must not.
func cellSums(cells []heatmap.Cell) (n int64, d heatmap.Decisions) {
	for _, c := range cells {
		n += c.Count
		d.Serve += c.Decisions.Serve
		d.Redirect += c.Decisions.Redirect
		d.Deny += c.Decisions.Deny
	}
	return n, d
}

// TestSourcesAgree: the in-memory aggregation and the OpenSearch
// aggregation of the same events give the same counters, country table and
// decisions per layer, with and without a transport filter; refused
// connections are never unplaced, and the table plus the unplaced are
// exactly the decided connections.
func TestSourcesAgree(t *testing.T) {
	events := mixedEvents(t)
	mem := heatmap.NewAggregator()
	for _, e := range events {
		mem.Add(e)
	}
	srv := opensearchtest.NewServer()
	defer srv.Close()
	indexEvents(t, srv, events)
	client, err := opensearchapi.NewClient(opensearchapi.Config{Client: opensearch.Config{Addresses: []string{srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	osrc := heatmap.NewOpenSearchSource(client, heatmap.OpenSearchConfig{})

	for _, tt := range []struct {
		transport string
		want      heatmap.Totals
	}{
		{"", heatmap.Totals{Events: 28, Served: 13, Redirected: 4, Denied: 3, Refused: 8, Located: 17, Unplaced: 3}},
		{"tcp", heatmap.Totals{Events: 22, Served: 10, Redirected: 4, Refused: 8, Located: 12, Unplaced: 2}},
		{"udp", heatmap.Totals{Events: 6, Served: 3, Denied: 3, Located: 5, Unplaced: 1}},
	} {
		t.Run("transport="+tt.transport, func(t *testing.T) {
			f := heatmap.Filter{Transport: tt.transport}
			m := snapshotOf(t, mem, f)
			o, err := osrc.Snapshot(context.Background(), f)
			if err != nil {
				t.Fatalf("OpenSearch Snapshot() error = %v (stand-in unhandled: %v)", err, srv.Unhandled())
			}
			for _, s := range []heatmap.Snapshot{m, o} {
				if diff := cmp.Diff(tt.want, s.Totals); diff != "" {
					t.Errorf("%s totals (-want +got):\n%s", s.Source, diff)
				}
				if s.Transport != tt.transport {
					t.Errorf("%s Transport = %q, want %q", s.Source, s.Transport, tt.transport)
				}
				var placed int64
				for _, c := range s.Countries {
					placed += c.Count
				}
				if decided := s.Totals.Served + s.Totals.Redirected + s.Totals.Denied; placed+s.Totals.Unplaced != decided {
					t.Errorf("%s: countries %d + unplaced %d != decided %d", s.Source, placed, s.Totals.Unplaced, decided)
				}
				n, d := cellSums(s.Cells)
				if n != s.Totals.Located || d.Serve+d.Redirect+d.Deny != n {
					t.Errorf("%s: cells hold %d (%+v), want located %d split by decision", s.Source, n, d, s.Totals.Located)
				}
			}
			if diff := cmp.Diff(m.Countries, o.Countries); diff != "" {
				t.Errorf("countries memory vs opensearch (-memory +opensearch):\n%s", diff)
			}
			_, dm := cellSums(m.Cells)
			_, do := cellSums(o.Cells)
			if dm != do {
				t.Errorf("cell decisions memory %+v, opensearch %+v", dm, do)
			}
		})
	}
	if u := srv.Unhandled(); len(u) > 0 {
		t.Errorf("the stand-in could not answer: %v", u)
	}
}

// TestHandlerTransportFilter: /api/heatmap?transport= selects, and a bad
// value is a 400 naming it.
func TestHandlerTransportFilter(t *testing.T) {
	mem := heatmap.NewAggregator()
	for _, e := range mixedEvents(t) {
		mem.Add(e)
	}
	hs := httptest.NewServer(heatmap.Handler(mem))
	defer hs.Close()
	srv := hs.URL
	for q, want := range map[string]string{
		"":               `"events":28,`,
		"?transport=tcp": `"events":22,`,
		"?transport=udp": `"events":6,`,
	} {
		res, body := get(t, srv+"/api/heatmap"+q)
		if res.StatusCode != http.StatusOK || !bytes.Contains([]byte(body), []byte(want)) {
			t.Errorf("GET /api/heatmap%s = %d %s, want %s", q, res.StatusCode, body, want)
		}
	}
	res, body := get(t, srv+"/api/heatmap?transport=sctp")
	if res.StatusCode != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte("sctp")) {
		t.Errorf("GET /api/heatmap?transport=sctp = %d %s, want 400 naming the value", res.StatusCode, body)
	}
}
