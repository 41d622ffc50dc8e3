package heatmap_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	"github.com/originlens/originlens/internal/heatmap"
)

// osResponse is a search response in OpenSearch 2.x's shape for the
// source's aggregations (key names and nesting as OpenSearch returns them).
const osResponse = `{
  "took": 3, "timed_out": false,
  "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
  "hits": {"total": {"value": 15, "relation": "eq"}, "max_score": null, "hits": []},
  "aggregations": {
    "decided": {"doc_count": 12,
      "grid": {"buckets": [
        {"key": "6/33/21", "doc_count": 5, "centroid": {"location": {"lat": 50.11, "lon": 8.68}, "count": 5},
         "decisions": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [{"key": "redirect", "doc_count": 5}]}},
        {"key": "6/10/24", "doc_count": 3, "centroid": {"location": {"lat": 37.75, "lon": -122.42}, "count": 3},
         "decisions": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [{"key": "serve", "doc_count": 3}]}},
        {"key": "6/54/24", "doc_count": 2, "centroid": {"location": {"lat": 39.03, "lon": 125.75}, "count": 2},
         "decisions": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [{"key": "deny", "doc_count": 2}]}}
      ]},
      "countries": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
        {"key": "DE", "doc_count": 5,
         "decisions": {"buckets": [{"key": "redirect", "doc_count": 5}]},
         "name": {"hits": {"total": {"value": 5, "relation": "eq"}, "hits": [{"_index": "conn-events-2026.11.27", "_id": "x", "_source": {"source": {"geo": {"country_name": "Germany"}}}}]}}},
        {"key": "US", "doc_count": 3,
         "decisions": {"buckets": [{"key": "serve", "doc_count": 3}]},
         "name": {"hits": {"total": {"value": 3, "relation": "eq"}, "hits": [{"_index": "conn-events-2026.11.27", "_id": "y", "_source": {"source": {"geo": {"country_name": "United States"}}}}]}}},
        {"key": "KP", "doc_count": 2,
         "decisions": {"buckets": [{"key": "deny", "doc_count": 2}]},
         "name": {"hits": {"total": {"value": 2, "relation": "eq"}, "hits": [{"_index": "conn-events-2026.11.27", "_id": "z", "_source": {"source": {"geo": {"country_name": "North Korea"}}}}]}}}
      ]},
      "located": {"doc_count": 10},
      "placed": {"doc_count": 10}
    },
    "actions": {"buckets": [
      {"key": "connection-closed", "doc_count": 10, "decisions": {"buckets": [{"key": "redirect", "doc_count": 5}, {"key": "serve", "doc_count": 5}]}},
      {"key": "connection-refused", "doc_count": 3, "decisions": {"buckets": []}},
      {"key": "connection-denied", "doc_count": 2, "decisions": {"buckets": [{"key": "deny", "doc_count": 2}]}}
    ]}
  }
}`

