package mmdb_test

import (
	"bytes"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/originlens/originlens/internal/mmdb"
)

var build = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

var entries = []mmdb.Entry{
	{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU",
		RegionISO: "BE", RegionName: "Berlin", City: "Berlin", Lat: 52.52, Lon: 13.405, AccuracyRadius: 20, TimeZone: "Europe/Berlin"},
	{Prefix: netip.MustParsePrefix("203.0.113.128/25"), CountryISO: "FR", CountryName: "France", ContinentCode: "EU",
		City: "Paris", Lat: 48.8566, Lon: 2.3522, TimeZone: "Europe/Paris"},
	{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), CountryISO: "JP", CountryName: "Japan", ContinentCode: "AS",
		RegionISO: "13", RegionName: "Tokyo", City: "Tokyo", Lat: 35.6762, Lon: 139.6503, AccuracyRadius: 50, TimeZone: "Asia/Tokyo"},
	{Prefix: netip.MustParsePrefix("10.0.0.0/8"), CountryISO: "KP", ContinentCode: "AS"},
}

func writeCity(t testing.TB, es []mmdb.Entry) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "city.mmdb")
	if err := mmdb.WriteCityFile(path, es, build); err != nil {
		t.Fatalf("WriteCityFile: %v", err)
	}
	return path
}

func TestWriteCityReadByGeoip2(t *testing.T) {
	path := writeCity(t, entries)
	r, err := geoip2.Open(path)
	if err != nil {
		t.Fatalf("geoip2.Open: %v", err)
	}
	defer r.Close()
	if got := r.Metadata().DatabaseType; got != mmdb.TypeCity {
		t.Errorf("DatabaseType = %q, want %q", got, mmdb.TypeCity)
	}
	if got := r.Metadata().BuildTime(); !got.Equal(build) {
		t.Errorf("BuildTime = %v, want %v", got, build)
	}

	tests := []struct {
		ip                          string
		country, name, cont, region string
		city, tz                    string
		lat, lon                    float64
		radius                      uint16
	}{
		{"203.0.113.7", "DE", "Germany", "EU", "BE", "Berlin", "Europe/Berlin", 52.52, 13.405, 20},
		{"::ffff:203.0.113.7", "DE", "Germany", "EU", "BE", "Berlin", "Europe/Berlin", 52.52, 13.405, 20},
		{"203.0.113.200", "FR", "France", "EU", "", "Paris", "Europe/Paris", 48.8566, 2.3522, 0}, // more specific wins
		{"2001:db8:1::42", "JP", "Japan", "AS", "13", "Tokyo", "Asia/Tokyo", 35.6762, 139.6503, 50},
		{"10.1.2.3", "KP", "", "AS", "", "", "", 0, 0, 0},
		{"198.51.100.1", "", "", "", "", "", "", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			c, err := r.City(netip.MustParseAddr(tt.ip))
			if err != nil {
				t.Fatalf("City(%s): %v", tt.ip, err)
			}
			var region string
			if len(c.Subdivisions) > 0 {
				region = c.Subdivisions[0].ISOCode
			}
			var lat, lon float64
			if c.Location.Latitude != nil {
				lat, lon = *c.Location.Latitude, *c.Location.Longitude
			}
			got := []any{c.Country.ISOCode, c.Country.Names.English, c.Continent.Code, region, c.City.Names.English,
				c.Location.TimeZone, lat, lon, c.Location.AccuracyRadius}
			want := []any{tt.country, tt.name, tt.cont, tt.region, tt.city, tt.tz, tt.lat, tt.lon, tt.radius}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("City(%s) field %d = %v, want %v", tt.ip, i, got[i], want[i])
				}
			}
			if tt.country != "" && c.RegisteredCountry.ISOCode != tt.country {
				t.Errorf("City(%s).RegisteredCountry = %q, want %q", tt.ip, c.RegisteredCountry.ISOCode, tt.country)
			}
			if tt.cont == "EU" && c.Continent.Names.English != "Europe" {
				t.Errorf("City(%s).Continent.Names.English = %q, want Europe", tt.ip, c.Continent.Names.English)
			}
		})
	}
}

func TestWriteCountryAndASN(t *testing.T) {
	dir := t.TempDir()
	cpath := filepath.Join(dir, "country.mmdb")
	if err := mmdb.WriteCountryFile(cpath, entries, build); err != nil {
		t.Fatalf("WriteCountryFile: %v", err)
	}
	r, err := geoip2.Open(cpath)
	if err != nil {
		t.Fatalf("geoip2.Open: %v", err)
	}
	defer r.Close()
	if got := r.Metadata().DatabaseType; got != mmdb.TypeCountry {
		t.Errorf("DatabaseType = %q, want %q", got, mmdb.TypeCountry)
	}
	c, err := r.City(netip.MustParseAddr("203.0.113.1"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Country.ISOCode != "DE" || c.City.Names.English != "" || c.Location.HasData() {
		t.Errorf("Country db record = %+v, want country DE and no city or location", c)
	}

	apath := filepath.Join(dir, "asn.mmdb")
	asns := []mmdb.ASNEntry{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Number: 64500, Org: "Example Carrier GmbH"},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Number: 64501},
	}
	if err := mmdb.WriteASNFile(apath, asns, build); err != nil {
		t.Fatalf("WriteASNFile: %v", err)
	}
	ar, err := geoip2.Open(apath)
	if err != nil {
		t.Fatalf("geoip2.Open: %v", err)
	}
	defer ar.Close()
	for _, tt := range []struct {
		ip  string
		asn uint
		org string
	}{
		{"203.0.113.9", 64500, "Example Carrier GmbH"},
		{"2001:db8:ffff::1", 64501, ""},
		{"192.0.2.1", 0, ""},
	} {
		a, err := ar.ASN(netip.MustParseAddr(tt.ip))
		if err != nil {
			t.Fatalf("ASN(%s): %v", tt.ip, err)
		}
		if a.AutonomousSystemNumber != tt.asn || a.AutonomousSystemOrganization != tt.org {
			t.Errorf("ASN(%s) = %d %q, want %d %q", tt.ip, a.AutonomousSystemNumber, a.AutonomousSystemOrganization, tt.asn, tt.org)
		}
	}
}

