package heatmap

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/originlens/originlens/internal/event"
)

// CellDegrees is the size of the aggregator's grid cells, in degrees of
// latitude and longitude: at most 360 × 180 cells, whatever the input.
const CellDegrees = 1

// maxNameBytes bounds a stored country name: names come from Kafka and are
// not trusted.
const maxNameBytes = 64

type cellKey struct{ lat, lon int16 }

type cellAcc struct {
	sumLat, sumLon float64
	n              int64
}

type countryAcc struct {
	name      string
	n         int64
	decisions Decisions
}

// Aggregator keeps an in-memory aggregation of the events ingest consumed:
// a 1° grid of locations (each cell reported at the centroid of its
// events), counts per country and residency decision, and counters. Its
// memory is bounded whatever the events say: at most 64,800 cells and
// 676 countries (two ASCII letters; other codes count as unplaced).
//
// It is safe for concurrent use. The zero value is not ready: use
// [NewAggregator].
type Aggregator struct {
	now func() time.Time

	mu        sync.Mutex
	cells     map[cellKey]*cellAcc
	countries map[string]*countryAcc
	totals    Totals

	// byTransport aggregates the tcp and the udp events apart, for
	// SnapshotTransport; nil in those aggregators themselves.
	byTransport map[string]*Aggregator
}

var _ TransportSource = (*Aggregator)(nil)

// NewAggregator returns an empty aggregator.
func NewAggregator() *Aggregator {
	a := newAggregator()
	a.byTransport = map[string]*Aggregator{event.TransportTCP: newAggregator(), event.TransportUDP: newAggregator()}
	return a
}

func newAggregator() *Aggregator {
	return &Aggregator{
		now:       time.Now,
		cells:     make(map[cellKey]*cellAcc),
		countries: make(map[string]*countryAcc),
	}
}

// SnapshotTransport is Snapshot over the events of transport ("tcp" or
// "udp"); any other transport has no events.
func (a *Aggregator) SnapshotTransport(ctx context.Context, transport string) (Snapshot, error) {
	if sub := a.byTransport[transport]; sub != nil {
		sub.now = a.now
		return sub.Snapshot(ctx)
	}
	return newAggregator().Snapshot(ctx)
}

// Add counts one event. It does not block beyond a short critical section
// and never keeps a reference to ev. A nil event is ignored.
func (a *Aggregator) Add(ev *event.Event) {
	if ev == nil {
		return
	}
	if sub := a.byTransport[ev.Network.Transport]; sub != nil {
		sub.Add(ev)
	}
	iso := ev.Source.Geo.CountryISOCode
	if !validISO(iso) {
		iso = ""
	}
	loc := ev.Source.Geo.Location
	var key cellKey
	located := loc != nil && validLatLon(loc.Lat, loc.Lon)
	if located {
		key = cellOf(loc.Lat, loc.Lon)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	t := &a.totals
	t.Events++
	switch ev.Network.Transport {
	case event.TransportTCP:
		t.TCP++
	case event.TransportUDP:
		t.UDP++
	}
	switch ev.Event.Action {
	case event.ActionClosed:
		if ev.Residency.Decision == "redirect" {
			t.Redirected++
		} else {
			t.Served++
		}
	case event.ActionDenied:
		t.Denied++
	case event.ActionRefused:
		t.Refused++
	default:
		t.Other++
	}
	if located {
		t.Located++
		c := a.cells[key]
		if c == nil {
			c = &cellAcc{}
			a.cells[key] = c
		}
		c.sumLat += loc.Lat
		c.sumLon += loc.Lon
		c.n++
	}
	if iso == "" {
		t.Unplaced++
		return
	}
	c := a.countries[iso]
	if c == nil {
		c = &countryAcc{name: cleanName(ev.Source.Geo.CountryName)}
		a.countries[iso] = c
	}
	c.n++
	switch ev.Residency.Decision {
	case "serve":
		c.decisions.Serve++
	case "redirect":
		c.decisions.Redirect++
	case "deny":
		c.decisions.Deny++
	}
}

// Snapshot returns a copy of the aggregation. It never fails and does not
// look at ctx.
func (a *Aggregator) Snapshot(context.Context) (Snapshot, error) {
	a.mu.Lock()
	snap := Snapshot{
		Source:      "memory",
		GeneratedAt: a.now().UTC(),
		Cells:       make([]Cell, 0, len(a.cells)),
		Countries:   make([]Country, 0, len(a.countries)),
		Totals:      a.totals,
	}
	for _, c := range a.cells {
		snap.Cells = append(snap.Cells, Cell{
			Lat:   round4(c.sumLat / float64(c.n)),
			Lon:   round4(c.sumLon / float64(c.n)),
			Count: c.n,
		})
	}
	for iso, c := range a.countries {
		snap.Countries = append(snap.Countries, Country{ISO: iso, Name: c.name, Count: c.n, Decisions: c.decisions})
	}
	a.mu.Unlock()
	sortSnapshot(&snap)
	return snap, nil
}

// sortSnapshot orders cells and countries most first, ties by position and
// code, so that the JSON is stable.
func sortSnapshot(s *Snapshot) {
	slices.SortFunc(s.Cells, func(x, y Cell) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Lat, y.Lat), cmp.Compare(x.Lon, y.Lon))
	})
	slices.SortFunc(s.Countries, func(x, y Country) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), strings.Compare(x.ISO, y.ISO))
	})
}

func validISO(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

func validLatLon(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 // false for NaN
}

// cellOf returns the grid cell of a valid position; the poles and the
// antimeridian fall into the last row and column.
func cellOf(lat, lon float64) cellKey {
	la := int16(math.Floor(lat / CellDegrees))
	lo := int16(math.Floor(lon / CellDegrees))
	return cellKey{lat: min(la, 90/CellDegrees-1), lon: min(lo, 180/CellDegrees-1)}
}

func round4(f float64) float64 { return math.Round(f*1e4) / 1e4 }

// cleanName makes an untrusted name safe to keep and show: valid UTF-8, no
// control characters, at most maxNameBytes.
func cleanName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) <= maxNameBytes {
		return s
	}
	cut := maxNameBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
