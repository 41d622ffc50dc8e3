package main

import (
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
)

// Micro-benchmarks of the per-connection steps that BenchmarkServeConn and
// the perf profile single out, over the benchmark's own database and the
// default rules (benchstat-friendly: go test -run '^$' -bench . -count 10).

// BenchmarkLocateDecide is the geo lookup of a PROXY source followed by
// the default residency rules.
func BenchmarkLocateDecide(b *testing.B) {
	db := filepath.Join(b.TempDir(), "city.mmdb")
	if err := writeCityDB(db); err != nil {
		b.Fatal(err)
	}
	g, err := geo.Open(geo.Config{CityPath: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	rules := policy.Default()
	cs, err := newClients(256, benchNets, headerDst)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := &cs[i%len(cs)]
		loc := g.Lookup(c.src.Addr())
		if d := rules.Decide(c.src.Addr(), loc); d.Decision != policy.Serve || loc.CountryISO != c.country {
			b.Fatalf("%s: %s, %+v; want %s, serve", c.src, loc.CountryISO, d, c.country)
		}
		i++
	}
}

// benchEvent is an event as the app fills it for a served line client.
func benchEvent() event.Event {
	ev := event.New(time.Now())
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason = "served", "success", "served"
	ev.Source.IP, ev.Source.Port, ev.Source.Bytes = netip.MustParseAddr("192.0.2.1"), 20000, 34
	ev.Source.Geo = event.Geo{CountryISOCode: "US", CountryName: "United States", ContinentCode: "NA",
		CityName: "Chicago", Location: &event.Location{Lat: 41.8781, Lon: -87.6298}, Class: "public"}
	ev.Destination.IP, ev.Destination.Port, ev.Destination.Bytes = netip.MustParseAddr("203.0.113.254"), 80, 200
	ev.Network.Type, ev.Network.Protocol = "ipv4", "line"
	ev.ClientIP.Via, ev.ClientIP.Peer = "proxy-v2", event.Peer{IP: netip.MustParseAddr("127.0.0.1"), Port: 40000}
	ev.Residency = event.Residency{Decision: "serve", Region: "us-east-2", Rule: "default"}
	ev.App.Lang = "en"
	ev.Finish(time.Now())
	return ev
}

// BenchmarkEventNewMarshal is building an event (its UUIDv7 id) and
// encoding it to JSON, as the Kafka producer does once per connection.
func BenchmarkEventNewMarshal(b *testing.B) {
	b.ReportAllocs()
	var n int
	for b.Loop() {
		ev := benchEvent()
		v, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		n = len(v)
	}
	b.ReportMetric(float64(n), "bytes/event")
}

// BenchmarkReportLine is building the report map and its line, as the
// server does once per line-protocol connection.
func BenchmarkReportLine(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r := report.Report{
			report.KeyClient: "192.0.2.1:20000", report.KeyVia: "proxy-v2", report.KeyPeer: "127.0.0.1:40000",
			report.KeyServer: "203.0.113.254:80", report.KeyConn: "01a21ef3-0d7b-7ede-a1ef-fec65d89a8d8",
			report.KeyCountry: "US", report.KeyCity: "Chicago", report.KeyLat: "41.8781", report.KeyLon: "-87.6298",
			report.KeyClass: "public", report.KeyDecision: "serve", report.KeyRegion: "us-east-2",
			report.KeyRule: "default", report.KeyLang: "en",
		}
		if l := r.Line(); len(l) < 100 {
			b.Fatalf("short line %q", l)
		}
	}
}

// BenchmarkEventMarshal is the JSON encoding alone.
func BenchmarkEventMarshal(b *testing.B) {
	ev := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ev.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEventNew is the event's construction alone (its UUIDv7 id).
func BenchmarkEventNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if ev := event.New(time.Now()); ev.Event.ID == "" {
			b.Fatal("no id")
		}
	}
}
