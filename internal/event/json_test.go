package event_test

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// The oracle for AppendJSON is encoding/json.Marshal of the same Event:
// the bytes must be identical, and both must fail on the same events.

// trickyStrings need escaping or are on the edge of it.
var trickyStrings = []string{
	"", "a", "Chicago", "São Paulo", "東京", "Zürich", "😀 emoji",
	`quote " inside`, `back\slash`, "<script>&amp;</script>", "tab\there", "nl\nhere", "cr\rhere",
	"\b\f\x00\x01\x1f\x7f", "line\u2028sep\u2029para", "bad utf8 \xff\xfe", "\xc3", "trunc \xe6\x9d",
	"denied:eu-only", "proxy-header-spoof", "vpce-0123456789abcdef0", "a=b c", "\u00a0nbsp",
}

var trickyAddrs = []netip.Addr{
	{}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"),
	netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::"), netip.MustParseAddr("::ffff:192.0.2.7"),
	netip.MustParseAddr("2001:db8:0:0:1:0:0:1"), netip.MustParseAddr("fe80::1%eth0"),
	netip.MustParseAddr("fe80::1%<odd\"zone>"), netip.MustParseAddr("::1"),
}

var trickyPrefixes = []netip.Prefix{
	{}, {}, netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8:1:2::/64"),
	netip.MustParsePrefix("::ffff:192.0.2.0/120"), netip.MustParsePrefix("::/0"), netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 40),
}

var trickyFloats = []float64{
	0, math.Copysign(0, -1), 41.8781, -87.6298, 90, -180, 1e-6, 9.99e-7, 1e-7, 1.5e-10, 1e20, 1e21, 123456789.123456789,
	-1e-300, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 1.0 / 3,
	math.NaN(), math.Inf(1), math.Inf(-1), 90.0000001, -180.0000001,
}

func trickyTimes() []time.Time {
	fixed := time.FixedZone("odd", 5*3600+45*60)
	return []time.Time{
		{}, time.Unix(0, 0).UTC(), time.Date(2026, 11, 27, 21, 49, 0, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, fixed), time.Date(2026, 6, 1, 0, 0, 0, 1000, time.FixedZone("w", -9*3600-30*60)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(), time.Now().Round(0),
	}
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// randomEvent fills each field at random from the tricky values, leaving
// about a third of the optional ones empty so that omission is covered.
func randomEvent(r *rand.Rand) event.Event {
	times := trickyTimes()
	str := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		return pick(r, trickyStrings)
	}
	var ev event.Event
	if r.IntN(4) > 0 {
		ev = event.New(pick(r, times))
	}
	ev.Timestamp = pick(r, times)
	ev.ECS.Version = str()
	ev.Event.ID, ev.Event.Kind = str(), str()
	switch r.IntN(4) {
	case 0:
		ev.Event.Category = nil
	case 1:
		ev.Event.Category = []string{}
	case 2:
		ev.Event.Category = []string{str(), str()}
	}
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason, ev.Event.Dataset = str(), str(), str(), str()
	ev.Event.End = pick(r, times)
	ev.Event.Duration = r.Int64() - math.MaxInt64/2
	ev.Source.IP, ev.Source.Port, ev.Source.Bytes = pick(r, trickyAddrs), uint16(r.Uint32()), r.Int64N(1<<40)-1
	if r.IntN(3) > 0 {
		ev.Source.Geo = event.Geo{
			CountryISOCode: str(), CountryName: str(), ContinentCode: str(), RegionISOCode: str(),
			RegionName: str(), CityName: str(), Timezone: str(), Class: str(), Error: str(),
			LocationInvalid: r.IntN(4) == 0,
		}
		if r.IntN(2) == 0 {
			ev.Source.Geo.Location = &event.Location{Lat: pick(r, trickyFloats), Lon: pick(r, trickyFloats)}
		}
	}
	if r.IntN(2) == 0 {
		ev.Source.AS.Number = uint32(r.IntN(3)) * r.Uint32()
		ev.Source.AS.Organization.Name = str()
	}
	ev.Destination.IP, ev.Destination.Port, ev.Destination.Bytes = pick(r, trickyAddrs), uint16(r.Uint32()), -r.Int64N(1000)
	ev.Network.Transport, ev.Network.Type, ev.Network.Protocol = str(), str(), str()
	ev.ClientIP.Via, ev.ClientIP.VPCEID = str(), str()
	ev.ClientIP.Peer = event.Peer{IP: pick(r, trickyAddrs), Port: uint16(r.Uint32())}
	ev.ClientIP.LimitPrefix = pick(r, trickyPrefixes)
	if r.IntN(3) > 0 {
		ev.Residency = event.Residency{Jurisdiction: str(), Decision: str(), Region: str(), Rule: str()}
	}
	ev.App.Lang = str()
	if r.IntN(2) == 0 {
		ev.Source.Packets, ev.Destination.Packets = r.Int64N(3)*r.Int64N(1<<40), -r.Int64N(2)
		ev.Flow = event.Flow{FirstSeen: pick(r, times), LastSeen: pick(r, times), End: str(), RateLimited: r.Int64N(2) * r.Int64N(100), Truncated: r.Int64N(2) * r.Int64N(100)}
	}
	if r.IntN(3) > 0 {
		ev.Relay = event.Relay{Upstream: event.Peer{IP: pick(r, trickyAddrs), Port: uint16(r.Uint32())}, Mode: str(), End: str()}
	}
	return ev
}

// written is ev as AppendJSON writes it: a location that is not a place
// becomes location_invalid.
func written(ev event.Event) event.Event {
	if l := ev.Source.Geo.Location; l != nil && !event.ValidLocation(l.Lat, l.Lon) {
		ev.Source.Geo.Location, ev.Source.Geo.LocationInvalid = nil, true
	}
	return ev
}

// checkSame fails when AppendJSON and encoding/json disagree on ev (as
// written, see written).
func checkSame(t testing.TB, ev *event.Event) {
	t.Helper()
	w := written(*ev)
	want, wantErr := json.Marshal(&w)
	prefix := []byte("prefix")
	got, err := ev.AppendJSON(prefix)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("AppendJSON(%+v) error = %v, encoding/json error = %v", ev, err, wantErr)
	}
	if err != nil {
		if !bytes.Equal(got, prefix) {
			t.Fatalf("AppendJSON failed but changed dst to %q", got)
		}
		return
	}
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("AppendJSON dropped dst: %q", got)
	}
	if got := got[len(prefix):]; !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON =\n%s\nencoding/json =\n%s", got, want)
	}
	m, err := ev.Marshal()
	if err != nil || !bytes.Equal(m, want) {
		t.Fatalf("Marshal = %s, %v; want %s", m, err, want)
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		ev := randomEvent(r)
		checkSame(t, &ev)
	}
}

