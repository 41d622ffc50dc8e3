package probe_test

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/report"
)

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestSummarize(t *testing.T) {
	oneTo100 := make([]time.Duration, 100)
	for i := range oneTo100 {
		oneTo100[i] = ms(float64(i + 1))
	}
	tests := []struct {
		name string
		in   []time.Duration
		want probe.Summary // percentiles compared within 0.1 %
	}{
		{"Empty", nil, probe.Summary{}},
		{"One", []time.Duration{ms(7)}, probe.Summary{Count: 1, Min: ms(7), P50: ms(7), P90: ms(7), P99: ms(7), Max: ms(7), Mean: ms(7)}},
		// jitter = (|20-10| + |15-20| + |40-15|) / 3 = 40/3 ms
		{"Four", []time.Duration{ms(10), ms(20), ms(15), ms(40)},
			probe.Summary{Count: 4, Min: ms(10), P50: ms(15), P90: ms(40), P99: ms(40), Max: ms(40), Mean: ms(21.25), Jitter: ms(40.0 / 3)}},
		// a steady ramp: every consecutive difference is 1 ms
		{"Ramp", oneTo100, probe.Summary{Count: 100, Min: ms(1), P50: ms(50), P90: ms(90), P99: ms(99), Max: ms(100), Mean: ms(50.5), Jitter: ms(1)}},
		// alternating: jitter 9 ms although the mean is 5.5 ms
		{"Alternating", []time.Duration{ms(1), ms(10), ms(1), ms(10), ms(1)},
			probe.Summary{Count: 5, Min: ms(1), P50: ms(1), P90: ms(10), P99: ms(10), Max: ms(10), Mean: ms(4.6), Jitter: ms(9)}},
		{"ClampedNegative", []time.Duration{-time.Second, 0}, probe.Summary{Count: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := probe.Summarize(tt.in)
			exact := func(name string, g, w time.Duration) {
				if d := g - w; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("Summarize(%v).%s = %v, want %v", tt.in, name, g, w)
				}
			}
			near := func(name string, g, w time.Duration) {
				if d := g - w; d < -w/1000-time.Microsecond || d > w/1000+time.Microsecond {
					t.Errorf("Summarize(%v).%s = %v, want %v within 0.1%%", tt.in, name, g, w)
				}
			}
			if got.Count != tt.want.Count {
				t.Errorf("Count = %d, want %d", got.Count, tt.want.Count)
			}
			exact("Min", got.Min, tt.want.Min)
			exact("Max", got.Max, tt.want.Max)
			exact("Mean", got.Mean, tt.want.Mean)
			exact("Jitter", got.Jitter, tt.want.Jitter)
			near("P50", got.P50, tt.want.P50)
			near("P90", got.P90, tt.want.P90)
			near("P99", got.P99, tt.want.P99)
		})
	}
}

func TestLossPct(t *testing.T) {
	tests := []struct {
		failures, attempts int
		want               float64
	}{{0, 0, 0}, {0, 10, 0}, {1, 4, 25}, {3, 3, 100}, {1, 3, 100.0 / 3}}
	for _, tt := range tests {
		if got := probe.LossPct(tt.failures, tt.attempts); got != tt.want {
			t.Errorf("LossPct(%d, %d) = %v, want %v", tt.failures, tt.attempts, got, tt.want)
		}
	}
}

