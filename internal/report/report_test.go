package report_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/originlens/originlens/internal/report"
)

func TestLineRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   report.Report
		want string
	}{
		{"IPv4", report.Report{"client": "203.0.113.7:5555", "via": "direct", "peer": "203.0.113.7:5555", "server": "198.51.100.1:80", "conn": "id1", "decision": "serve", "country": "DE"},
			"client=203.0.113.7:5555 via=direct peer=203.0.113.7:5555 server=198.51.100.1:80 conn=id1 country=DE decision=serve"},
		{"QuotedCity", report.Report{"client": "[2001:db8::1]:5555", "via": "proxy-v2", "peer": "127.0.0.1:1", "server": "[::1]:80", "conn": "x", "decision": "deny", "city": "São Paulo", "reason": `a "b"=c`},
			`client=[2001:db8::1]:5555 via=proxy-v2 peer=127.0.0.1:1 server=[::1]:80 conn=x city="São Paulo" decision=deny reason="a \"b\"=c"`},
		{"EmptyRequiredQuoted", report.Report{"client": "1.2.3.4:1", "via": "direct", "peer": "1.2.3.4:1", "server": "5.6.7.8:80", "conn": "c", "city": ""},
			`client=1.2.3.4:1 via=direct peer=1.2.3.4:1 server=5.6.7.8:80 conn=c decision=""`},
		{"ExtraKeysSorted", report.Report{"client": "a", "via": "b", "peer": "c", "server": "d", "conn": "e", "decision": "f", "zz": "1", "aa": "2"},
			`client=a via=b peer=c server=d conn=e decision=f aa=2 zz=1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.Line()
			if got != tt.want {
				t.Fatalf("Line() = %s\nwant      %s", got, tt.want)
			}
			back, err := report.ParseLine(got + "\n")
			if err != nil {
				t.Fatalf("ParseLine(%q) error: %v", got, err)
			}
			want := report.Report{}
			for k, v := range tt.in {
				if v != "" || report.Required(k) {
					want[k] = v
				}
			}
			if _, ok := want["decision"]; !ok {
				want["decision"] = ""
			}
			if d := cmp.Diff(want, back); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
			j, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := report.ParseJSON(j)
			if err != nil {
				t.Fatalf("ParseJSON(%s): %v", j, err)
			}
			if d := cmp.Diff(want, fromJSON); d != "" {
				t.Errorf("JSON round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseLineErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"NoEquals", "hello world", report.ErrMalformed},
		{"MissingRequired", "client=1.2.3.4:5 via=direct", report.ErrMissing},
		{"DoubleSpace", "client=a  via=b", report.ErrMalformed},
		{"BadQuote", `client="abc via=b`, report.ErrMalformed},
		{"Duplicate", "client=a client=b", report.ErrMalformed},
		{"TrailingSpace", "client=a ", report.ErrMalformed},
		{"TooLong", "client=" + string(make([]byte, report.MaxLineLength)), report.ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := report.ParseLine(tt.in)
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseLine(%q) error = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

// FuzzParseLine checks that any line the parser accepts encodes back to a
// line that parses to the same report.
func FuzzParseLine(f *testing.F) {
	f.Add("client=203.0.113.7:5555 via=direct peer=203.0.113.7:5555 server=198.51.100.1:80 conn=id1 decision=serve")
	f.Add(`client=[2001:db8::1]:1 via=proxy-v2 peer=a server=b conn=c decision=deny reason="x y"`)
	f.Add(`a="\x00" b=`)
	f.Fuzz(func(t *testing.T, line string) {
		r, err := report.ParseLine(line)
		if err != nil {
			return
		}
		again, err := report.ParseLine(r.Line())
		if err != nil {
			t.Fatalf("ParseLine(Line()) of %q: %v", r.Line(), err)
		}
		for k, v := range r {
			if v == "" && !report.Required(k) {
				continue
			}
			if again[k] != v {
				t.Fatalf("key %s: %q after round trip, want %q", k, again[k], v)
			}
		}
	})
}
