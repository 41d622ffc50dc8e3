package server_test

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
)

func withMode(t testing.TB, cfg origin.Config) func(*server.Config) {
	return func(c *server.Config) {
		res, err := origin.NewResolver(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Resolver = res
	}
}

func proxyHeader(t testing.TB, version byte) []byte {
	h := proxyproto.HeaderProxyFromAddrs(version,
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.10:4000")),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:80")))
	var b bytes.Buffer
	if _, err := h.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRefusalLines: a connection refused for its PROXY header gets one
// error= line naming why, then EOF (before, it got EOF only, and a client
// could not tell a missing header from an untrusted one).
func TestRefusalLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  origin.Config
		send []byte
		want string
	}{
		{"RequiredNoHeader", origin.Config{Mode: origin.Required}, []byte("hello\n"), report.ErrorHeaderRequired},
		{"TrustedPeerNoHeader", origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, []byte("hello\n"), report.ErrorHeaderRequired},
		{"UntrustedPeerV1", origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, append(proxyHeader(t, 1), "hello\n"...), report.ErrorHeaderUntrusted},
		{"UntrustedPeerV2", origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, append(proxyHeader(t, 2), "hello\n"...), report.ErrorHeaderUntrusted},
		{"Malformed", origin.Config{Mode: origin.Required}, []byte("PROXY TCP4 nonsense\r\nhello\n"), report.ErrorHeaderMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, withMode(t, tc.cfg))
			c := newLineClient(t, ts.addr)
			c.send(t, string(tc.send))
			line := c.readLine(t)
			r, ok := report.ParseRefusal(line)
			if !ok || r[report.KeyError] != tc.want || !strings.HasPrefix(r[report.KeyPeer], "127.0.0.1:") {
				t.Fatalf("refusal line %q, want error=%s peer=127.0.0.1:port", line, tc.want)
			}
			expectEOF(t, c.Conn, c.br)
		})
	}
}

// TestIgnoredHeaderReported: in mode off a PROXY header is payload; the
// report says so with proxy=ignored, for v1 and v2 (whose signature holds
// "\r\n\r\n\0\r\nQUIT\n"), and says nothing for a plain line.
func TestIgnoredHeaderReported(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct {
		name string
		send []byte
		want string
	}{
		{"V1", append(proxyHeader(t, 1), "hello\n"...), report.ProxyIgnored},
		{"V2", append(proxyHeader(t, 2), "hello\n"...), report.ProxyIgnored},
		{"Plain", []byte("hello\n"), ""},
		{"ProxyWord", []byte("PROXYISH hello\n"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newLineClient(t, ts.addr)
			c.send(t, string(tc.send))
			line := c.readLine(t)
			r, err := report.ParseLine(line)
			if err != nil {
				t.Fatalf("report %q: %v", line, err)
			}
			if r[report.KeyProxy] != tc.want || r[report.KeyVia] != "direct" || !strings.HasPrefix(r[report.KeyClient], "127.0.0.1:") {
				t.Errorf("report %q: want proxy=%q via=direct client=127.0.0.1", line, tc.want)
			}
		})
	}
}
