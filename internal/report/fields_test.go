package report_test

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/report"
)

// TestFieldsOrder: Fields declares one field per key, in Order.
func TestFieldsOrder(t *testing.T) {
	typ := reflect.TypeFor[report.Fields]()
	if typ.NumField() != len(report.Order) {
		t.Fatalf("Fields has %d fields, Order %d keys", typ.NumField(), len(report.Order))
	}
	for i, k := range report.Order {
		if got := strings.ToLower(typ.Field(i).Name); got != k {
			t.Errorf("Fields field %d = %s, want %s", i, got, k)
		}
	}
}

var fieldValues = []string{
	"", "", "", "192.0.2.1:20000", "[2001:db8::1]:443", "proxy-v2", "01a21efc-01bd-7c26-9e48-c5db55365dd0",
	"US", "São Paulo", "New York", "41.8781", "-87.6298", "64500", "a=b", `say "hi"`, "tab\there", "\x00\x7f",
	"東京", "\xff", "decision", " ", "=",
}

// setField sets the field of f for key (via reflection, test only).
func setField(f *report.Fields, i int, v string) {
	reflect.ValueOf(f).Elem().Field(i).SetString(v)
}

// TestFieldsAppendLineMatchesLine: AppendLine writes exactly what
// Report.Line writes for the same values, with and without the empty
// values in the map, and the line parses back to the non-empty values.
func TestFieldsAppendLineMatchesLine(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		var f report.Fields
		withEmpty := report.Report{}
		for i, k := range report.Order {
			v := fieldValues[r.IntN(len(fieldValues))]
			setField(&f, i, v)
			withEmpty[k] = v
		}
		want := withEmpty.Line()
		got := string(f.AppendLine([]byte("x")))
		if got != "x"+want {
			t.Fatalf("AppendLine = %q\nReport.Line = %q", got[1:], want)
		}
		if line := f.Report().Line(); line != want {
			t.Fatalf("Fields.Report().Line() = %q, want %q", line, want)
		}
		back, err := report.ParseLine(want)
		if err != nil {
			t.Fatalf("ParseLine(%q): %v", want, err)
		}
		for k, v := range f.Report() {
			if back[k] != v {
				t.Fatalf("ParseLine(%q)[%s] = %q, want %q", want, k, back[k], v)
			}
		}
	}
}

func BenchmarkFieldsAppendLine(b *testing.B) {
	f := report.Fields{
		Client: "192.0.2.1:20000", Via: "proxy-v2", Peer: "127.0.0.1:40000", Server: "203.0.113.254:80",
		Conn: "01a21ef3-0d7b-7ede-a1ef-fec65d89a8d8", Country: "US", City: "Chicago", Lat: "41.8781", Lon: "-87.6298",
		Class: "public", Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "en",
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.AppendLine(buf[:0])
	}
}

// TestGeoErrorKey: a lookup error is its own key, after class, in both
// forms, and absent when there is none.
func TestGeoErrorKey(t *testing.T) {
	f := report.Fields{Client: "198.51.100.1:1", Via: "direct", Peer: "198.51.100.1:1", Server: "192.0.2.80:80",
		Conn: "c", Country: "KP", Class: "public", Geo: report.GeoError, Decision: "deny", Rule: "embargo"}
	line := string(f.AppendLine(nil))
	if !strings.Contains(line, " class=public geo=error decision=deny ") {
		t.Errorf("line = %q, want ... class=public geo=error decision=deny ...", line)
	}
	r, err := report.ParseLine(line)
	if err != nil || r[report.KeyGeo] != "error" {
		t.Errorf("ParseLine(%q) = %v, %v; want geo=error", line, r, err)
	}
	if got := f.Report()[report.KeyGeo]; got != "error" {
		t.Errorf("Report()[geo] = %q, want error", got)
	}
	f.Geo = ""
	if line := string(f.AppendLine(nil)); strings.Contains(line, "geo=") {
		t.Errorf("line without a lookup error = %q, want no geo key", line)
	}
}
