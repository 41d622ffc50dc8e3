package geo_test

import (
	"bytes"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/mmdb"
)

// brokenEntries are records that a valid database can hold (maxminddb's
// Verify passes) but that do not decode, or whose coordinates are not a
// place. None is at one of geo's probe addresses.
var brokenEntries = []mmdb.Entry{
	// KP with a wrong-typed latitude: the City model fails, the country
	// decodes.
	{Prefix: netip.MustParsePrefix("198.51.100.0/24"), CountryISO: "KP", CountryName: "North Korea", ContinentCode: "AS",
		City: "Pyongyang", Lat: 39, Lon: 125,
		Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.String("39.0")}}},
	// KP with a 200 KB city name, over the decoder's string limit.
	{Prefix: netip.MustParsePrefix("192.0.2.0/25"), CountryISO: "KP", CountryName: "North Korea", ContinentCode: "AS",
		City: strings.Repeat("P", 200<<10)},
	// Nothing decodes but the continent: a wrong-typed country code too.
	{Prefix: netip.MustParsePrefix("192.0.2.128/25"), ContinentCode: "EU", City: "Nowhere",
		Raw: mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.Uint32(7)}}},
	// Coordinates that are not a place.
	{Prefix: netip.MustParsePrefix("10.1.0.0/16"), CountryISO: "JP", ContinentCode: "AS", City: "Tokyo",
		Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(math.NaN()), "longitude": mmdbtype.Float64(math.Inf(1))}}},
	{Prefix: netip.MustParsePrefix("10.2.0.0/16"), CountryISO: "JP", ContinentCode: "AS", City: "Tokyo",
		Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(91), "longitude": mmdbtype.Float64(10)}}},
	{Prefix: netip.MustParsePrefix("10.3.0.0/16"), CountryISO: "JP", ContinentCode: "AS", City: "Tokyo",
		Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(10), "longitude": mmdbtype.Float64(-180.5)}}},
	// At the limits: a place.
	{Prefix: netip.MustParsePrefix("10.4.0.0/16"), CountryISO: "AQ", ContinentCode: "AN", Lat: -90, Lon: 180},
}

// TestLookupErrors checks that a record that does not decode is a lookup
// error, not an unplaced address: Error set, the country kept where the
// Country model can read it, counted per lookup, logged once per interval.
func TestLookupErrors(t *testing.T) {
	path := writeCity(t, t.TempDir(), brokenEntries, built)
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	db := open(t, geo.Config{CityPath: path, Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	tests := []struct {
		addr, country, cont, class, errPart string
	}{
		{"198.51.100.1", "KP", "AS", "public", "latitude"},
		{"192.0.2.1", "KP", "AS", "public", "exceeds maxsize"},
		{"192.0.2.200", "", "EU", "public", "iso_code"},
		{"10.1.0.1", "JP", "AS", "public", ""},
		{"10.4.0.1", "AQ", "AN", "public", ""},
		{"198.51.101.1", "", "", "public", ""}, // not in the database
	}
	errs := 0
	for round := range 2 {
		for _, tt := range tests {
			loc := db.Lookup(netip.MustParseAddr(tt.addr))
			if loc.CountryISO != tt.country || loc.ContinentCode != tt.cont || loc.Class != tt.class {
				t.Errorf("Lookup(%s) = country %q continent %q class %q, want %q %q %q",
					tt.addr, loc.CountryISO, loc.ContinentCode, loc.Class, tt.country, tt.cont, tt.class)
			}
			switch {
			case tt.errPart == "" && loc.Error != "":
				t.Errorf("Lookup(%s).Error = %q, want none", tt.addr, loc.Error)
			case tt.errPart != "":
				errs++
				if !strings.HasPrefix(loc.Error, "city record: ") || !strings.Contains(loc.Error, tt.errPart) {
					t.Errorf("Lookup(%s).Error = %q, want city record: ...%s...", tt.addr, loc.Error, tt.errPart)
				}
				if len(loc.Error) > geo.MaxErrorLength {
					t.Errorf("Lookup(%s).Error is %d bytes, over %d", tt.addr, len(loc.Error), geo.MaxErrorLength)
				}
				if loc.City != "" || loc.HasLocation {
					t.Errorf("Lookup(%s) kept city %q / location %v of a record that failed", tt.addr, loc.City, loc.HasLocation)
				}
			}
		}
		if got := metric(t, reg, "originlens_geo_lookup_errors_total", "city"); got != float64(errs) {
			t.Errorf("round %d: lookup errors = %v, want %d", round, got, errs)
		}
	}
	if n := strings.Count(logs.String(), "does not decode"); n != 1 {
		t.Errorf("%d log lines for %d lookup errors within %v, want 1:\n%s", n, errs, geo.LookupErrorLogInterval, logs.String())
	}
}

// TestInvalidCoordinates checks that coordinates that are not finite or
// out of range are not a location, and are flagged.
func TestInvalidCoordinates(t *testing.T) {
	db := open(t, geo.Config{CityPath: writeCity(t, t.TempDir(), brokenEntries, built)})
	for _, a := range []string{"10.1.0.1", "10.2.0.1", "10.3.0.1"} {
		loc := db.Lookup(netip.MustParseAddr(a))
		if loc.HasLocation || !loc.LocationInvalid || loc.Lat != 0 || loc.Lon != 0 {
			t.Errorf("Lookup(%s) = HasLocation %v LocationInvalid %v lat %v lon %v, want no location, flagged",
				a, loc.HasLocation, loc.LocationInvalid, loc.Lat, loc.Lon)
		}
		if loc.CountryISO != "JP" || loc.City != "Tokyo" || loc.Error != "" {
			t.Errorf("Lookup(%s) = %+v, want the rest of the record (JP, Tokyo) and no error", a, loc)
		}
	}
	loc := db.Lookup(netip.MustParseAddr("10.4.0.1"))
	if !loc.HasLocation || loc.LocationInvalid || loc.Lat != -90 || loc.Lon != 180 {
		t.Errorf("Lookup(10.4.0.1) = %+v, want the location -90, 180 (the limits are places)", loc)
	}
	for _, c := range []struct {
		lat, lon float64
		ok       bool
	}{
		{0, 0, true}, {90, -180, true}, {math.NaN(), 0, false}, {0, math.NaN(), false}, {math.Inf(-1), 0, false},
		{0, math.Inf(1), false}, {90.0001, 0, false}, {0, -180.0001, false}, {-1e300, 0, false},
	} {
		if got := geo.ValidCoordinates(c.lat, c.lon); got != c.ok {
			t.Errorf("ValidCoordinates(%v, %v) = %v, want %v", c.lat, c.lon, got, c.ok)
		}
	}
}