// TestInvalidLocationWrittenAsFlag checks that a location that is not a
// place never fails the encoding: it is dropped and flagged, and the rest
// of the event is written (with encoding/json, NaN lost the whole event).
func TestInvalidLocationWrittenAsFlag(t *testing.T) {
	for _, l := range []event.Location{{Lat: math.NaN(), Lon: 1}, {Lat: 1, Lon: math.Inf(1)}, {Lat: -90.1}, {Lon: 180.1}} {
		ev := event.New(time.Date(2026, 11, 27, 21, 49, 0, 0, time.UTC))
		ev.Finish(ev.Event.Start)
		ev.Source.Geo = event.Geo{CountryISOCode: "JP", Location: &l}
		b, err := ev.Marshal()
		if err != nil {
			t.Fatalf("Marshal with location %+v: %v", l, err)
		}
		got, err := event.Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if g := got.Source.Geo; g.Location != nil || !g.LocationInvalid || g.CountryISOCode != "JP" {
			t.Errorf("location %+v written as %s, want no location, location_invalid true, the country kept", l, b)
		}
	}
}

func TestAppendJSONCases(t *testing.T) {
	full := event.New(time.Date(2026, 11, 27, 21, 49, 0, 5, time.UTC))
	full.Source.IP, full.Source.Port = netip.MustParseAddr("2001:db8::7"), 443
	full.Source.Geo = event.Geo{CountryISOCode: "JP", CityName: "東京", Location: &event.Location{Lat: 35.6, Lon: 139.7}}
	full.Source.AS.Number = 64500
	full.Residency.Decision = "serve"
	full.Finish(full.Event.Start.Add(time.Second))
	tests := []struct {
		name    string
		ev      func() event.Event
		wantErr bool
	}{
		{"Zero", func() event.Event { return event.Event{} }, false},
		{"New", func() event.Event { return event.New(time.Now()) }, false},
		{"Full", func() event.Event { return full }, false},
		{"OnlyASOrg", func() event.Event {
			ev := full
			ev.Source.AS.Number, ev.Source.AS.Organization.Name = 0, "Example & Co"
			return ev
		}, false},
		{"OnlyLocation", func() event.Event {
			ev := full
			ev.Source.Geo = event.Geo{Location: &event.Location{}}
			return ev
		}, false},
		{"OnlyRule", func() event.Event {
			ev := full
			ev.Residency = event.Residency{Rule: "x"}
			return ev
		}, false},
		{"YearTooLarge", func() event.Event {
			ev := full
			ev.Event.End = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			return ev
		}, true},
		{"NegativeYear", func() event.Event {
			ev := full
			ev.Timestamp = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)
			return ev
		}, true},
		{"NaNLatitude", func() event.Event {
			ev := full
			ev.Source.Geo.Location = &event.Location{Lat: math.NaN()}
			return ev
		}, false},
		{"InfLongitude", func() event.Event {
			ev := full
			ev.Source.Geo.Location = &event.Location{Lon: math.Inf(-1)}
			return ev
		}, false},
		{"OnlyNaNLocation", func() event.Event {
			ev := full
			ev.Source.Geo = event.Geo{Location: &event.Location{Lat: math.NaN(), Lon: math.Inf(1)}}
			return ev
		}, false},
		{"LatitudeOutOfRange", func() event.Event {
			ev := full
			ev.Source.Geo.Location = &event.Location{Lat: 90.5, Lon: 10}
			return ev
		}, false},
		{"LookupError", func() event.Event {
			ev := full
			ev.Source.Geo.Error, ev.Source.Geo.LocationInvalid = "city record: <bad>", true
			return ev
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := tt.ev()
			checkSame(t, &ev)
			if _, err := ev.AppendJSON(nil); (err != nil) != tt.wantErr {
				t.Errorf("AppendJSON() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// FuzzAppendJSON compares AppendJSON with encoding/json on events whose
// strings, addresses, numbers and times come from the fuzzer.
func FuzzAppendJSON(f *testing.F) {
	f.Add("Chicago", "<&>\"\\\n\u2028", "2001:db8::1", int64(1798000000123456789), 41.8781, -87.6298, uint32(64500), "serve")
	f.Add("", "", "", int64(0), 0.0, 0.0, uint32(0), "")
	f.Add("\xff\xfe", "東京", "fe80::1%eth\"0", int64(-1), 1e-7, 1e21, uint32(1), "\x00")
	// Runs of plain bytes around escapes, longer than a word; invalid
	// UTF-8 and U+2028/2029 mid-run; times with 0, 3, 6 and 9 fractional
	// digits (trailing zeros are trimmed), in UTC (nanos%(18*3600) == 0).
	f.Add("0123456789abcdef<0123456789abcdef>01234567&", "abcdefgh\"ijklmnop\\qrstuvwx\x1fyz", "192.0.2.1", int64(1798000000000000000), 1.0, 2.0, uint32(0), "abcdefg\u2028hijklmno\u2029p")
	f.Add("abcdefghijklmno\xffpqrstuvw\xc3", "\x7f\x80abcdefgh\xe2\x80abcdefgh", "::1", int64(1798000000123000000), 0.5, 0.5, uint32(2), "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	f.Add("12345678", "é12345678ü", "2001:db8::2", int64(1798000000123456000), 3.0, 4.0, uint32(4), "a\tb")
	f.Add("", "x", "", int64(1798000000123456789-1798000000123456789%(18*3600)), 0.0, 0.0, uint32(6), "")
	f.Fuzz(func(t *testing.T, city, reason, ip string, nanos int64, lat, lon float64, asn uint32, decision string) {
		addr, _ := netip.ParseAddr(ip)
		ts := time.Unix(0, nanos).In(time.FixedZone("f", int(nanos%(18*3600))))
		ev := event.New(ts)
		ev.Timestamp = ts.Add(time.Duration(asn))
		ev.Event.Reason, ev.Event.ID = reason, ip
		ev.Source.IP, ev.ClientIP.Peer.IP, ev.Destination.IP = addr, addr, addr.Unmap()
		ev.Source.Geo = event.Geo{CityName: city, Class: decision}
		if asn%2 == 0 {
			ev.Source.Geo.Location = &event.Location{Lat: lat, Lon: lon}
		}
		ev.Source.AS.Number = asn
		ev.Source.AS.Organization.Name = city
		ev.Residency.Decision = decision
		ev.App.Lang = reason
		checkSame(t, &ev)
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	ev := event.New(time.Now())
	ev.Source.IP, ev.Source.Port = netip.MustParseAddr("192.0.2.1"), 20000
	ev.Source.Geo = event.Geo{CountryISOCode: "US", CountryName: "United States", ContinentCode: "NA",
		CityName: "Chicago", Location: &event.Location{Lat: 41.8781, Lon: -87.6298}, Class: "public"}
	ev.Residency = event.Residency{Decision: "serve", Region: "us-east-2", Rule: "default"}
	ev.Finish(time.Now())
	buf := make([]byte, 0, 2048)
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = ev.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestAppendKey(t *testing.T) {
	for _, a := range trickyAddrs {
		ev := event.Event{Source: event.Source{IP: a}}
		want := a.String()
		if got := string(ev.AppendKey([]byte("x"))); got != "x"+want {
			t.Errorf("AppendKey(%v) = %q, want %q", a, got, "x"+want)
		}
		if got := string(ev.Key()); got != want {
			t.Errorf("Key(%v) = %q, want %q", a, got, want)
		}
	}
}

// TestAppendJSONTimes compares the timestamps with encoding/json across
// the years 0-9999 and just outside, with 0, 3, 6 and 9 fractional digits
// (RFC3339Nano trims trailing zeros), in UTC, in time.Local and in zones
// with an offset.
func TestAppendJSONTimes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const minSec, maxSec = -62167219200, 253402300799 // 0000-01-01, 9999-12-31T23:59:59
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("zero", 0), time.FixedZone("e", 5*3600+45*60), time.FixedZone("w", -3600)}
	secs := []int64{minSec, minSec - 1, maxSec, maxSec + 1, 0, -1, 951782400 /* 2000-02-29 */, 4107542400 /* 2100-03-01 */}
	for range 20000 {
		secs = append(secs, minSec-86400+r.Int64N(maxSec-minSec+2*86400))
	}
	ev := event.New(time.Now())
	for i, sec := range secs {
		ns := r.Int64N(1e9)
		switch i % 4 {
		case 0:
			ns = 0
		case 1:
			ns -= ns % 1e6
		case 2:
			ns -= ns % 1e3
		}
		tm := time.Unix(sec, ns).In(zones[i%len(zones)])
		ev.Timestamp, ev.Event.Start, ev.Event.End = tm, tm.UTC(), tm.Add(time.Duration(i))
		checkSame(t, &ev)
	}
}

// TestAppendJSONStrings compares the string escaping with encoding/json
// for every byte value at every position of strings of 1 to 19 bytes
// (they are scanned four or eight bytes at a time), next to other bytes
// that need escaping, and for random mixes of plain and escaped bytes,
// multi-byte and invalid UTF-8 included.
func TestAppendJSONStrings(t *testing.T) {
	ev := event.New(time.Date(2026, 12, 3, 13, 35, 0, 0, time.UTC))
	ev.Finish(ev.Event.Start)
	check := func(s string) {
		ev.Source.Geo.CityName, ev.Event.Reason = s, s
		checkSame(t, &ev)
	}
	for c := range 256 {
		for n := range 20 {
			for p := range n {
				s := []byte("abcdefghijklmnopqrs"[:n])
				s[p] = byte(c)
				check(string(s))
				s[(p+7)%n] = '\x1f'
				check(string(s))
			}
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	pieces := []string{"a", "0123456789", " ", "~", "\x7f", "\x80", "\xff", "é", "東", "\u2028", "\u2029", "\xe2\x80", `"`, `\`, "<", ">", "&", "=", "\x00", "\x1f", "\n"}
	for range 20000 {
		var s []byte
		for range r.IntN(12) {
			s = append(s, pick(r, pieces)...)
		}
		check(string(s))
	}
}

// TestAppendJSONFloats compares the coordinates with encoding/json: values
// with 0 to 7 decimals (four or fewer are written by hand), the floats
// next to them, and random ones.
func TestAppendJSONFloats(t *testing.T) {
	ev := event.New(time.Date(2026, 12, 3, 13, 35, 0, 0, time.UTC))
	ev.Finish(ev.Event.Start)
	r := rand.New(rand.NewPCG(9, 10))
	pow := []float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7}
	check := func(f float64) {
		ev.Source.Geo.Location = &event.Location{Lat: math.Max(-90, math.Min(90, f)), Lon: math.Mod(f, 180)}
		checkSame(t, &ev)
	}
	for range 20000 {
		f := float64(r.Int64N(4e9)-2e9) / pow[r.IntN(len(pow))]
		if r.IntN(2) == 0 {
			f = float64(r.IntN(181)-90) + f/1e9
		}
		check(f)
		check(math.Nextafter(f, math.Inf(1)))
		check(math.Nextafter(f, math.Inf(-1)))
		check(r.Float64()*360 - 180)
	}
	for _, f := range []float64{0.0001, -0.0001, 0.00005, 1e-5, 0.1, 0.3, 179.9999, -179.99995, 99999.9999, 999999.9999, 1e6 - 1e-4, 1e6, 0.1 + 0.2} {
		check(f)
		ev.Source.Geo.Location = &event.Location{Lat: 1, Lon: f}
		checkSame(t, &ev)
	}
}