func TestOpenSearchSource(t *testing.T) {
	var gotPath, gotQuery string
	var gotBody map[string]any
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotQuery = r.URL.Path, r.URL.RawQuery
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &gotBody); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, osResponse)
	}))
	defer fake.Close()
	client, err := opensearchapi.NewClient(opensearchapi.Config{Client: opensearch.Config{Addresses: []string{fake.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	src := heatmap.NewOpenSearchSource(client, heatmap.OpenSearchConfig{Window: 24 * time.Hour})
	got, err := src.Snapshot(context.Background(), heatmap.Filter{})
	if err != nil {
		t.Fatalf("Snapshot() error = %v", err)
	}

	if gotPath != "/conn-events-*/_search" || !strings.Contains(gotQuery, "allow_no_indices=true") {
		t.Errorf("request %s?%s, want /conn-events-*/_search?allow_no_indices=true", gotPath, gotQuery)
	}
	// The query asks for what the page shows.
	body, _ := json.Marshal(gotBody)
	for _, want := range []string{
		`"decided":{"aggs":{`,
		`"filter":{"exists":{"field":"residency.decision"}}`,
		`"geotile_grid":{"field":"source.geo.location","precision":6,"size":10000}`,
		`"geo_centroid":{"field":"source.geo.location"}`,
		`"terms":{"field":"source.geo.country_iso_code","size":300}`,
		`"terms":{"field":"residency.decision","size":10}`,
		`"terms":{"field":"event.action","size":10}`,
		`"range":{"@timestamp":{"gte":"now-86400s"}}`,
		`"size":0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("query lacks %s:\n%s", want, body)
		}
	}

	want := heatmap.Snapshot{
		Source:      "opensearch",
		GeneratedAt: got.GeneratedAt,
		Cells: []heatmap.Cell{
			{Lat: 50.11, Lon: 8.68, Count: 5, Decisions: heatmap.Decisions{Redirect: 5}},
			{Lat: 37.75, Lon: -122.42, Count: 3, Decisions: heatmap.Decisions{Serve: 3}},
			{Lat: 39.03, Lon: 125.75, Count: 2, Decisions: heatmap.Decisions{Deny: 2}},
		},
		Countries: []heatmap.Country{
			{ISO: "DE", Name: "Germany", Count: 5, Decisions: heatmap.Decisions{Redirect: 5}},
			{ISO: "US", Name: "United States", Count: 3, Decisions: heatmap.Decisions{Serve: 3}},
			{ISO: "KP", Name: "North Korea", Count: 2, Decisions: heatmap.Decisions{Deny: 2}},
		},
		// 12 decided connections, 10 with a country: 2 unplaced; the 3
		// refused are not.
		Totals: heatmap.Totals{Events: 15, Served: 5, Redirected: 5, Denied: 2, Refused: 3, Located: 10, Unplaced: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Snapshot() (-want +got):\n%s", diff)
	}
}

func TestOpenSearchSourceErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   func(heatmap.Snapshot, error) bool
	}{
		{"no_index_yet", 200, `{"took":1,"timed_out":false,"_shards":{"total":0,"successful":0,"skipped":0,"failed":0},"hits":{"total":{"value":0,"relation":"eq"},"hits":[]}}`,
			func(s heatmap.Snapshot, err error) bool {
				return err == nil && s.Totals.Events == 0 && len(s.Cells) == 0
			}},
		{"server_error", 500, `{"error":{"type":"search_phase_execution_exception","reason":"all shards failed"},"status":500}`,
			func(_ heatmap.Snapshot, err error) bool { return err != nil }},
		{"garbage_aggs", 200, `{"hits":{"total":{"value":1}},"aggregations":{"decided":{"grid":"nope"}}}`,
			func(_ heatmap.Snapshot, err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer fake.Close()
			client, err := opensearchapi.NewClient(opensearchapi.Config{Client: opensearch.Config{Addresses: []string{fake.URL}, MaxRetries: 0, DisableRetry: true}})
			if err != nil {
				t.Fatal(err)
			}
			s, err := heatmap.NewOpenSearchSource(client, heatmap.OpenSearchConfig{}).Snapshot(context.Background(), heatmap.Filter{})
			if !tt.want(s, err) {
				t.Errorf("Snapshot() = %+v, %v", s, err)
			}
		})
	}
}

// searchFunc is a function-field fake of [heatmap.Searcher].
type searchFunc func(ctx context.Context, req *opensearchapi.SearchReq) (*opensearchapi.SearchResp, error)

func (f searchFunc) Search(ctx context.Context, req *opensearchapi.SearchReq) (*opensearchapi.SearchResp, error) {
	return f(ctx, req)
}

// FuzzOpenSearchAggregations: whatever the aggregations say, the snapshot
// has only valid positions and two-letter country codes, or is an error.
func FuzzOpenSearchAggregations(f *testing.F) {
	var full struct {
		Aggregations json.RawMessage `json:"aggregations"`
	}
	if err := json.Unmarshal([]byte(osResponse), &full); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(full.Aggregations))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"decided":{"grid":{"buckets":[{"doc_count":1,"centroid":{"location":{"lat":91,"lon":0}}}]}}}`))
	f.Add([]byte(`{"decided":{"countries":{"buckets":[{"key":"toolong","doc_count":1}]}}}`))
	f.Add([]byte(`{"decided":{"doc_count":-5,"placed":{"doc_count":9},"grid":{"buckets":[{"doc_count":1,"centroid":{"location":{"lat":1,"lon":2}},"decisions":{"buckets":[{"key":"deny","doc_count":-3}]}}]}}}`))
	f.Fuzz(func(t *testing.T, aggs []byte) {
		src := heatmap.NewOpenSearchSource(searchFunc(func(context.Context, *opensearchapi.SearchReq) (*opensearchapi.SearchResp, error) {
			r := &opensearchapi.SearchResp{Aggregations: aggs}
			r.Hits.Total.Value = 10
			return r, nil
		}), heatmap.OpenSearchConfig{})
		s, err := src.Snapshot(context.Background(), heatmap.Filter{})
		if err != nil {
			return
		}
		for _, c := range s.Cells {
			if !(c.Lat >= -90 && c.Lat <= 90 && c.Lon >= -180 && c.Lon <= 180) {
				t.Errorf("cell at invalid position %+v", c)
			}
			if d := c.Decisions; d.Serve < 0 || d.Redirect < 0 || d.Deny < 0 {
				t.Errorf("cell with negative decisions %+v", c)
			}
		}
		if s.Totals.Unplaced < 0 {
			t.Errorf("negative unplaced %+v", s.Totals)
		}
		for _, c := range s.Countries {
			if len(c.ISO) != 2 || len(c.Name) > 64 {
				t.Errorf("country %+v", c)
			}
		}
	})
}
