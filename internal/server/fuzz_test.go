package server_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
)

// v2Header builds a PROXY v2 PROXY/TCP4 header for the seed corpus.
func v2Header(src, dst netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// FuzzFirstBytes sends arbitrary first bytes (PROXY header and first line)
// to a real server over loopback, in each proxy protocol mode, and checks
// the invariants: the server answers a report line, an HTTP response or
// nothing; it never counts more bytes than were sent or fewer than it wrote;
// and the connection yields exactly one event.
func FuzzFirstBytes(f *testing.F) {
	v2 := v2Header(netip.MustParseAddrPort("192.0.2.7:5555"), netip.MustParseAddrPort("198.51.100.1:80"))
	for _, seed := range []string{
		"hello\n",
		"quit\n",
		"",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /healthz HTTP/1.0\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost x\r\n\r\n",
		"GET me a report\n",
		"PROXY TCP4 192.0.2.1 198.51.100.1 1234 80\r\nhello\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PROXY UNKNOWN\r\nhello\n",
		"PROXY TCP4 192.0.2.1 198.51.100.1 1234\r\nhello\n",
		"PROXY " + strings.Repeat("9", 120) + "\r\n",
		string(v2) + "hello\n",
		string(v2[:10]),
		"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00hello\n", // LOCAL
		strings.Repeat("x", 300) + "\n",
		"line one\r\nline two\r\nquit\r\n",
	} {
		for mode := range uint8(3) {
			f.Add(mode, []byte(seed))
		}
	}

	servers := make([]*testServer, 3)
	for i, cfg := range []origin.Config{
		{Mode: origin.Off},
		{Mode: origin.Required, HeaderTimeout: 100 * time.Millisecond},
		{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, HeaderTimeout: 100 * time.Millisecond},
	} {
		res, err := origin.NewResolver(cfg)
		if err != nil {
			f.Fatal(err)
		}
		servers[i] = startServer(f, func(c *server.Config) {
			c.Resolver = res
			c.FirstBytesTimeout = 100 * time.Millisecond
			c.IdleTimeout = 100 * time.Millisecond
			c.MaxLine = 256
		})
	}

	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		ts := servers[int(mode)%len(servers)]
		seen := len(ts.rec.all())
		c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil && !isReset(err) {
			t.Fatalf("reading the answer: %v", err)
		}
		self := addrOf(t, c.LocalAddr())
		var ev event.Event
		n := 0
		for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			for _, e := range ts.rec.all()[seen:] {
				if e.ClientIP.Peer.Port == self.Port() {
					ev, n = e, n+1
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d events for the connection; want 1", n)
		}
		if ev.Event.ID == "" || ev.Event.Action == "" || ev.Event.Reason == "" {
			t.Fatalf("incomplete event: %+v", ev.Event)
		}
		if ev.Source.Bytes > int64(len(data)) || (err == nil && ev.Destination.Bytes != int64(len(out))) {
			t.Fatalf("bytes in/out = %d/%d; sent %d, received %d", ev.Source.Bytes, ev.Destination.Bytes, len(data), len(out))
		}
		if len(out) == 0 {
			return
		}
		switch ev.Network.Protocol {
		case event.ProtocolHTTP:
			if !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
				t.Fatalf("HTTP answer %q", out)
			}
		case event.ProtocolLine:
			l, _ := bufio.NewReader(bytes.NewReader(out)).ReadString('\n')
			r, err := report.ParseLine(l)
			if err != nil {
				t.Fatalf("first answer line %q: %v", l, err)
			}
			if r[report.KeyConn] != ev.Event.ID {
				t.Fatalf("report conn %s; event %s", r[report.KeyConn], ev.Event.ID)
			}
		default:
			// A connection refused for its PROXY header gets one refusal
			// line (error=...) and nothing else.
			r, ok := report.ParseRefusal(strings.TrimSuffix(string(out), "\n"))
			if !ok || !strings.HasPrefix(ev.Event.Reason, "proxy-header-") || bytes.Count(out, []byte("\n")) != 1 {
				t.Fatalf("answer %q without a protocol in the event (reason %s)", out, ev.Event.Reason)
			}
			if want := report.RefusalFor(strings.TrimPrefix(ev.Event.Reason, "proxy-header-")); r[report.KeyError] != want {
				t.Fatalf("refusal %q for reason %s; want error=%s", out, ev.Event.Reason, want)
			}
		}
	})
}
