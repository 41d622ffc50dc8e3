package heatmap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
)

// Searcher runs a search; *opensearchapi.Client is one.
type Searcher interface {
	Search(ctx context.Context, req *opensearchapi.SearchReq) (*opensearchapi.SearchResp, error)
}

// OpenSearchConfig configures [NewOpenSearchSource].
type OpenSearchConfig struct {
	// Index is the index or pattern searched; default "conn-events-*".
	Index string
	// Window limits the snapshot to events of the last Window (by
	// @timestamp); 0 means all events.
	Window time.Duration
	// Precision is the geotile_grid precision (zoom level) of the cells:
	// 0..29, default 6 (64 × 64 tiles over the world).
	Precision int
}

// OpenSearchSource answers /api/heatmap with aggregations over the indexed
// events. The request (one _search, size 0):
//
//	query: range @timestamp (the window) and term network.transport (the
//	       filter), in a bool filter; match_all without either
//	aggs:
//	  decided: filter exists residency.decision   (decided connections)
//	    grid:      geotile_grid source.geo.location
//	                 centroid:  geo_centroid source.geo.location
//	                 decisions: terms residency.decision
//	    countries: terms source.geo.country_iso_code
//	                 decisions: terms residency.decision
//	                 name:      top_hits 1, _source source.geo.country_name
//	    located:   filter exists source.geo.location
//	    placed:    filter exists source.geo.country_iso_code
//	  actions: terms event.action
//	             decisions: terms residency.decision
//
// and the response has the same names: aggregations.decided.doc_count,
// aggregations.decided.grid.buckets[].{key, doc_count, centroid.location,
// decisions.buckets[].{key, doc_count}}, and so on. Unplaced is
// decided.doc_count - decided.placed.doc_count: a refused connection has
// no residency decision and is never unplaced (see [Totals]).
// It is safe for concurrent use; each Snapshot is one search request.
type OpenSearchSource struct {
	search Searcher
	cfg    OpenSearchConfig
	now    func() time.Time
}

var _ Source = (*OpenSearchSource)(nil)

// NewOpenSearchSource returns a source that queries cfg.Index through s.
func NewOpenSearchSource(s Searcher, cfg OpenSearchConfig) *OpenSearchSource {
	if cfg.Index == "" {
		cfg.Index = "conn-events-*"
	}
	if cfg.Precision <= 0 || cfg.Precision > 29 {
		cfg.Precision = 6
	}
	return &OpenSearchSource{search: s, cfg: cfg, now: time.Now}
}

// maxCountries bounds the country terms aggregation (there are fewer than
// 300 ISO 3166-1 codes in use).
const maxCountries = 300

// maxCells bounds the geotile_grid buckets (OpenSearch's default size).
const maxCells = 10000

// query returns the search body for the events f selects.
func (o *OpenSearchSource) query(f Filter) map[string]any {
	type m = map[string]any
	decisions := m{"terms": m{"field": "residency.decision", "size": 10}}
	q := m{
		"size":             0,
		"track_total_hits": true,
		"aggs": m{
			"decided": m{
				"filter": m{"exists": m{"field": "residency.decision"}},
				"aggs": m{
					"grid": m{
						"geotile_grid": m{"field": "source.geo.location", "precision": o.cfg.Precision, "size": maxCells},
						"aggs": m{
							"centroid":  m{"geo_centroid": m{"field": "source.geo.location"}},
							"decisions": decisions,
						},
					},
					"countries": m{
						"terms": m{"field": "source.geo.country_iso_code", "size": maxCountries},
						"aggs": m{
							"decisions": decisions,
							"name":      m{"top_hits": m{"size": 1, "_source": m{"includes": []string{"source.geo.country_name"}}}},
						},
					},
					"located": m{"filter": m{"exists": m{"field": "source.geo.location"}}},
					"placed":  m{"filter": m{"exists": m{"field": "source.geo.country_iso_code"}}},
				},
			},
			"actions": m{
				"terms": m{"field": "event.action", "size": 10},
				"aggs":  m{"decisions": decisions},
			},
		},
	}
	var filters []any
	if o.cfg.Window > 0 {
		filters = append(filters, m{"range": m{"@timestamp": m{"gte": fmt.Sprintf("now-%ds", int64(o.cfg.Window/time.Second))}}})
	}
	if f.Transport != "" {
		filters = append(filters, m{"term": m{"network.transport": f.Transport}})
	}
	switch len(filters) {
	case 0:
	case 1:
		q["query"] = filters[0]
	default:
		q["query"] = m{"bool": m{"filter": filters}}
	}
	return q
}

type termsAgg struct {
	Buckets []struct {
		Key      string `json:"key"`
		DocCount int64  `json:"doc_count"`
	} `json:"buckets"`
}

type docCount struct {
	DocCount int64 `json:"doc_count"`
}