// TestMmdblookup reads a written database with libmaxminddb's mmdblookup,
// a reader independent of the Go libraries.
func TestMmdblookup(t *testing.T) {
	bin, err := exec.LookPath("mmdblookup")
	if err != nil {
		t.Skip("mmdblookup not installed (Debian package mmdb-bin): skipping the independent-reader cross-check")
	}
	path := writeCity(t, entries)
	for _, tt := range []struct{ ip, path, want string }{
		{"203.0.113.7", "country iso_code", `"DE"`},
		{"203.0.113.7", "city names en", `"Berlin"`},
		{"203.0.113.129", "country names en", `"France"`},
		{"2001:db8:1::1", "location time_zone", `"Asia/Tokyo"`},
		{"::ffff:203.0.113.7", "subdivisions 0 iso_code", `"BE"`},
	} {
		args := append([]string{"--file", path, "--ip", tt.ip}, strings.Fields(tt.path)...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mmdblookup %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("mmdblookup --ip %s %s = %s, want %s", tt.ip, tt.path, out, tt.want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries []mmdb.Entry
		want    string
	}{
		{"HostBits", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.1/24"), CountryISO: "DE"}}, "host bits"},
		{"Invalid", []mmdb.Entry{{CountryISO: "DE"}}, "invalid prefix"},
		{"Duplicate", []mmdb.Entry{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE"},
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "FR"}}, "duplicate"},
		{"DuplicateMapped", []mmdb.Entry{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE"},
			{Prefix: netip.MustParsePrefix("::ffff:203.0.113.0/120"), CountryISO: "FR"}}, "duplicate"},
		{"Country", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "de"}}, "upper-case"},
		{"Continent", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), ContinentCode: "XX"}}, "continent"},
		{"Lat", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Lat: 91}}, "latitude"},
		{"Lon", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Lon: -181}}, "longitude"},
		{"RegionName", []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), RegionName: "Berlin"}}, "region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mmdb.WriteCity(&bytes.Buffer{}, tt.entries, build)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WriteCity = %v, want error containing %q", err, tt.want)
			}
		})
	}
	if err := mmdb.WriteASN(&bytes.Buffer{}, []mmdb.ASNEntry{{Prefix: netip.MustParsePrefix("203.0.113.0/24")}}, build); err == nil {
		t.Error("WriteASN with AS number 0 succeeded, want error")
	}
	if err := mmdb.WriteASN(&bytes.Buffer{}, []mmdb.ASNEntry{{Prefix: netip.MustParsePrefix("203.0.113.9/24"), Number: 1}}, build); err == nil {
		t.Error("WriteASN with host bits succeeded, want error")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "city.mmdb")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []mmdb.Entry{{Prefix: netip.MustParsePrefix("203.0.113.1/24")}}
	if err := mmdb.WriteCityFile(path, bad, build); err == nil {
		t.Fatal("WriteCityFile with a bad entry succeeded, want error")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("a failed WriteCityFile changed the file to %q", b)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	if err := mmdb.WriteCityFile(filepath.Join(dir, "missing", "x.mmdb"), entries, build); err == nil {
		t.Error("WriteCityFile into a missing directory succeeded, want error")
	}
}

// TestRawOverridesRecord writes what a checked Entry cannot (a NaN and an
// infinite coordinate, a wrong-typed latitude, an extra key) and reads it
// back with maxminddb, field by field.
func TestRawOverridesRecord(t *testing.T) {
	path := writeCity(t, []mmdb.Entry{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), CountryISO: "JP", ContinentCode: "AS", City: "Tokyo", Lat: 1, Lon: 2,
			Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(math.NaN()), "longitude": mmdbtype.Float64(math.Inf(1))}}},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), CountryISO: "KP", ContinentCode: "AS",
			Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.String("north")}, "extra": mmdbtype.Uint16(7)}},
	})
	r, err := maxminddb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var lat, lon float64
	res := r.Lookup(netip.MustParseAddr("192.0.2.1"))
	if err := res.DecodePath(&lat, "location", "latitude"); err != nil || !math.IsNaN(lat) {
		t.Errorf("192.0.2.1 latitude = %v (%v), want NaN", lat, err)
	}
	if err := res.DecodePath(&lon, "location", "longitude"); err != nil || !math.IsInf(lon, 1) {
		t.Errorf("192.0.2.1 longitude = %v (%v), want +Inf", lon, err)
	}
	var city, cc string
	if err := res.DecodePath(&city, "city", "names", "en"); err != nil || city != "Tokyo" {
		t.Errorf("192.0.2.1 city = %q (%v), want Tokyo (kept beside Raw)", city, err)
	}
	res = r.Lookup(netip.MustParseAddr("198.51.100.1"))
	var s string
	if err := res.DecodePath(&s, "location", "latitude"); err != nil || s != "north" {
		t.Errorf("198.51.100.1 latitude = %q (%v), want the string north", s, err)
	}
	var extra uint16
	if err := res.DecodePath(&extra, "extra"); err != nil || extra != 7 {
		t.Errorf("198.51.100.1 extra = %v (%v), want 7", extra, err)
	}
	if err := res.DecodePath(&cc, "country", "iso_code"); err != nil || cc != "KP" {
		t.Errorf("198.51.100.1 country = %q (%v), want KP", cc, err)
	}
}
