package udp

import (
	"testing"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
)

// TestIgnoredHeaderSaysSo: in mode off a datagram that begins with a PROXY
// signature is read as data, as TCP reads it; the reply says so with the
// TCP report's key (proxy=ignored), so that a prober that sent the header
// learns it was not used. A plain datagram's reply has no such key.
func TestIgnoredHeaderSaysSo(t *testing.T) {
	r := start(t, Config{Resolver: mustResolver(t, origin.Config{Mode: origin.Off})}, "")
	c := client(t, "127.0.0.1")
	for _, tc := range []struct {
		name string
		d    []byte
		want string
	}{
		{"v2", udpHeader(t, "203.0.113.10:4000", "192.0.2.1:443", padded("hello", 400)), report.ProxyIgnored},
		{"v1", append([]byte("PROXY UDP4 203.0.113.10 192.0.2.1 4000 443\r\n"), padded("hello", 400)...), report.ProxyIgnored},
		{"plain", padded("hello", 400), ""},
	} {
		reply, _, ok := exchange(t, c, r.addr, tc.d, waitFor)
		if !ok {
			t.Fatalf("%s: no reply", tc.name)
		}
		rep, _ := parseReply(t, reply)
		if rep[report.KeyProxy] != tc.want || rep[report.KeyClient] != c.LocalAddr().String() {
			t.Errorf("%s: reply %q: want proxy=%q and the socket's client address", tc.name, reply, tc.want)
		}
	}
}
