package geo_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/mmdb"
)

var built = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// cityEntries place the documentation ranges in real cities, as the tests
// and the demo do, plus one routable network.
var cityEntries = []mmdb.Entry{
	{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU",
		RegionISO: "BE", RegionName: "Berlin", City: "Berlin", Lat: 52.52, Lon: 13.405, AccuracyRadius: 20, TimeZone: "Europe/Berlin"},
	{Prefix: netip.MustParsePrefix("198.51.100.0/24"), CountryISO: "KP", CountryName: "North Korea", ContinentCode: "AS",
		City: "Pyongyang", Lat: 39.0392, Lon: 125.7625, TimeZone: "Asia/Pyongyang"},
	{Prefix: netip.MustParsePrefix("192.0.2.0/24"), CountryISO: "JP", CountryName: "Japan", ContinentCode: "AS",
		RegionISO: "13", RegionName: "Tokyo", City: "Tokyo", Lat: 35.6762, Lon: 139.6503, AccuracyRadius: 50, TimeZone: "Asia/Tokyo"},
	{Prefix: netip.MustParsePrefix("2001:db8:f::/48"), CountryISO: "FR", CountryName: "France", ContinentCode: "EU",
		City: "Paris", Lat: 48.8566, Lon: 2.3522, TimeZone: "Europe/Paris"},
	{Prefix: netip.MustParsePrefix("8.8.8.0/24"), CountryISO: "US", CountryName: "United States", ContinentCode: "NA"},
}

var asnEntries = []mmdb.ASNEntry{
	{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Number: 64500, Org: "Example Carrier GmbH"},
	{Prefix: netip.MustParsePrefix("2001:db8::/32"), Number: 64501, Org: "Example v6"},
}

func writeCity(t testing.TB, dir string, es []mmdb.Entry, at time.Time) string {
	t.Helper()
	path := filepath.Join(dir, "city.mmdb")
	if err := mmdb.WriteCityFile(path, es, at); err != nil {
		t.Fatalf("WriteCityFile: %v", err)
	}
	return path
}

func writeASN(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "asn.mmdb")
	if err := mmdb.WriteASNFile(path, asnEntries, built); err != nil {
		t.Fatalf("WriteASNFile: %v", err)
	}
	return path
}

func open(t testing.TB, cfg geo.Config) *geo.DB {
	t.Helper()
	db, err := geo.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	db := open(t, geo.Config{CityPath: writeCity(t, dir, cityEntries, built), ASNPath: writeASN(t, dir)})

	tests := []struct {
		name string
		ip   string
		want geo.Location
	}{
		{"DocumentationPlacedDE", "203.0.113.7", geo.Location{Class: "public", CountryISO: "DE", CountryName: "Germany",
			ContinentCode: "EU", RegionISO: "BE", RegionName: "Berlin", City: "Berlin", HasLocation: true, Lat: 52.52, Lon: 13.405,
			AccuracyRadius: 20, TimeZone: "Europe/Berlin", ASN: 64500, ASOrg: "Example Carrier GmbH"}},
		{"MappedPlacedDE", "::ffff:203.0.113.7", geo.Location{Class: "public", CountryISO: "DE", CountryName: "Germany",
			ContinentCode: "EU", RegionISO: "BE", RegionName: "Berlin", City: "Berlin", HasLocation: true, Lat: 52.52, Lon: 13.405,
			AccuracyRadius: 20, TimeZone: "Europe/Berlin", ASN: 64500, ASOrg: "Example Carrier GmbH"}},
		{"PlacedKP", "198.51.100.1", geo.Location{Class: "public", CountryISO: "KP", CountryName: "North Korea",
			ContinentCode: "AS", City: "Pyongyang", HasLocation: true, Lat: 39.0392, Lon: 125.7625, TimeZone: "Asia/Pyongyang"}},
		{"IPv6PlacedFR", "2001:db8:f::1", geo.Location{Class: "public", CountryISO: "FR", CountryName: "France",
			ContinentCode: "EU", City: "Paris", HasLocation: true, Lat: 48.8566, Lon: 2.3522, TimeZone: "Europe/Paris",
			ASN: 64501, ASOrg: "Example v6"}},
		{"IPv6DocumentationUnplacedWithASN", "2001:db8:1::1", geo.Location{Class: "documentation", ASN: 64501, ASOrg: "Example v6"}},
		{"CountryOnly", "8.8.8.8", geo.Location{Class: "public", CountryISO: "US", CountryName: "United States", ContinentCode: "NA"}},
		{"PublicUnknown", "9.9.9.9", geo.Location{Class: "public"}},
		{"Loopback", "127.0.0.1", geo.Location{Class: "loopback"}},
		{"Private", "10.1.2.3", geo.Location{Class: "private"}},
		{"Invalid", "", geo.Location{Class: "unspecified"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a netip.Addr
			if tt.ip != "" {
				a = netip.MustParseAddr(tt.ip)
			}
			if d := cmp.Diff(tt.want, db.Lookup(a)); d != "" {
				t.Errorf("Lookup(%s) mismatch (-want +got):\n%s", tt.ip, d)
			}
		})
	}
}

func TestLookupCountryDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	if err := mmdb.WriteCountryFile(path, cityEntries, built); err != nil {
		t.Fatal(err)
	}
	db := open(t, geo.Config{CityPath: path})
	want := geo.Location{Class: "public", CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU"}
	if d := cmp.Diff(want, db.Lookup(netip.MustParseAddr("203.0.113.9"))); d != "" {
		t.Errorf("Lookup on a Country database mismatch (-want +got):\n%s", d)
	}
	if got := db.Lookup(netip.MustParseAddr("192.168.1.1")); got != (geo.Location{Class: "private"}) {
		t.Errorf("Lookup(192.168.1.1) = %+v, want class private only", got)
	}
}

func TestNoDatabase(t *testing.T) {
	var logs bytes.Buffer
	db := open(t, geo.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := db.Lookup(netip.MustParseAddr("203.0.113.7")); got != (geo.Location{Class: "documentation"}) {
		t.Errorf("Lookup without databases = %+v, want class documentation only", got)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("Open without databases logged %d warnings, want 1:\n%s", n, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := db.Watch(ctx); err != nil {
		t.Errorf("Watch without databases = %v, want nil at ctx end", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	city := writeCity(t, dir, cityEntries, built)
	asn := writeASN(t, dir)
	garbage := filepath.Join(dir, "garbage.mmdb")
	if err := os.WriteFile(garbage, []byte("this is not a MaxMind DB"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  geo.Config
		want string
	}{
		{"MissingCity", geo.Config{CityPath: filepath.Join(dir, "nope.mmdb")}, "no such file"},
		{"MissingASN", geo.Config{CityPath: city, ASNPath: filepath.Join(dir, "nope.mmdb")}, "no such file"},
		{"Garbage", geo.Config{CityPath: garbage}, "opening city database"},
		{"ASNAsCity", geo.Config{CityPath: asn}, "not a City or Country database"},
		{"CityAsASN", geo.Config{ASNPath: city}, "not an ASN database"},
		{"OtherType", geo.Config{CityPath: otherType(t, dir)}, `(type "GeoIP2-Domain"): not a City or Country database`},
		{"BadRecord", geo.Config{CityPath: badRecord(t, dir)}, "test lookup of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := geo.Open(tt.cfg)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%+v) succeeded, want error containing %q", tt.cfg, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%+v) = %v, want error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// metric returns the value of the named metric with label database=db.
func metric(t testing.TB, reg *prometheus.Registry, name, db string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "database" && l.GetValue() == db {
					if m.GetGauge() != nil {
						return m.GetGauge().GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// replace writes data into a temporary file beside path and renames it
// over path, as geoipupdate does.
func replace(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func cityBytes(t testing.TB, es []mmdb.Entry, at time.Time) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := mmdb.WriteCity(&b, es, at); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withCountry returns cityEntries with 203.0.113.0/24 placed in cc.
func withCountry(cc string) []mmdb.Entry {
	es := append([]mmdb.Entry(nil), cityEntries...)
	es[0].CountryISO, es[0].CountryName = cc, cc
	return es
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := writeCity(t, dir, cityEntries, built)
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	db := open(t, geo.Config{CityPath: path, Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := netip.MustParseAddr("203.0.113.7")

	if got := metric(t, reg, "originlens_geo_database_build_timestamp_seconds", "city"); got != float64(built.Unix()) {
		t.Errorf("build timestamp gauge = %v, want %v", got, built.Unix())
	}
	if err := db.Reload(); err != nil {
		t.Fatalf("Reload with an unchanged file = %v", err)
	}
	if got := metric(t, reg, "originlens_geo_reloads_total", "city"); got != 0 {
		t.Errorf("reloads after an unchanged file = %v, want 0", got)
	}

	later := built.Add(24 * time.Hour)
	replace(t, path, cityBytes(t, withCountry("AT"), later))
	if err := db.Reload(); err != nil {
		t.Fatalf("Reload with a good replacement = %v", err)
	}
	if got := db.Lookup(addr).CountryISO; got != "AT" {
		t.Errorf("after reload Lookup(%v).CountryISO = %q, want AT", addr, got)
	}
	if got := metric(t, reg, "originlens_geo_database_build_timestamp_seconds", "city"); got != float64(later.Unix()) {
		t.Errorf("build timestamp gauge after reload = %v, want %v", got, later.Unix())
	}

	good := cityBytes(t, withCountry("BE"), later)
	broken := map[string][]byte{
		"Truncated": good[:len(good)/2],
		"Garbage":   []byte("not a database at all"),
		"Corrupted": corrupt(good),
		"WrongType": func() []byte {
			var b bytes.Buffer
			if err := mmdb.WriteASN(&b, asnEntries, later); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}(),
	}
	errs := 0.0
	for name, data := range broken {
		replace(t, path, data)
		if err := db.Reload(); err == nil {
			t.Errorf("Reload with a %s replacement succeeded, want error", name)
		}
		errs++
		if got := db.Lookup(addr).CountryISO; got != "AT" {
			t.Errorf("after a %s replacement Lookup(%v).CountryISO = %q, want AT (old database kept)", name, addr, got)
		}
		if got := metric(t, reg, "originlens_geo_reload_errors_total", "city"); got != errs {
			t.Errorf("reload errors after %s = %v, want %v", name, got, errs)
		}
		if err := db.Reload(); err != nil {
			t.Errorf("second Reload of the same %s file = %v, want nil (not retried until it changes)", name, err)
		}
	}
	if !strings.Contains(logs.String(), "replacement refused") {
		t.Errorf("no error log for refused replacements:\n%s", logs.String())
	}

	// A missing file keeps the open database; its return is picked up.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Errorf("Reload with the file missing = %v, want nil", err)
	}
	replace(t, path, good)
	if err := db.Reload(); err != nil {
		t.Fatalf("Reload with a good file again = %v", err)
	}
	if got := db.Lookup(addr).CountryISO; got != "BE" {
		t.Errorf("after a good replacement Lookup(%v).CountryISO = %q, want BE", addr, got)
	}

	db.Close()
	if got := db.Lookup(addr); got != (geo.Location{Class: "documentation"}) {
		t.Errorf("Lookup after Close = %+v, want class only", got)
	}
	if err := db.Reload(); err == nil {
		t.Error("Reload after Close succeeded, want error")
	}
}

// corrupt returns a copy of an mmdb file whose search tree points outside
// the data section: it opens, but fails verification.
func corrupt(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := 0; i < 4096 && i < len(c); i++ {
		c[i] = 0xff
	}
	return c
}

// TestReloadUnderLoad replaces the database several times, once with a
// broken file, while goroutines look addresses up; run it with -race.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := writeCity(t, dir, cityEntries, built)
	reg := prometheus.NewRegistry()
	db := open(t, geo.Config{CityPath: path, ASNPath: writeASN(t, dir), Registerer: reg, ReloadInterval: 5 * time.Millisecond})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // failure bound only
	defer cancel()
	watchDone := make(chan error, 1)
	go func() { watchDone <- db.Watch(ctx) }()

	addrs := []netip.Addr{
		netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.1"),
		netip.MustParseAddr("2001:db8:f::1"), netip.MustParseAddr("10.0.0.1"),
	}
	stop := make(chan struct{})
	type result struct {
		n   int
		bad string
	}
	results := make(chan result, 4)
	for w := range 4 {
		go func() {
			var r result
			for i := 0; ; i++ {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				if r.n >= 2_000_000 { // bounded even if stop never came
					results <- r
					return
				}
				a := addrs[(i+w)%len(addrs)]
				loc := db.Lookup(a)
				r.n++
				switch a {
				case addrs[0]:
					if loc.CountryISO == "" || loc.ASN != 64500 {
						r.bad = "203.0.113.7 lost its country or AS: " + loc.CountryISO
					}
				case addrs[3]:
					if loc.Class != "private" {
						r.bad = "10.0.0.1 class " + loc.Class
					}
				}
			}
		}()
	}

	waitFor := func(cc string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for db.Lookup(addrs[0]).CountryISO != cc {
			if time.Now().After(deadline) {
				t.Fatalf("Watch did not swap in the database placing 203.0.113.7 in %s", cc)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	for i, cc := range []string{"AT", "BE", "NL"} {
		replace(t, path, cityBytes(t, withCountry(cc), built.Add(time.Duration(i+1)*time.Hour)))
		waitFor(cc)
		if cc == "BE" {
			good := cityBytes(t, withCountry("XX"), built)
			replace(t, path, good[:len(good)/3])
			deadline := time.Now().Add(60 * time.Second)
			for metric(t, reg, "originlens_geo_reload_errors_total", "city") < 1 {
				if time.Now().After(deadline) {
					t.Fatal("the broken replacement was not refused within 60s")
				}
				time.Sleep(2 * time.Millisecond)
			}
			if got := db.Lookup(addrs[0]).CountryISO; got != "BE" {
				t.Fatalf("after the broken replacement Lookup = %q, want BE (old database kept)", got)
			}
		}
	}
	close(stop)
	total := 0
	for range 4 {
		r := <-results
		if r.bad != "" {
			t.Error(r.bad)
		}
		total += r.n
	}
	if total == 0 {
		t.Error("no lookups ran during the reloads")
	}
	if got := metric(t, reg, "originlens_geo_reloads_total", "city"); got < 3 {
		t.Errorf("reloads = %v, want >= 3", got)
	}
	cancel()
	if err := <-watchDone; err != nil {
		t.Errorf("Watch = %v, want nil at ctx end", err)
	}
	t.Logf("%d lookups during 3 reloads and 1 refused replacement", total)
}

// TestMmdblookupAgrees cross-checks Lookup against libmaxminddb's
// mmdblookup, an independent reader.
func TestMmdblookupAgrees(t *testing.T) {
	bin, err := exec.LookPath("mmdblookup")
	if err != nil {
		t.Skip("mmdblookup not installed (Debian package mmdb-bin): skipping the independent-reader cross-check")
	}
	path := writeCity(t, t.TempDir(), cityEntries, built)
	db := open(t, geo.Config{CityPath: path})
	for _, ip := range []string{"203.0.113.7", "198.51.100.1", "192.0.2.200", "2001:db8:f::1", "8.8.8.8"} {
		out, err := exec.Command(bin, "--file", path, "--ip", ip, "country", "iso_code").CombinedOutput()
		if err != nil {
			t.Fatalf("mmdblookup --ip %s: %v\n%s", ip, err, out)
		}
		got := db.Lookup(netip.MustParseAddr(ip)).CountryISO
		if want := `"` + got + `"`; got == "" || !strings.Contains(string(out), want) {
			t.Errorf("Lookup(%s).CountryISO = %q, mmdblookup says %s", ip, got, strings.TrimSpace(string(out)))
		}
	}
}

// TestIPv4OnlyDatabase opens an IPv4-only City database (IPv6 lookups are
// errors in it): it is accepted and IPv6 clients are classified.
func TestIPv4OnlyDatabase(t *testing.T) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-City", IPVersion: 4, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	_, n, _ := net.ParseCIDR("203.0.113.0/24")
	if err := tree.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")}}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "v4.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db := open(t, geo.Config{CityPath: path})
	if got := db.Lookup(netip.MustParseAddr("203.0.113.1")); got.CountryISO != "DE" || got.Class != "public" {
		t.Errorf("Lookup(203.0.113.1) = %+v, want DE", got)
	}
	if got := db.Lookup(netip.MustParseAddr("2001:db8::1")); got != (geo.Location{Class: "documentation"}) {
		t.Errorf("Lookup(2001:db8::1) in an IPv4-only database = %+v, want class only", got)
	}
}

// writeTree writes an mmdbwriter tree into dir/name.
func writeTree(t *testing.T, dir, name string, tree *mmdbwriter.Tree) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return path
}

func otherType(t *testing.T, dir string) string {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-Domain"})
	if err != nil {
		t.Fatal(err)
	}
	return writeTree(t, dir, "domain.mmdb", tree)
}

// badRecord is a City database whose record for 1.1.1.1 (a test lookup)
// does not fit the City schema.
func badRecord(t *testing.T, dir string) string {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-City"})
	if err != nil {
		t.Fatal(err)
	}
	_, n, _ := net.ParseCIDR("1.1.1.0/24")
	if err := tree.Insert(n, mmdbtype.Map{"country": mmdbtype.String("not a map")}); err != nil {
		t.Fatal(err)
	}
	return writeTree(t, dir, "bad-record.mmdb", tree)
}

// TestCacheChurn looks up thousands of distinct records twice (decoded,
// then cached) and checks every answer against the database's contents;
// cache_test.go covers the eviction of a full cache.
func TestCacheChurn(t *testing.T) {
	var es []mmdb.Entry
	for i := range 3000 {
		es = append(es, mmdb.Entry{
			Prefix:     netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(20 + i>>16), byte(i >> 8), byte(i), 0}), 24),
			CountryISO: "DE", City: fmt.Sprintf("city-%d", i), ContinentCode: "EU",
		})
	}
	db := open(t, geo.Config{CityPath: writeCity(t, t.TempDir(), es, built)})
	for round := range 2 {
		for i := range 3000 {
			a := netip.AddrFrom4([4]byte{byte(20 + i>>16), byte(i >> 8), byte(i), 7})
			if got, want := db.Lookup(a).City, fmt.Sprintf("city-%d", i); got != want {
				t.Fatalf("round %d: Lookup(%v).City = %q, want %q", round, a, got, want)
			}
		}
	}
}
