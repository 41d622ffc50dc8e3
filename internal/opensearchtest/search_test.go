package opensearchtest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGeotileKey(t *testing.T) {
	tests := []struct {
		lat, lon float64
		zoom     int
		want     string
	}{
		{50.11, 8.68, 6, "6/33/21"}, // Frankfurt, as in OpenSearch's docs example shape
		{0, 0, 0, "0/0/0"},
		{0, 0, 1, "1/1/1"},
		{89.9, -180, 3, "3/0/0"}, // clamped to the Mercator limit
		{-89.9, 180, 3, "3/7/7"}, // lon 180 is the last tile
		{37.77, -122.42, 6, "6/10/24"},
	}
	for _, tt := range tests {
		if got := geotileKey(tt.lat, tt.lon, tt.zoom); got != tt.want {
			t.Errorf("geotileKey(%v, %v, %d) = %s, want %s", tt.lat, tt.lon, tt.zoom, got, tt.want)
		}
	}
}

func search(t *testing.T, s *Server, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s answered %q", path, b)
	}
	return resp.StatusCode, m
}

// TestSearch: aggregations over stored documents, the time window, and
// honest refusals.
func TestSearch(t *testing.T) {
	s := NewServer()
	defer s.Close()
	now := time.Now().UTC()
	var body strings.Builder
	for i, d := range []struct{ cc, decision, ts string }{
		{"DE", "serve", now.Format(time.RFC3339)},
		{"DE", "serve", now.Format(time.RFC3339)},
		{"US", "redirect", now.Format(time.RFC3339)},
		{"US", "redirect", now.Add(-48 * time.Hour).Format(time.RFC3339)}, // outside a 24h window
	} {
		body.WriteString(`{"create":{"_index":"conn-events-x","_id":"` + string(rune('a'+i)) + `"}}` + "\n")
		body.WriteString(`{"@timestamp":"` + d.ts + `","source":{"geo":{"country_iso_code":"` + d.cc + `","location":{"lat":50.5,"lon":8.5}}},"residency":{"decision":"` + d.decision + `"}}` + "\n")
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/_bulk", strings.NewReader(body.String()))
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	code, m := search(t, s, "/conn-events-*/_search", `{"size":0,"query":{"range":{"@timestamp":{"gte":"now-86400s"}}},
		"aggs":{"countries":{"terms":{"field":"source.geo.country_iso_code","size":1},"aggs":{"decisions":{"terms":{"field":"residency.decision"}}}},
		"grid":{"geotile_grid":{"field":"source.geo.location","precision":6},"aggs":{"c":{"geo_centroid":{"field":"source.geo.location"}}}}}}`)
	if code != 200 {
		t.Fatalf("search = %d %v", code, m)
	}
	got, _ := json.Marshal(m["aggregations"])
	want := `{"countries":{"buckets":[{"decisions":{"buckets":[{"doc_count":2,"key":"serve"}],"doc_count_error_upper_bound":0,"sum_other_doc_count":0},"doc_count":2,"key":"DE"}],"doc_count_error_upper_bound":0,"sum_other_doc_count":1},` +
		`"grid":{"buckets":[{"c":{"count":3,"location":{"lat":50.5,"lon":8.5}},"doc_count":3,"key":"6/33/21"}]}}`
	if string(got) != want {
		t.Errorf("aggregations =\n%s\nwant\n%s", got, want)
	}
	if total := m["hits"].(map[string]any)["total"].(map[string]any)["value"]; total != float64(3) {
		t.Errorf("hits.total = %v, want 3 in the window", total)
	}

	if code, m := search(t, s, "/conn-events-*/_search", `{"size":0,"aggs":{"x":{"histogram":{"field":"a","interval":1}}}}`); code != 400 {
		t.Errorf("unknown aggregation = %d %v, want 400", code, m)
	}
	if code, _ := search(t, s, "/missing/_search", `{"size":0}`); code != 404 {
		t.Errorf("search of a missing index = %d, want 404", code)
	}
	if code, m := search(t, s, "/none-*/_search", `{"size":0,"aggs":{"a":{"terms":{"field":"x"}}}}`); code != 200 || m["aggregations"] != nil {
		t.Errorf("search of an empty pattern = %d %v, want 200 without aggregations", code, m)
	}
	s.FailSearches(1)
	if code, _ := search(t, s, "/conn-events-*/_search", `{"size":0}`); code != 503 {
		t.Errorf("injected failure = %d, want 503", code)
	}
	if u := s.Unhandled(); len(u) != 1 || !strings.Contains(u[0], "histogram") {
		t.Errorf("Unhandled() = %v, want the histogram", u)
	}
}
