package main

import (
	"bufio"
	"context"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/report"
)

// TestGeoResidencyEndToEnd runs the app in-process behind a trusted PROXY
// v2 sender, with a City and an ASN database that place documentation
// ranges in several countries, and checks that the report, the greeting
// and the event carry the country, jurisdiction, decision and language of
// the address in each PROXY header (the embedded default rules).
func TestGeoResidencyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	built := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	city, asn := filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	err := mmdb.WriteCityFile(city, []mmdb.Entry{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU",
			RegionISO: "BE", RegionName: "Berlin", City: "Berlin", Lat: 52.52, Lon: 13.405, AccuracyRadius: 20, TimeZone: "Europe/Berlin"},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), CountryISO: "KP", CountryName: "North Korea", ContinentCode: "AS",
			City: "Pyongyang", Lat: 39.0392, Lon: 125.7625, TimeZone: "Asia/Pyongyang"},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), CountryISO: "JP", CountryName: "Japan", ContinentCode: "AS",
			RegionISO: "13", RegionName: "Tokyo", City: "Tokyo", Lat: 35.6762, Lon: 139.6503, AccuracyRadius: 50, TimeZone: "Asia/Tokyo"},
		{Prefix: netip.MustParsePrefix("2001:db8:f::/48"), CountryISO: "FR", CountryName: "France", ContinentCode: "EU",
			City: "Paris", Lat: 48.8566, Lon: 2.3522, TimeZone: "Europe/Paris"},
	}, built)
	if err != nil {
		t.Fatal(err)
	}
	err = mmdb.WriteASNFile(asn, []mmdb.ASNEntry{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Number: 64500, Org: "Example Japan KK"},
	}, built)
	if err != nil {
		t.Fatal(err)
	}

	appAddr, stop := runGeoApp(t, "--geoip-db", city, "--asn-db", asn)

	type want struct {
		country, city, class, jurisdiction, decision, region, rule, lang, reason, asn string
		greeting                                                                      string // empty: the connection closes after the report
		lat, lon                                                                      float64
	}
	tests := []struct {
		name   string
		source string
		want   want
	}{
		{"GermanyRedirectedToEU", "203.0.113.10:40001", want{country: "DE", city: "Berlin", class: "public", jurisdiction: "EU",
			decision: "redirect", region: "eu-central-1", rule: "eu-data-stays-in-eu", lang: "de", reason: "eu-data-residency",
			lat: 52.52, lon: 13.405}},
		{"NorthKoreaDenied", "198.51.100.20:40002", want{country: "KP", city: "Pyongyang", class: "public",
			decision: "deny", rule: "embargo", lang: "en", reason: "embargo", lat: 39.0392, lon: 125.7625}},
		{"JapanServedInJapanese", "192.0.2.30:40003", want{country: "JP", city: "Tokyo", class: "public",
			decision: "serve", region: "us-east-2", rule: "default", lang: "ja", asn: "64500", greeting: "こんにちは",
			lat: 35.6762, lon: 139.6503}},
		{"FranceOverIPv6", "[2001:db8:f::1]:40004", want{country: "FR", city: "Paris", class: "public", jurisdiction: "EU",
			decision: "redirect", region: "eu-central-1", rule: "eu-data-stays-in-eu", lang: "fr", reason: "eu-data-residency",
			lat: 48.8566, lon: 2.3522}},
		{"UnplacedBenchmarkingRangeClassified", "198.18.0.1:40005", want{class: "reserved",
			decision: "serve", region: "us-east-2", rule: "default", lang: "en", greeting: "Hello!"}},
	}
	conns := map[string]want{} // event.id -> expectation
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, line, br := proxiedLine(t, appAddr, tt.source)
			w := tt.want
			lat, lon := "", ""
			if w.lat != 0 {
				lat, lon = strconv.FormatFloat(w.lat, 'f', -1, 64), strconv.FormatFloat(w.lon, 'f', -1, 64)
			}
			for k, v := range map[string]string{
				report.KeyClient: tt.source, report.KeyVia: "proxy-v2",
				report.KeyCountry: w.country, report.KeyCity: w.city, report.KeyClass: w.class,
				report.KeyJurisdiction: w.jurisdiction, report.KeyDecision: w.decision, report.KeyRegion: w.region,
				report.KeyRule: w.rule, report.KeyLang: w.lang, report.KeyReason: w.reason, report.KeyASN: w.asn,
				report.KeyLat: lat, report.KeyLon: lon,
			} {
				if r[k] != v {
					t.Errorf("report %s = %q, want %q\nline: %s", k, r[k], v, line)
				}
			}
			if w.greeting != "" {
				g, err := br.ReadString('\n')
				if err != nil || g != w.greeting+"\n" {
					t.Errorf("greeting line = %q (%v), want %q", g, err, w.greeting)
				}
			} else if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after a %s report: %q (%v), want the connection closed", w.decision, rest, err)
			}
			conns[r[report.KeyConn]] = w
		})
	}

	stdout, _ := stop()
	eachEvent(t, stdout, conns, func(ev event.Event, w want) {
		g := ev.Source.Geo
		got := []string{g.CountryISOCode, g.CityName, g.Class, ev.Residency.Jurisdiction, ev.Residency.Decision,
			ev.Residency.Region, ev.Residency.Rule, ev.App.Lang}
		exp := []string{w.country, w.city, w.class, w.jurisdiction, w.decision, w.region, w.rule, w.lang}
		for i := range got {
			if got[i] != exp[i] {
				t.Errorf("event %s field %d = %q, want %q (geo %+v residency %+v lang %q)",
					ev.Event.ID, i, got[i], exp[i], g, ev.Residency, ev.App.Lang)
			}
		}
		if w.lat != 0 && (g.Location == nil || *g.Location != (event.Location{Lat: w.lat, Lon: w.lon})) {
			t.Errorf("event %s source.geo.location = %v, want {%v %v}", ev.Event.ID, g.Location, w.lat, w.lon)
		}
		if w.asn != "" && strconv.FormatUint(uint64(ev.Source.AS.Number), 10) != w.asn {
			t.Errorf("event %s source.as.number = %d, want %s", ev.Event.ID, ev.Source.AS.Number, w.asn)
		}
	})
}

