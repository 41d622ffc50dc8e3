package event_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

func sampleEvent() *event.Event {
	ev := event.New(time.Date(2026, 11, 27, 23, 30, 0, 0, time.FixedZone("x", 3600)))
	ev.Finish(ev.Event.Start.Add(1500 * time.Microsecond))
	ev.Event.Action, ev.Event.Outcome = event.ActionClosed, event.OutcomeSuccess
	ev.Source.IP = netip.MustParseAddr("192.0.2.10")
	ev.Source.Geo = event.Geo{CountryISOCode: "DE", CountryName: "Germany", Location: &event.Location{Lat: 52.52, Lon: 13.405}}
	ev.Residency.Decision = "redirect"
	return &ev
}

func TestParseHead(t *testing.T) {
	ev := sampleEvent()
	good, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h, err := event.ParseHead(good)
	if err != nil {
		t.Fatalf("ParseHead(sample) = %v", err)
	}
	if h.ID != ev.Event.ID || !h.Timestamp.Equal(ev.Timestamp) || h.Action != event.ActionClosed || h.Decision != "redirect" ||
		h.CountryISOCode != "DE" || h.CountryName != "Germany" || h.Location == nil || *h.Location != *ev.Source.Geo.Location {
		t.Errorf("ParseHead(sample) = %+v, want the fields of %+v", h, ev)
	}
	if got := h.Event(); got.Event.ID != ev.Event.ID || got.Source.Geo.CountryISOCode != "DE" || got.Residency.Decision != "redirect" {
		t.Errorf("Head.Event() = %+v", got)
	}

	tests := []struct {
		name    string
		in      string
		wantErr error  // errors.Is
		wantMsg string // or a substring
	}{
		{"not_json", `not json`, nil, "not one valid JSON value"},
		{"empty", ``, nil, "not one valid JSON value"},
		{"array", `[]`, nil, "not a JSON object"},
		{"null", `null`, nil, "not a JSON object"},
		{"trailing", `{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"x"}} {}`, nil, "not one valid JSON value"},
		{"trailing_brace", `{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"x"}}}`, nil, "not one valid JSON value"},
		{"control_char", "{\"@timestamp\":\"2026-11-27T10:00:00Z\",\"event\":{\"id\":\"a\nb\"}}", nil, "not one valid JSON value"},
		{"case_variant", `{"@Timestamp":"2026-11-27T10:00:00Z","event":{"id":"x"}}`, event.ErrMissingTimestamp, ""},
		{"no_id", `{"@timestamp":"2026-11-27T10:00:00Z","event":{"action":"connection-closed"}}`, event.ErrMissingID, ""},
		{"no_timestamp", `{"event":{"id":"x"}}`, event.ErrMissingTimestamp, ""},
		{"bad_timestamp", `{"@timestamp":"yesterday","event":{"id":"x"}}`, nil, "@timestamp"},
		{"zero_timestamp", `{"@timestamp":"0001-01-01T00:00:00Z","event":{"id":"x"}}`, event.ErrMissingTimestamp, ""},
		{"id_number", `{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":5}}`, event.ErrMissingID, ""},
		{"timestamp_number", `{"@timestamp":1764237600000,"event":{"id":"x"}}`, event.ErrMissingTimestamp, ""},
		{"truncated", string(good[:len(good)/2]), nil, "not one valid JSON value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := event.ParseHead([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseHead(%q) = nil error", tt.in)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseHead(%q) = %v, want %v", tt.in, err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ParseHead(%q) = %v, want it to contain %q", tt.in, err, tt.wantMsg)
			}
		})
	}

	// Unknown fields and wrong types outside id and timestamp pass: the
	// index template rejects them (400, dead-lettered by the ingest).
	lax := `{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"x\u00e9"},"extra":{"a":[1,2]},"source":{"geo":{"location":{"lat":"north"}}}}`
	if h, err := event.ParseHead([]byte(lax)); err != nil || h.ID != "x\u00e9" || h.Location != nil {
		t.Errorf("ParseHead(%s) = %+v, %v; want id \"x\u00e9\", no location, nil error", lax, h, err)
	}
}

// FuzzParseHead: ParseHead accepts only valid JSON objects with an id and
// a timestamp, and agrees with Parse on every event Parse accepts.
func FuzzParseHead(f *testing.F) {
	good, _ := sampleEvent().Marshal()
	f.Add(good)
	f.Add([]byte(`{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"a\"b\\c\u2028\n"}}`))
	f.Add([]byte(`{"@timestamp":"2026-11-27T10:00:00+01:00","event":{"id":"x"},"source":{"geo":{"location":{"lat":1,"lon":2}}}}`))
	f.Add([]byte(`{"event":{"id":"x"}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := event.ParseHead(b)
		if err == nil {
			if !json.Valid(b) {
				t.Fatalf("ParseHead accepted invalid JSON %q", b)
			}
			if h.ID == "" || h.Timestamp.IsZero() {
				t.Fatalf("ParseHead(%q) = %+v without id or timestamp", b, h)
			}
		}
		// Every event Parse accepts, as its producer encodes it, ParseHead
		// reads the same.
		full, err := event.Parse(b)
		if err != nil {
			return
		}
		enc, err := full.Marshal()
		if err != nil {
			return // e.g. a location of NaN: no producer can send it
		}
		h, err = event.ParseHead(enc)
		if err != nil {
			t.Fatalf("Parse accepted %q; ParseHead(%q) = %v", b, enc, err)
		}
		var loc event.Location
		if h.Location != nil {
			loc = *h.Location
		}
		var want event.Location
		if full.Source.Geo.Location != nil {
			want = *full.Source.Geo.Location
		}
		if h.ID != full.Event.ID || !h.Timestamp.Equal(full.Timestamp) || h.Action != full.Event.Action || h.Decision != full.Residency.Decision ||
			h.CountryISOCode != full.Source.Geo.CountryISOCode || h.CountryName != full.Source.Geo.CountryName || loc != want || (h.Location == nil) != (full.Source.Geo.Location == nil) {
			t.Fatalf("ParseHead(%q) = %+v, Parse = %+v", enc, h, full)
		}
	})
}

func BenchmarkParseHead(b *testing.B) {
	v, _ := sampleEvent().Marshal()
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := event.ParseHead(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	v, _ := sampleEvent().Marshal()
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := event.Parse(v); err != nil {
			b.Fatal(err)
		}
	}
}
