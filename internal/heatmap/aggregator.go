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
	decisions      Decisions
}

type countryAcc struct {
	name      string
	n         int64
	decisions Decisions
}

// view is the aggregation of the events of one transport.
type view struct {
	cells     map[cellKey]*cellAcc
	countries map[string]*countryAcc
	totals    Totals
}

func newView() *view {
	return &view{cells: make(map[cellKey]*cellAcc), countries: make(map[string]*countryAcc)}
}

// Aggregator keeps an in-memory aggregation of the events ingest consumed:
// a 1° grid of locations (each cell reported at the centroid of its
// events, with its decisions), counts per country and residency decision,
// and counters, per transport (network.transport) so that a [Filter] can
// pick one. Its memory is bounded whatever the events say: per transport
// (tcp, udp, and one for any other value) at most 64,800 cells and 676
// countries (two ASCII letters; other codes count as unplaced).
//
// It is safe for concurrent use. The zero value is not ready: use
// [NewAggregator].
type Aggregator struct {
	now func() time.Time

	mu    sync.Mutex
	views map[string]*view // by transportKey
}

var _ Source = (*Aggregator)(nil)

// NewAggregator returns an empty aggregator.
func NewAggregator() *Aggregator {
	return &Aggregator{now: time.Now, views: make(map[string]*view)}
}

// transportKey bounds the transports the aggregator tells apart.
func transportKey(t string) string {
	switch t {
	case TransportTCP, TransportUDP:
		return t
	}
	return "other"
}

// Add counts one event. It does not block beyond a short critical section
// and never keeps a reference to ev. A nil event is ignored.
func (a *Aggregator) Add(ev *event.Event) {
	if ev == nil {
		return
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
	decision := ev.Residency.Decision
	tk := transportKey(ev.Network.Transport)

	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.views[tk]
	if v == nil {
		v = newView()
		a.views[tk] = v
	}
	t := &v.totals
	t.Events++
	switch ev.Event.Action {
	case event.ActionClosed:
		if decision == "redirect" {
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
	if decision == "" {
		return // not a decided connection: no client to place (see Totals)
	}
	if located {
		t.Located++
		c := v.cells[key]
		if c == nil {
			c = &cellAcc{}
			v.cells[key] = c
		}
		c.sumLat += loc.Lat
		c.sumLon += loc.Lon
		c.n++
		c.decisions.add(decision, 1)
	}
	if iso == "" {
		t.Unplaced++
		return
	}
	c := v.countries[iso]
	if c == nil {
		c = &countryAcc{name: cleanName(ev.Source.Geo.CountryName)}
		v.countries[iso] = c
	}
	c.n++
	c.decisions.add(decision, 1)
}

// add counts n connections with decision d; a decision this version does
// not know is not counted.
func (d *Decisions) add(decision string, n int64) {
	switch decision {
	case "serve":
		d.Serve += n
	case "redirect":
		d.Redirect += n
	case "deny":
		d.Deny += n
	}
}

func (d *Decisions) merge(o Decisions) {
	d.Serve += o.Serve
	d.Redirect += o.Redirect
	d.Deny += o.Deny
}

func (t *Totals) merge(o Totals) {
	t.Events += o.Events
	t.Served += o.Served
	t.Redirected += o.Redirected
	t.Denied += o.Denied
	t.Refused += o.Refused
	t.Other += o.Other
	t.Located += o.Located
	t.Unplaced += o.Unplaced
}

// Snapshot returns a copy of the aggregation of the events f selects. It
// never fails and does not look at ctx.
func (a *Aggregator) Snapshot(_ context.Context, f Filter) (Snapshot, error) {
	merged := newView()
	a.mu.Lock()
	for tk, v := range a.views {
		if f.Transport != "" && tk != f.Transport {
			continue
		}
		merged.totals.merge(v.totals)
		for k, c := range v.cells {
			m := merged.cells[k]
			if m == nil {
				m = &cellAcc{}
				merged.cells[k] = m
			}
			m.sumLat, m.sumLon, m.n = m.sumLat+c.sumLat, m.sumLon+c.sumLon, m.n+c.n
			m.decisions.merge(c.decisions)
		}
		for iso, c := range v.countries {
			m := merged.countries[iso]
			if m == nil {
				m = &countryAcc{name: c.name}
				merged.countries[iso] = m
			}
			m.n += c.n
			m.decisions.merge(c.decisions)
		}
	}
	now := a.now().UTC()
	a.mu.Unlock()

	snap := Snapshot{
		Source:      "memory",
		Transport:   f.Transport,
		GeneratedAt: now,
		Cells:       make([]Cell, 0, len(merged.cells)),
		Countries:   make([]Country, 0, len(merged.countries)),
		Totals:      merged.totals,
	}
	for _, c := range merged.cells {
		snap.Cells = append(snap.Cells, Cell{
			Lat:       round4(c.sumLat / float64(c.n)),
			Lon:       round4(c.sumLon / float64(c.n)),
			Count:     c.n,
			Decisions: c.decisions,
		})
	}
	for iso, c := range merged.countries {
		snap.Countries = append(snap.Countries, Country{ISO: iso, Name: c.name, Count: c.n, Decisions: c.decisions})
	}
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
