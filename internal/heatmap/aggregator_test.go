package heatmap_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/heatmap"
)

// ev builds an event the way cmd/app does for a located client.
func ev(tb testing.TB, iso, name string, lat, lon float64, action, decision string) *event.Event {
	tb.Helper()
	e := event.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	e.Event.Action = action
	if iso != "" {
		e.Source.Geo = event.Geo{CountryISOCode: iso, CountryName: name, Class: "public", Location: &event.Location{Lat: lat, Lon: lon}}
	}
	e.Residency.Decision = decision
	e.Finish(e.Event.Start.Add(time.Millisecond))
	return &e
}

func snapshot(tb testing.TB, a *heatmap.Aggregator) heatmap.Snapshot {
	tb.Helper()
	return snapshotOf(tb, a, heatmap.Filter{})
}

func snapshotOf(tb testing.TB, a *heatmap.Aggregator, f heatmap.Filter) heatmap.Snapshot {
	tb.Helper()
	s, err := a.Snapshot(context.Background(), f)
	if err != nil {
		tb.Fatalf("Snapshot() error = %v", err)
	}
	return s
}

func TestAggregator(t *testing.T) {
	tests := []struct {
		name          string
		events        func(testing.TB) []*event.Event
		wantCells     []heatmap.Cell
		wantCountries []heatmap.Country
		wantTotals    heatmap.Totals
	}{
		{
			name:          "empty",
			events:        func(testing.TB) []*event.Event { return nil },
			wantCells:     []heatmap.Cell{},
			wantCountries: []heatmap.Country{},
		},
		{
			name: "countries_and_decisions",
			events: func(tb testing.TB) []*event.Event {
				return []*event.Event{
					ev(tb, "DE", "Germany", 52.52, 13.40, event.ActionClosed, "redirect"),
					ev(tb, "DE", "Germany", 52.50, 13.30, event.ActionClosed, "redirect"),
					ev(tb, "US", "United States", 40.71, -74.00, event.ActionClosed, "serve"),
					ev(tb, "KP", "North Korea", 39.03, 125.75, event.ActionDenied, "deny"),
				}
			},
			// The two Berlin events share the cell 52..53 x 13..14 and are
			// reported at their centroid.
			wantCells: []heatmap.Cell{
				{Lat: 52.51, Lon: 13.35, Count: 2, Decisions: heatmap.Decisions{Redirect: 2}},
				{Lat: 39.03, Lon: 125.75, Count: 1, Decisions: heatmap.Decisions{Deny: 1}},
				{Lat: 40.71, Lon: -74.00, Count: 1, Decisions: heatmap.Decisions{Serve: 1}},
			},
			wantCountries: []heatmap.Country{
				{ISO: "DE", Name: "Germany", Count: 2, Decisions: heatmap.Decisions{Redirect: 2}},
				{ISO: "KP", Name: "North Korea", Count: 1, Decisions: heatmap.Decisions{Deny: 1}},
				{ISO: "US", Name: "United States", Count: 1, Decisions: heatmap.Decisions{Serve: 1}},
			},
			wantTotals: heatmap.Totals{Events: 4, Served: 1, Redirected: 2, Denied: 1, Located: 4},
		},
		{
			// A refused connection (a spoof attempt) has no client to
			// place: it is refused, not unplaced, as the demo's summary
			// counts it (issue 15, item 9: the page said unplaced 22 where
			// the summary said 2).
			name: "refused_is_not_unplaced",
			events: func(tb testing.TB) []*event.Event {
				spoof := ev(tb, "", "", 0, 0, event.ActionRefused, "")
				spoof.Source.Geo.Class = "loopback"
				spoofPlaced := ev(tb, "US", "United States", 40.71, -74.00, event.ActionRefused, "")
				unplaced := ev(tb, "", "", 0, 0, event.ActionClosed, "serve")
				unplaced.Source.Geo.Class = "documentation"
				return []*event.Event{spoof, spoof, spoofPlaced, unplaced, ev(tb, "", "", 0, 0, "something-new", "")}
			},
			wantCells:     []heatmap.Cell{},
			wantCountries: []heatmap.Country{},
			wantTotals:    heatmap.Totals{Events: 5, Served: 1, Refused: 3, Other: 1, Unplaced: 1},
		},
		{
			name: "hostile_fields",
			events: func(tb testing.TB) []*event.Event {
				badISO := ev(tb, "de", "lower", 10, 10, event.ActionClosed, "serve")
				badLoc := ev(tb, "FR", "France\x00\x1b[31m"+strings.Repeat("é", 100), math.NaN(), 500, event.ActionClosed, "bogus")
				edge := ev(tb, "NZ", "New Zealand", 90, 180, event.ActionClosed, "serve")
				return []*event.Event{nil, badISO, badLoc, edge}
			},
			// The pole and the antimeridian fall into the last cell.
			wantCells: []heatmap.Cell{
				{Lat: 10, Lon: 10, Count: 1, Decisions: heatmap.Decisions{Serve: 1}},
				{Lat: 90, Lon: 180, Count: 1, Decisions: heatmap.Decisions{Serve: 1}},
			},
			wantCountries: []heatmap.Country{
				{ISO: "FR", Name: "France[31m" + strings.Repeat("é", 27), Count: 1},
				{ISO: "NZ", Name: "New Zealand", Count: 1, Decisions: heatmap.Decisions{Serve: 1}},
			},
			wantTotals: heatmap.Totals{Events: 3, Served: 3, Located: 2, Unplaced: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := heatmap.NewAggregator()
			for _, e := range tt.events(t) {
				a.Add(e)
			}
			got := snapshot(t, a)
			if got.Source != "memory" {
				t.Errorf("Source = %q, want memory", got.Source)
			}
			if diff := cmp.Diff(tt.wantCells, got.Cells, cmpopts.EquateApprox(0, 1e-3)); diff != "" {
				t.Errorf("Cells (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCountries, got.Countries); diff != "" {
				t.Errorf("Countries (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantTotals, got.Totals); diff != "" {
				t.Errorf("Totals (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAggregatorBounded: whatever the events, the grid has at most one cell
// per degree square and the table at most one row per two-letter code.
func TestAggregatorBounded(t *testing.T) {
	a := heatmap.NewAggregator()
	n := 0
	for lat := -90.0; lat <= 90; lat += 0.5 {
		for lon := -180.0; lon <= 180; lon += 0.5 {
			iso := string([]byte{'A' + byte(n%26), 'A' + byte(n/26%26)})
			a.Add(ev(t, iso, "x", lat, lon, event.ActionClosed, "serve"))
			n++
		}
	}
	s := snapshot(t, a)
	if len(s.Cells) != 180*360 {
		t.Errorf("len(Cells) = %d after %d events, want %d", len(s.Cells), n, 180*360)
	}
	if len(s.Countries) != 26*26 {
		t.Errorf("len(Countries) = %d, want %d", len(s.Countries), 26*26)
	}
	var sum int64
	for _, c := range s.Cells {
		sum += c.Count
	}
	if sum != int64(n) || s.Totals.Events != int64(n) {
		t.Errorf("sum of cells = %d, Totals.Events = %d; want %d", sum, s.Totals.Events, n)
	}
}

func TestAggregatorConcurrent(t *testing.T) {
	a := heatmap.NewAggregator()
	var wg sync.WaitGroup
	const workers, each = 8, 500
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				a.Add(ev(t, "JP", "Japan", 35+float64(w)/10, 139+float64(i%10)/10, event.ActionClosed, "serve"))
				if i%100 == 0 {
					snapshot(t, a)
				}
			}
		})
	}
	wg.Wait()
	s := snapshot(t, a)
	if s.Totals.Events != workers*each || len(s.Countries) != 1 || s.Countries[0].Decisions.Serve != workers*each {
		t.Errorf("after %d concurrent adds: totals %+v, countries %+v", workers*each, s.Totals, s.Countries)
	}
}

func BenchmarkAggregatorAdd(b *testing.B) {
	a := heatmap.NewAggregator()
	events := make([]*event.Event, 1024)
	for i := range events {
		events[i] = ev(b, "BR", "Brazil", -23+float64(i%50), -46+float64(i%70), event.ActionClosed, "serve")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		a.Add(events[i%len(events)])
	}
}
