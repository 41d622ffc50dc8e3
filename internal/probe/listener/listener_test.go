package listener_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/probe/listener"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/syncbuf"
)

type syncBuf = syncbuf.Buffer

func serve(tb testing.TB, oc *origin.Config) (string, *syncBuf) {
	tb.Helper()
	var res *origin.Resolver
	if oc != nil {
		var err error
		if res, err = origin.NewResolver(*oc); err != nil {
			tb.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	out := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- listener.New(listener.Config{Resolver: res, Out: out, IdleTimeout: 2 * time.Second, FirstLineTimeout: 2 * time.Second}).Serve(ctx, ln)
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), out
}

func dial(tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

// TestLineSession: report, greeting, echoes, quit closes.
func TestLineSession(t *testing.T) {
	addr, out := serve(t, nil)
	c, br := dial(t, addr)
	io.WriteString(c, "hi\r\n")
	line, _ := br.ReadString('\n')
	rep, err := report.ParseLine(line)
	if err != nil {
		t.Fatalf("first line %q is not a report: %v", line, err)
	}
	if rep["client"] != c.LocalAddr().String() || rep["peer"] != rep["client"] || rep["server"] != addr || rep["decision"] != "serve" || rep["conn"] == "" {
		t.Errorf("report = %v, want client=peer=%s server=%s decision=serve and a conn id", rep, c.LocalAddr(), addr)
	}
	if g, _ := br.ReadString('\n'); !strings.Contains(g, "hello") {
		t.Errorf("greeting = %q", g)
	}
	for _, l := range []string{"one", "two words", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"} {
		io.WriteString(c, l+"\n")
		if got, _ := br.ReadString('\n'); got != l+"\n" {
			t.Errorf("echo of %q = %q", l, got)
		}
	}
	io.WriteString(c, "quit\n")
	if _, err := br.ReadString('\n'); err != io.EOF {
		t.Errorf("after quit: read err = %v, want EOF", err)
	}
	if !strings.Contains(out.String(), "from "+c.LocalAddr().String()+" to "+addr+" (direct)") {
		t.Errorf("listener printed %q, want the source and destination", out)
	}
}

func TestHTTP(t *testing.T) {
	addr, _ := serve(t, nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
	resp, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("response %q, want 200", resp)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(body), &m); err != nil || m["client"] != c.LocalAddr().String() {
		t.Errorf("body %q (err %v), want JSON with client %s", body, err, c.LocalAddr())
	}
}

func TestTooLongFirstLine(t *testing.T) {
	addr, out := serve(t, nil)
	c, br := dial(t, addr)
	io.WriteString(c, strings.Repeat("x", 10000)+"\n")
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("a 10000-byte first line got an answer, want the connection closed")
	}
	if !strings.Contains(out.String(), "line too long") {
		t.Errorf("listener printed %q, want the reason", out)
	}
}

// TestProxyHeaders: a trusted v2 header is printed and used; a LOCAL
// header (NLB health check) is announced and closed; a header from an
// untrusted peer is refused.
func TestProxyHeaders(t *testing.T) {
	addr, out := serve(t, &origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	c, br := dial(t, addr)
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80})
	h.WriteTo(c)
	io.WriteString(c, "hi\n")
	line, _ := br.ReadString('\n')
	rep, err := report.ParseLine(line)
	if err != nil || rep["client"] != "203.0.113.7:5555" || rep["via"] != "proxy-v2" || rep["class"] != "documentation" {
		t.Errorf("report %q (err %v), want client 203.0.113.7:5555 via proxy-v2 class documentation", line, err)
	}
	if !strings.Contains(out.String(), "from 203.0.113.7:5555 to 198.51.100.1:80 (proxy-v2 header from peer 127.0.0.1:") {
		t.Errorf("listener printed %q, want the header's addresses and the peer", out)
	}

	l, lbr := dial(t, addr)
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	local.WriteTo(l)
	if _, err := lbr.ReadString('\n'); err == nil {
		t.Error("a LOCAL health check got an answer, want a close")
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "LOCAL command (health check)") }, "the health check line")
}