type osAggs struct {
	Decided struct {
		DocCount  int64       `json:"doc_count"`
		Grid      osGrid      `json:"grid"`
		Countries osCountries `json:"countries"`
		Located   docCount    `json:"located"`
		Placed    docCount    `json:"placed"`
	} `json:"decided"`
	Actions struct {
		Buckets []struct {
			Key       string   `json:"key"`
			DocCount  int64    `json:"doc_count"`
			Decisions termsAgg `json:"decisions"`
		} `json:"buckets"`
	} `json:"actions"`
}

type osGrid struct {
	Buckets []struct {
		Key      string `json:"key"`
		DocCount int64  `json:"doc_count"`
		Centroid struct {
			Location *struct {
				Lat float64 `json:"lat"`
				Lon float64 `json:"lon"`
			} `json:"location"`
		} `json:"centroid"`
		Decisions termsAgg `json:"decisions"`
	} `json:"buckets"`
}

type osCountries struct {
	Buckets []struct {
		Key       string   `json:"key"`
		DocCount  int64    `json:"doc_count"`
		Decisions termsAgg `json:"decisions"`
		Name      struct {
			Hits struct {
				Hits []struct {
					Source struct {
						Source struct {
							Geo struct {
								CountryName string `json:"country_name"`
							} `json:"geo"`
						} `json:"source"`
					} `json:"_source"`
				} `json:"hits"`
			} `json:"hits"`
		} `json:"name"`
	} `json:"buckets"`
}

// Snapshot runs the aggregation query. It blocks until OpenSearch answers
// or ctx is done.
func (o *OpenSearchSource) Snapshot(ctx context.Context, f Filter) (Snapshot, error) {
	body, err := json.Marshal(o.query(f))
	if err != nil {
		return Snapshot{}, fmt.Errorf("encoding heat-map query: %w", err)
	}
	resp, err := o.search.Search(ctx, &opensearchapi.SearchReq{
		Indices: []string{o.cfg.Index},
		Body:    bytes.NewReader(body),
		Params:  opensearchapi.SearchParams{AllowNoIndices: opensearchapi.ToPointer(true)},
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("searching %s for the heat map: %w", o.cfg.Index, err)
	}
	snap, err := parseAggs(resp, o.now())
	snap.Transport = f.Transport
	return snap, err
}

func parseAggs(resp *opensearchapi.SearchResp, now time.Time) (Snapshot, error) {
	snap := Snapshot{Source: "opensearch", GeneratedAt: now.UTC(), Cells: []Cell{}, Countries: []Country{}}
	snap.Totals.Events = int64(resp.Hits.Total.Value)
	if len(resp.Aggregations) == 0 {
		// No index yet (allow_no_indices): an empty snapshot.
		return snap, nil
	}
	var a osAggs
	if err := json.Unmarshal(resp.Aggregations, &a); err != nil {
		return Snapshot{}, fmt.Errorf("decoding heat-map aggregations: %w", err)
	}
	for _, b := range a.Decided.Grid.Buckets {
		if b.Centroid.Location == nil || !validLatLon(b.Centroid.Location.Lat, b.Centroid.Location.Lon) {
			continue
		}
		snap.Cells = append(snap.Cells, Cell{
			Lat: round4(b.Centroid.Location.Lat), Lon: round4(b.Centroid.Location.Lon),
			Count: b.DocCount, Decisions: decisionsOf(b.Decisions),
		})
	}
	for _, b := range a.Decided.Countries.Buckets {
		if !validISO(b.Key) {
			continue
		}
		c := Country{ISO: b.Key, Count: b.DocCount}
		if h := b.Name.Hits.Hits; len(h) > 0 {
			c.Name = cleanName(h[0].Source.Source.Geo.CountryName)
		}
		c.Decisions = decisionsOf(b.Decisions)
		snap.Countries = append(snap.Countries, c)
	}
	t := &snap.Totals
	var known int64
	for _, b := range a.Actions.Buckets {
		known += b.DocCount
		switch b.Key {
		case "connection-closed":
			r := decisionsOf(b.Decisions).Redirect
			t.Redirected += r
			t.Served += b.DocCount - r
		case "connection-denied":
			t.Denied += b.DocCount
		case "connection-refused":
			t.Refused += b.DocCount
		default:
			t.Other += b.DocCount
		}
	}
	t.Other += max(0, t.Events-known) // events without an action
	t.Located = a.Decided.Located.DocCount
	t.Unplaced = max(0, a.Decided.DocCount-a.Decided.Placed.DocCount)
	sortSnapshot(&snap)
	return snap, nil
}

func decisionsOf(t termsAgg) Decisions {
	var d Decisions
	for _, b := range t.Buckets {
		d.add(b.Key, max(0, b.DocCount))
	}
	return d
}
