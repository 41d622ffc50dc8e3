package event

import (
	"errors"
	"fmt"
	"time"

	"github.com/tidwall/gjson"
)

// Head is the part of an event that a consumer routes and counts by: the
// id, the timestamp, the action and what the live heat map shows. It is
// what [ParseHead] decodes, much cheaper than a whole [Event].
type Head struct {
	ID        string    // event.id
	Timestamp time.Time // @timestamp
	Action    string    // event.action
	Decision  string    // residency.decision
	// Country and location of the client (source.geo.*).
	CountryISOCode string
	CountryName    string
	Location       *Location
}

// Event returns an Event holding only the fields of h, e.g. for the
// in-memory heat-map aggregation.
func (h *Head) Event() Event {
	return Event{
		Timestamp: h.Timestamp,
		Event:     Meta{ID: h.ID, Action: h.Action},
		Source:    Source{Geo: Geo{CountryISOCode: h.CountryISOCode, CountryName: h.CountryName, Location: h.Location}},
		Residency: Residency{Decision: h.Decision},
	}
}

// ParseHead checks that b is exactly one valid JSON object with a
// non-empty string event.id and an RFC 3339 @timestamp, and decodes the
// fields of [Head] in one validating pass plus short lookups
// (github.com/tidwall/gjson), several times cheaper than [Parse]. The
// fields that Head does not hold are checked for JSON syntax only: unlike
// [Parse], ParseHead accepts unknown fields and does not check the types
// of the fields it skips, and keys match exactly (case-sensitive; the last
// of duplicate top-level keys wins). It is meant for a consumer that hands the
// original bytes to a store enforcing the schema itself: the OpenSearch
// index template is dynamic: strict and answers a field it does not map,
// or a value of the wrong type, with a 400, which the ingest dead-letters.
//
// A field of Head with the wrong type is left empty (a location without
// numeric lat and lon is nil), except event.id and @timestamp, which are
// errors. The errors wrap [ErrMissingID] and [ErrMissingTimestamp] where
// those apply. ParseHead is safe for concurrent use.
func ParseHead(b []byte) (Head, error) {
	if !gjson.ValidBytes(b) {
		return Head{}, errors.New("decoding event: not one valid JSON value")
	}
	root := gjson.ParseBytes(b)
	if !root.IsObject() {
		return Head{}, errors.New("decoding event: not a JSON object")
	}
	var ts, ev, src, res gjson.Result
	root.ForEach(func(k, v gjson.Result) bool { // one pass; the last of duplicate keys wins
		switch k.Str {
		case "@timestamp":
			ts = v
		case "event":
			ev = v
		case "source":
			src = v
		case "residency":
			res = v
		}
		return true
	})
	id := ev.Get("id")
	if !ev.IsObject() || id.Type != gjson.String || id.Str == "" {
		return Head{}, fmt.Errorf("decoding event: %w", ErrMissingID)
	}
	if ts.Type != gjson.String {
		return Head{}, fmt.Errorf("decoding event %s: %w", id.Str, ErrMissingTimestamp)
	}
	t, err := time.Parse(time.RFC3339Nano, ts.Str)
	if err != nil {
		return Head{}, fmt.Errorf("decoding event %s: @timestamp: %w", id.Str, err)
	}
	if t.IsZero() {
		return Head{}, fmt.Errorf("decoding event %s: %w", id.Str, ErrMissingTimestamp)
	}
	h := Head{ID: id.Str, Timestamp: t, Action: str(ev.Get("action"))}
	if res.IsObject() {
		h.Decision = str(res.Get("decision"))
	}
	if geo := src.Get("geo"); src.IsObject() && geo.IsObject() {
		h.CountryISOCode = str(geo.Get("country_iso_code"))
		h.CountryName = str(geo.Get("country_name"))
		if loc := geo.Get("location"); loc.IsObject() {
			lat, lon := loc.Get("lat"), loc.Get("lon")
			if lat.Type == gjson.Number && lon.Type == gjson.Number {
				h.Location = &Location{Lat: lat.Num, Lon: lon.Num}
			}
		}
	}
	return h, nil
}

func str(r gjson.Result) string {
	if r.Type != gjson.String {
		return ""
	}
	return r.Str
}