func TestClass(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "10.1.2.3": "private", "fd00::1": "private",
		"100.64.0.1": "shared", "169.254.1.1": "link-local", "203.0.113.7": "documentation",
		"2001:db8::1": "documentation", "81.2.69.142": "public", "::ffff:81.2.69.142": "public",
		"0.0.0.0": "unspecified", "224.0.0.1": "multicast",
	} {
		if got := listener.Class(netip.MustParseAddr(in)); got != want {
			t.Errorf("Class(%s) = %s, want %s", in, got, want)
		}
	}
}

func waitFor(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second) // failure bound for a busy machine
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDualStackUnmapped: an IPv4 client of a dual-stack wildcard listener
// is reported as plain IPv4, not ::ffff:a.b.c.d, with and without a
// resolver.
func TestDualStackUnmapped(t *testing.T) {
	off, err := origin.NewResolver(origin.Config{Mode: origin.Off})
	if err != nil {
		t.Fatal(err)
	}
	for name, res := range map[string]*origin.Resolver{"NoResolver": nil, "ModeOff": off} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", ":0")
			if err != nil {
				t.Skipf("no dual-stack wildcard listener here: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- listener.New(listener.Config{Resolver: res}).Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			c, br := dial(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)))
			io.WriteString(c, "hi\n")
			line, _ := br.ReadString('\n')
			rep, err := report.ParseLine(line)
			if err != nil {
				t.Fatalf("report %q: %v", line, err)
			}
			ap, err := netip.ParseAddrPort(rep["client"])
			if err != nil || !ap.Addr().Is4() || rep["client"] != c.LocalAddr().String() {
				t.Errorf("client = %q, want plain IPv4 %s", rep["client"], c.LocalAddr())
			}
			if sp, err := netip.ParseAddrPort(rep["server"]); err != nil || !sp.Addr().Is4() {
				t.Errorf("server = %q, want plain IPv4", rep["server"])
			}
		})
	}
}

// TestServeListenerClosed: a listener closed under Serve ends it with an
// error; cancelling ctx ends it with nil.
func TestServeListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- listener.New(listener.Config{}).Serve(context.Background(), ln) }()
	time.Sleep(20 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "accept") {
			t.Errorf("Serve after ln.Close() = %v, want an accept error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
}

// TestRefusalAndIgnoredHeader: as the app, a refused connection gets one
// error= line then EOF, and in mode off a PROXY header read as data is
// reported as proxy=ignored.
func TestRefusalAndIgnoredHeader(t *testing.T) {
	v2 := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80})
	for _, tc := range []struct {
		name   string
		oc     *origin.Config
		header bool
		want   string // the refusal code, or "" for a report
	}{
		{"RequiredNoHeader", &origin.Config{Mode: origin.Required}, false, report.ErrorHeaderRequired},
		{"UntrustedHeader", &origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, true, report.ErrorHeaderUntrusted},
		{"OffHeaderIgnored", nil, true, ""},
		{"OffPlain", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := serve(t, tc.oc)
			c, br := dial(t, addr)
			if tc.header {
				v2.WriteTo(c)
			}
			io.WriteString(c, "hi\n")
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("no line: %v", err)
			}
			line = strings.TrimSuffix(line, "\n")
			if tc.want != "" {
				r, ok := report.ParseRefusal(line)
				if !ok || r[report.KeyError] != tc.want || !strings.HasPrefix(r[report.KeyPeer], "127.0.0.1:") {
					t.Errorf("got %q, want error=%s peer=127.0.0.1:port", line, tc.want)
				}
				if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
					t.Errorf("after the refusal: %q, %v; want EOF", rest, err)
				}
				return
			}
			rep, err := report.ParseLine(line)
			want := ""
			if tc.header {
				want = report.ProxyIgnored
			}
			if err != nil || rep[report.KeyProxy] != want || rep[report.KeyVia] != "direct" {
				t.Errorf("report %q (%v): want via=direct and proxy=%q", line, err, want)
			}
		})
	}
}