// eachEvent calls check for the event on stdout of each connection in
// conns (by event.id) and fails unless every one has its event.
func eachEvent[W any](t *testing.T, stdout string, conns map[string]W, check func(event.Event, W)) {
	t.Helper()
	seen := 0
	for _, ev := range parseEvents(t, stdout) {
		if w, ok := conns[ev.Event.ID]; ok {
			seen++
			check(ev, w)
		}
	}
	if seen != len(conns) {
		t.Errorf("found %d events of the %d connections on stdout:\n%s", seen, len(conns), stdout)
	}
}

// runGeoApp runs the app in-process behind a trusted PROXY sender on
// 127.0.0.0/8, events on stdout, with args added (the databases). stop
// ends it and returns what it wrote.
func runGeoApp(t *testing.T, args ...string) (net.Addr, func() (stdout, stderr string)) {
	t.Helper()
	cfg, err := parseConfig(append([]string{
		"--listen", "127.0.0.1:0", "--admin", "", "--drain-timeout", "2s",
		"--proxy-protocol", "trusted", "--trusted-proxies", "127.0.0.0/8",
	}, args...), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan net.Addr, 1)
	cfg.ready = func(app, _ net.Addr) { ready <- app }
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &stdout, &stderr) }()
	var appAddr net.Addr
	select {
	case appAddr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second): // failure bound only
		t.Fatal("the app did not start")
	}
	return appAddr, func() (string, string) {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run = %v\n%s", err, stderr.String())
			}
		case <-time.After(60 * time.Second): // failure bound only
			t.Fatal("run did not return")
		}
		return stdout.String(), stderr.String()
	}
}

// proxiedLine connects to the app as a PROXY v2 sender for the client
// source (ip:port), sends a line and returns the parsed report, its line
// and the reader positioned after it.
func proxiedLine(t *testing.T, appAddr net.Addr, source string) (report.Report, string, *bufio.Reader) {
	t.Helper()
	src := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(source))
	dst := &net.TCPAddr{IP: net.ParseIP("192.0.2.80"), Port: 80}
	if src.IP.To4() == nil {
		dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::80"), Port: 80}
	}
	c, err := net.Dial("tcp", appAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := proxyproto.HeaderProxyFromAddrs(2, src, dst).WriteTo(c); err != nil {
		t.Fatalf("writing the PROXY v2 header: %v", err)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the report: %v", err)
	}
	r, err := report.ParseLine(line)
	if err != nil {
		t.Fatalf("report %q: %v", line, err)
	}
	return r, line, br
}

