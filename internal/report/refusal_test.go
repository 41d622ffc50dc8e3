package report_test

import (
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/report"
)

func TestRefusalLine(t *testing.T) {
	line := string(report.AppendRefusal(nil, report.ErrorHeaderRequired, "[2001:db8::1]:4000"))
	if line != "error=proxy-header-required peer=[2001:db8::1]:4000" {
		t.Errorf("AppendRefusal = %q", line)
	}
	r, ok := report.ParseRefusal(line)
	if !ok || r[report.KeyError] != report.ErrorHeaderRequired || r[report.KeyPeer] != "[2001:db8::1]:4000" {
		t.Errorf("ParseRefusal(%q) = %v, %v", line, r, ok)
	}
	for _, notRefusal := range []string{
		"client=1.2.3.4:5 via=direct peer=1.2.3.4:5 server=1.2.3.4:80 conn=c decision=serve",
		"error=", `error="" peer=x`, "error=a  b", "errors=x", "",
	} {
		if r, ok := report.ParseRefusal(notRefusal); ok {
			t.Errorf("ParseRefusal(%q) = %v, true; want not a refusal", notRefusal, r)
		}
	}
	for kind, want := range map[string]string{"missing": report.ErrorHeaderRequired, "spoof": report.ErrorHeaderUntrusted,
		"malformed": report.ErrorHeaderMalformed, "crc": report.ErrorHeaderMalformed, "timeout": "", "empty": "", "io": ""} {
		if got := report.RefusalFor(kind); got != want {
			t.Errorf("RefusalFor(%q) = %q, want %q", kind, got, want)
		}
	}
}

// FuzzParseRefusal: whatever a server sends, a line taken for a refusal
// starts with error= and has a non-empty code, and a refusal written with
// AppendRefusal reads back the same.
func FuzzParseRefusal(f *testing.F) {
	f.Add("error=proxy-header-untrusted peer=127.0.0.1:5", "proxy-header-required", "10.0.0.1:1")
	f.Add(`error="a b" peer=""`, "x y", "")
	f.Add("error=x=y", "\x00", "\"")
	f.Fuzz(func(t *testing.T, line, code, peer string) {
		if r, ok := report.ParseRefusal(line); ok && (!strings.HasPrefix(line, "error=") || r[report.KeyError] == "") {
			t.Fatalf("ParseRefusal(%q) = %v, true", line, r)
		}
		if code == "" {
			return
		}
		out := string(report.AppendRefusal(nil, code, peer))
		r, ok := report.ParseRefusal(out)
		if !ok || r[report.KeyError] != code || r[report.KeyPeer] != peer {
			t.Fatalf("AppendRefusal(%q, %q) = %q, read back %v, %v", code, peer, out, r, ok)
		}
	})
}