func TestJudge(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name     string
		saw, exp netip.Addr
		src      probe.ExpectSource
		want     probe.Verdict
	}{
		{"Same", a("203.0.113.7"), a("203.0.113.7"), probe.ExpectLocal, probe.Preserved},
		{"MappedSaw", a("::ffff:203.0.113.7"), a("203.0.113.7"), probe.ExpectFlag, probe.Preserved},
		{"LoadBalancer", a("198.51.100.2"), a("203.0.113.7"), probe.ExpectFlag, probe.NotPreserved},
		{"RelayOnLoopback", a("127.0.0.9"), a("127.0.0.1"), probe.ExpectLocal, probe.NotPreserved},
		{"BehindNAT", a("198.51.100.9"), a("192.168.1.20"), probe.ExpectLocal, probe.Unknown},
		{"BehindCGNAT", a("198.51.100.9"), a("100.64.3.4"), probe.ExpectLocal, probe.Unknown},
		{"BehindULA", a("2001:db8::9"), a("fd00::20"), probe.ExpectLocal, probe.Unknown},
		{"PrivateToPrivateProxy", a("10.0.0.5"), a("192.168.1.20"), probe.ExpectLocal, probe.NotPreserved},
		{"NATButExpectGiven", a("198.51.100.9"), a("192.168.1.20"), probe.ExpectFlag, probe.NotPreserved},
		{"ProxySrc", a("203.0.113.8"), a("203.0.113.7"), probe.ExpectProxySrc, probe.NotPreserved},
		{"NoReport", netip.Addr{}, a("203.0.113.7"), probe.ExpectLocal, probe.NoReport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := probe.Judge(tt.saw, tt.exp, tt.src); got != tt.want {
				t.Errorf("Judge(%v, %v, %v) = %v, want %v", tt.saw, tt.exp, tt.src, got, tt.want)
			}
		})
	}
}

func TestReadLine(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
		wantErr  error
	}{
		{"LF", "a=b\nrest", 10, "a=b", nil},
		{"CRLF", "a=b\r\n", 10, "a=b", nil},
		{"Exact", "0123456789\r\n", 10, "0123456789", nil},
		{"TooLong", "0123456789a\n", 10, "", probe.ErrLineTooLong},
		{"TooLongNoNewline", strings.Repeat("x", 5000), 100, "", probe.ErrLineTooLong},
		{"EOFMidLine", "abc", 10, "", io.ErrUnexpectedEOF},
		{"EOF", "", 10, "", io.EOF},
		{"LongOverBuffer", strings.Repeat("y", 3000) + "\n", 4096, strings.Repeat("y", 3000), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := probe.ReadLine(bufio.NewReaderSize(strings.NewReader(tt.in), 16), tt.max)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadLine(%.20q, %d) = %.20q, %v; want %.20q, %v", tt.in, tt.max, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := probe.ReadLine(bufio.NewReader(strings.NewReader("a\x00b\n")), 10); err == nil {
		t.Error("ReadLine(NUL) succeeded, want an error")
	}
}

// FuzzReadReport feeds arbitrary server bytes through what the probe does
// with them: ReadLine with its limit, report.ParseLine, ClientAddr.
// Invariants: a line never exceeds the limit or holds a newline; an
// accepted report re-encodes to a line that parses to the same report; an
// accepted client address is valid and unmapped.
func FuzzReadReport(f *testing.F) {
	for _, s := range []string{
		"client=203.0.113.7:5555 via=direct peer=203.0.113.7:5555 server=198.51.100.1:80 conn=id1 country=DE decision=serve\n",
		"client=[2001:db8::1]:5555 via=proxy-v2 peer=127.0.0.1:1 server=[::1]:80 conn=x city=\"São Paulo\" decision=deny reason=\"a \\\"b\\\"=c\"\r\n",
		"client=[::ffff:192.0.2.1]:1 via=direct peer=p server=s conn=c decision=\"\"\n",
		"HTTP/1.1 400 Bad Request\r\n",
		"client=1.2.3.4:1 client=1.2.3.4:1\n",
		"\x00\xff\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 256
		line, err := probe.ReadLine(bufio.NewReaderSize(strings.NewReader(string(b)), 16), max)
		if err != nil {
			return
		}
		if len(line) > max || strings.ContainsAny(line, "\n") {
			t.Fatalf("ReadLine returned %q: over %d bytes or with a newline", line, max)
		}
		rep, err := report.ParseLine(line)
		if err != nil {
			return
		}
		back, err := report.ParseLine(rep.Line())
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", rep.Line(), err)
		}
		for k, v := range rep {
			if (v != "" || report.Required(k)) && back[k] != v {
				t.Fatalf("round trip of %q: key %s = %q, want %q", line, k, back[k], v)
			}
		}
		if ap, err := probe.ClientAddr(rep); err == nil && (!ap.IsValid() || ap.Addr().Is4In6()) {
			t.Fatalf("ClientAddr(%q) = %v: invalid or mapped", rep[report.KeyClient], ap)
		}
	})
}