// TestGeoBrokenRecordsEndToEnd runs the app with a City database holding
// records that are valid MaxMind DB but do not decode (a KP record with a
// wrong-typed latitude, a record whose country code is a number) or whose
// coordinates are not a place (NaN and +Inf, out of range). A lookup error
// is reported as geo=error and source.geo.error and denied by the default
// rules (the KP record by the embargo: its country still decodes); bad
// coordinates are dropped and flagged, and every connection's event is
// written. (Before, the KP client was served as class=documentation and
// the NaN record's event was lost: the sink failed on NaN.)
func TestGeoBrokenRecordsEndToEnd(t *testing.T) {
	city := filepath.Join(t.TempDir(), "city.mmdb")
	err := mmdb.WriteCityFile(city, []mmdb.Entry{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), CountryISO: "KP", CountryName: "North Korea", ContinentCode: "AS",
			City: "Pyongyang", Lat: 39.0392, Lon: 125.7625,
			Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.String("39.0392")}}},
		{Prefix: netip.MustParsePrefix("192.0.2.128/25"), ContinentCode: "AS", City: "Nowhere",
			Raw: mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.Uint32(7)}}},
		{Prefix: netip.MustParsePrefix("192.0.2.0/25"), CountryISO: "JP", CountryName: "Japan", ContinentCode: "AS", City: "Tokyo",
			Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(math.NaN()), "longitude": mmdbtype.Float64(math.Inf(1))}}},
		{Prefix: netip.MustParsePrefix("2001:db8:f::/48"), CountryISO: "US", CountryName: "United States", ContinentCode: "NA",
			Raw: mmdbtype.Map{"location": mmdbtype.Map{"latitude": mmdbtype.Float64(95), "longitude": mmdbtype.Float64(-200)}}},
	}, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	appAddr, stop := runGeoApp(t, "--geoip-db", city)

	type want struct {
		country, class, geo, decision, rule string
		geoErr, locInvalid                  bool
	}
	tests := []struct {
		source string
		want   want
	}{
		{"198.51.100.20:40001", want{country: "KP", class: "public", geo: "error", decision: "deny", rule: "embargo", geoErr: true}},
		{"192.0.2.200:40002", want{class: "public", geo: "error", decision: "deny", rule: "geo-lookup-error", geoErr: true}},
		{"192.0.2.10:40003", want{country: "JP", class: "public", decision: "serve", rule: "default", locInvalid: true}},
		{"[2001:db8:f::1]:40004", want{country: "US", class: "public", decision: "serve", rule: "default", locInvalid: true}},
	}
	conns := map[string]want{}
	for _, tt := range tests {
		r, line, _ := proxiedLine(t, appAddr, tt.source)
		w := tt.want
		for k, v := range map[string]string{
			report.KeyCountry: w.country, report.KeyClass: w.class, report.KeyGeo: w.geo,
			report.KeyDecision: w.decision, report.KeyRule: w.rule, report.KeyLat: "", report.KeyLon: "", report.KeyCity: "",
		} {
			if k == report.KeyCity && w.locInvalid {
				continue // the rest of a record with bad coordinates is kept
			}
			if r[k] != v {
				t.Errorf("%s: report %s = %q, want %q\nline: %s", tt.source, k, r[k], v, line)
			}
		}
		conns[r[report.KeyConn]] = w
	}
	stdout, stderr := stop()
	eachEvent(t, stdout, conns, func(ev event.Event, w want) {
		g := ev.Source.Geo
		if g.CountryISOCode != w.country || ev.Residency.Decision != w.decision || ev.Residency.Rule != w.rule {
			t.Errorf("event %s: country %q decision %q rule %q, want %q %q %q", ev.Event.ID,
				g.CountryISOCode, ev.Residency.Decision, ev.Residency.Rule, w.country, w.decision, w.rule)
		}
		if (g.Error != "") != w.geoErr || w.geoErr && !strings.HasPrefix(g.Error, "city record: ") {
			t.Errorf("event %s: source.geo.error = %q, want set %v", ev.Event.ID, g.Error, w.geoErr)
		}
		if g.LocationInvalid != w.locInvalid || g.Location != nil {
			t.Errorf("event %s: source.geo.location %v location_invalid %v, want none and %v", ev.Event.ID,
				g.Location, g.LocationInvalid, w.locInvalid)
		}
	})
	if n := strings.Count(stderr, "GeoIP record does not decode"); n != 1 {
		t.Errorf("%d log lines for 2 lookup errors, want 1 (rate-limited):\n%s", n, stderr)
	}
}
