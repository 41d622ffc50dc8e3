package server_test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
	"github.com/originlens/originlens/internal/sink"
	"github.com/originlens/originlens/internal/syncbuf"
	"github.com/pires/go-proxyproto"
)

// proxyV2 builds a PROXY v2 PROXY header for a TCP client src to dst.
func proxyV2(t testing.TB, src, dst netip.AddrPort) []byte {
	t.Helper()
	tp := proxyproto.TCPv4
	if src.Addr().Is6() {
		tp = proxyproto.TCPv6
	}
	h := &proxyproto.Header{
		Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
		SourceAddr: net.TCPAddrFromAddrPort(src), DestinationAddr: net.TCPAddrFromAddrPort(dst),
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// localV2 is a PROXY v2 LOCAL header (what an NLB health check sends).
func localV2(t testing.TB) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustLimiter(t testing.TB, cfg limit.Config) *limit.Limiter {
	t.Helper()
	l, err := limit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func proxyServer(t testing.TB, mode origin.Mode, l *limit.Limiter) *testServer {
	t.Helper()
	oc := origin.Config{Mode: mode}
	if mode == origin.Trusted {
		oc.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	res, err := origin.NewResolver(oc)
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *server.Config) { c.Resolver, c.Limiter = res, l })
}

// Ensure the per-source limits count an IPv6 client by its /64 (issue
// #13.8): 20 addresses of one /64, sent by a trusted proxy in PROXY v2
// headers, get only what one address would get, the rest are denied with
// reason rate-limited, and every event names the /64 in
// clientip.limit_prefix while source.ip stays the address. On e696028 all
// 20 were served.
func TestLimitsKeyOnIPv6Prefix(t *testing.T) {
	dst := netip.MustParseAddrPort("[2001:db8:ffff::1]:80")
	src := func(net, i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(net), 8: byte(i), 9: 0x5a, 15: byte(i * 7)}), uint16(40000+i))
	}
	tests := []struct {
		name  string
		cfg   limit.Config
		allow int
	}{
		// The flags, with a rate slow enough that no token comes
		// back while the test runs: the burst of 1 is all the /64 gets.
		{"rate", limit.Config{RatePerIP: 1e-4, BurstPerIP: 1, MaxConnsPerIP: 2}, 1},
		// Open connections: the two served ones are held open.
		{"open", limit.Config{MaxConnsPerIP: 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := proxyServer(t, origin.Trusted, mustLimiter(t, tt.cfg))
			want64 := netip.MustParsePrefix("2001:db8:1:7::/64")
			served, denied := 0, 0
			var conns []net.Conn
			for i := range 20 {
				c := newLineClient(t, ts.addr)
				conns = append(conns, c)
				c.send(t, string(proxyV2(t, src(7, i), dst)))
				r := c.report(t)
				if r[report.KeyClient] != src(7, i).String() {
					t.Fatalf("connection %d: report client %q, want %v", i, r[report.KeyClient], src(7, i))
				}
				switch {
				case r[report.KeyDecision] == policy.Deny && r[report.KeyReason] == "rate-limited":
					denied++
				case r[report.KeyDecision] == policy.Serve:
					served++
					c.readLine(t) // greeting; the connection stays open (echo)
				default:
					t.Fatalf("connection %d: report %v", i, r)
				}
			}
			if served != tt.allow || denied != 20-tt.allow {
				t.Errorf("20 addresses of %v: served %d, denied %d; want %d served, the rest rate-limited", want64, served, denied, tt.allow)
			}
			// Another /64 is another source.
			c := newLineClient(t, ts.addr)
			c.send(t, string(proxyV2(t, src(8, 1), dst)))
			if r := c.report(t); r[report.KeyDecision] != policy.Serve {
				t.Errorf("a client of the next /64: report %v, want served", r)
			}
			for _, c := range append(conns, c) {
				c.Close()
			}
			ts.stop(t)
			evs := ts.rec.wait(21)
			limited := 0
			for _, ev := range evs {
				want := want64
				if ev.Source.IP == src(8, 1).Addr() {
					want = netip.MustParsePrefix("2001:db8:1:8::/64")
				}
				if ev.ClientIP.LimitPrefix != want || !want.Contains(ev.Source.IP) {
					t.Errorf("event from %v: limit_prefix %v, want %v", ev.Source.IP, ev.ClientIP.LimitPrefix, want)
				}
				if ev.Event.Reason == "rate-limited" {
					limited++
					if ev.Event.Action != event.ActionDenied || ev.Residency.Decision != policy.Deny {
						t.Errorf("rate-limited event %s residency %+v", ev.Event.Action, ev.Residency)
					}
				}
			}
			if limited != 20-tt.allow {
				t.Errorf("%d rate-limited events, want %d", limited, 20-tt.allow)
			}
		})
	}
}

// Ensure a PROXY v2 LOCAL header (v1 UNKNOWN) buys nothing the socket
// peer would not get (issue #13.9): with payload it is the peer's own
// direct connection, counted by the peer's limits and reported as the
// peer; without payload it is a health check: accepted, closed, one
// health-check event, no report. On e696028 LOCAL with payload got the
// report and echo as a health check, outside the limits, from any peer in
// mode required.
func TestLocalHeaderIsThePeers(t *testing.T) {
	l := mustLimiter(t, limit.Config{MaxConnsPerIP: 1})
	ts := proxyServer(t, origin.Required, l)
	const peer = "127.0.0.71"
	peerKey := netip.MustParsePrefix(peer + "/32")

	// LOCAL + payload: served as the peer, via direct, holding the peer's
	// one connection.
	first := dialFrom(t, peer, ts.addr)
	fc := &lineClient{Conn: first, br: bufio.NewReader(first)}
	fc.send(t, string(localV2(t)))
	r := fc.report(t)
	if r[report.KeyClient] != first.LocalAddr().String() || r[report.KeyPeer] != first.LocalAddr().String() || r[report.KeyVia] != event.ViaDirect {
		t.Fatalf("LOCAL with payload: report client %q peer %q via %q; want the socket peer %v, direct",
			r[report.KeyClient], r[report.KeyPeer], r[report.KeyVia], first.LocalAddr())
	}
	if r[report.KeyDecision] != policy.Serve {
		t.Fatalf("LOCAL with payload, first from the peer: report %v, want served", r)
	}
	fc.readLine(t) // greeting
	fc.send(t, "echo me\n")
	if got := fc.readLine(t); got != "echo me" {
		t.Fatalf("echo = %q", got)
	}

	// A second LOCAL + payload (v2 and v1) from the same peer: over its
	// limit, like any second connection of the peer.
	for _, hdr := range []string{string(localV2(t)), "PROXY UNKNOWN\r\n"} {
		c2 := dialFrom(t, peer, ts.addr)
		lc := &lineClient{Conn: c2, br: bufio.NewReader(c2)}
		lc.send(t, hdr)
		r := lc.report(t)
		if r[report.KeyDecision] != policy.Deny || r[report.KeyReason] != "rate-limited" || r[report.KeyVia] != event.ViaDirect {
			t.Errorf("second LOCAL with payload from %s (%q): report %v, want via=direct decision=deny reason=rate-limited", peer, hdr[:5], r)
		}
		expectEOF(t, c2, lc.br)
	}
	// An HTTP health check (LOCAL, then a request) from the peer gets what
	// /healthz gives anyone, and nothing more: / is denied.
	for path, wantCode := range map[string]int{"/healthz": http.StatusOK, "/": http.StatusForbidden} {
		c3 := dialFrom(t, peer, ts.addr)
		io.WriteString(c3, string(localV2(t))+"GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c3), nil)
		if err != nil {
			t.Fatalf("LOCAL + GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != wantCode {
			t.Errorf("LOCAL + GET %s over the peer's limit = %d, want %d", path, resp.StatusCode, wantCode)
		}
	}
	fc.send(t, "quit\n")
	expectEOF(t, first, fc.br)
	waitFor(t, func() bool { return l.Len() == 0 })

	// LOCAL, no payload: a health check; no report, one event.
	hc := dialFrom(t, peer, ts.addr)
	io.WriteString(hc, string(localV2(t)))
	hc.(*net.TCPConn).CloseWrite()
	expectEOF(t, hc, nil)

	// A LOCAL health check still holds the peer's connection while it is
	// open: it does not escape the limit either.
	held := dialFrom(t, peer, ts.addr)
	io.WriteString(held, string(localV2(t)))
	waitFor(t, func() bool { return l.Len() == 1 })
	c4 := dialFrom(t, peer, ts.addr)
	lc4 := &lineClient{Conn: c4, br: bufio.NewReader(c4)}
	lc4.send(t, string(localV2(t)))
	if r := lc4.report(t); r[report.KeyReason] != "rate-limited" {
		t.Errorf("LOCAL with payload while a LOCAL check is open: report %v, want rate-limited", r)
	}
	expectEOF(t, c4, lc4.br)
	held.Close()

	ts.stop(t)
	evs := ts.rec.wait(int(ts.rec.published.Load()))
	if len(evs) != 8 {
		t.Fatalf("%d events, want 8", len(evs))
	}
	src := bySource(evs)
	checks := 0
	for _, ev := range evs {
		if ev.Source.IP.String() != peer || ev.ClientIP.LimitPrefix != peerKey {
			t.Errorf("event %s: source %v limit_prefix %v; want the peer %s, %v", ev.Event.Reason, ev.Source.IP, ev.ClientIP.LimitPrefix, peer, peerKey)
		}
		if ev.Event.Reason == "health-check" {
			checks++
			if ev.ClientIP.Via != event.ViaProxyV2 || ev.Source.Bytes != int64(len(localV2(t))) || ev.Destination.Bytes != 0 {
				t.Errorf("health-check event: via %s, bytes in %d out %d; want proxy-v2, the header only, nothing written",
					ev.ClientIP.Via, ev.Source.Bytes, ev.Destination.Bytes)
			}
		} else if ev.ClientIP.Via != event.ViaDirect {
			t.Errorf("LOCAL connection with payload (%s): via %s, want direct", ev.Event.Reason, ev.ClientIP.Via)
		}
	}
	if checks != 2 {
		t.Errorf("%d health-check events, want 2 (the two LOCAL connections without payload)", checks)
	}
	if ev := src[addrOf(t, first.LocalAddr())]; ev.Event.Reason != "served" || ev.Event.Action != event.ActionClosed {
		t.Errorf("first LOCAL with payload: event %s/%s, want connection-closed/served", ev.Event.Action, ev.Event.Reason)
	}
	if ev := src[addrOf(t, c4.LocalAddr())]; ev.Event.Reason != "rate-limited" {
		t.Errorf("LOCAL with payload over the limit: event reason %s, want rate-limited", ev.Event.Reason)
	}
}

// Ensure the HTTP header limit is exactly server.MaxHeaderBytes (issue
// #13.10): a header (request line to the empty line) of exactly that many
// bytes is answered, one byte more gets 431, whether the header is the
// first request (whose first bytes the sniff buffered) or a pipelined
// second one, and with a reader buffer larger than the limit (--max-line
// over it). On e696028 the first request's limit was about 20 KB.
func TestHTTPHeaderLimitExact(t *testing.T) {
	// request returns a GET /healthz of exactly n header bytes.
	request := func(n int) string {
		head := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
		tail := "\r\n\r\n"
		return head + strings.Repeat("a", n-len(head)-len(tail)) + tail
	}
	const small = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, maxLine := range []int{0, 4 * server.MaxHeaderBytes} {
		ts := startServer(t, func(c *server.Config) { c.MaxLine = maxLine })
		for _, pipelined := range []bool{false, true} {
			for _, n := range []int{server.MaxHeaderBytes, server.MaxHeaderBytes + 1} {
				t.Run(fmt.Sprintf("maxline=%d/pipelined=%v/%d", maxLine, pipelined, n), func(t *testing.T) {
					req := request(n)
					if len(req) != n {
						t.Fatalf("built %d bytes, want %d", len(req), n)
					}
					if pipelined {
						req = small + req
					}
					c := newLineClient(t, ts.addr)
					go io.WriteString(c, req) // one write: the sniff buffers its first 4 KiB
					if pipelined {
						resp, err := http.ReadResponse(c.br, nil)
						if err != nil {
							t.Fatal(err)
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					resp, err := http.ReadResponse(c.br, nil)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					want := http.StatusOK
					if n > server.MaxHeaderBytes {
						want = http.StatusRequestHeaderFieldsTooLarge
					}
					if resp.StatusCode != want {
						t.Errorf("header of %d bytes (limit %d) = %d, want %d", n, server.MaxHeaderBytes, resp.StatusCode, want)
					}
				})
			}
		}
	}
}

// Ensure the header limit holds when the header trickles in: bytes that
// arrive one segment at a time are counted the same.
func TestHTTPHeaderLimitTrickled(t *testing.T) {
	ts := startServer(t, nil)
	for _, n := range []int{server.MaxHeaderBytes, server.MaxHeaderBytes + 1} {
		head := "GET /healthz HTTP/1.1\r\nHost: x\r\n"
		c := newLineClient(t, ts.addr)
		c.send(t, head)
		left := n - len(head) - 2
		for i := 0; left > 0; i++ {
			line := fmt.Sprintf("X-%d: ", i)
			k := min(1000, left) - len(line) - 2
			if k < 0 { // the last few bytes: one short header
				line, k = "X:", left-4
			}
			c.send(t, line+strings.Repeat("b", k)+"\r\n")
			left -= len(line) + k + 2
			time.Sleep(time.Millisecond)
		}
		c.send(t, "\r\n")
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if n > server.MaxHeaderBytes {
			want = http.StatusRequestHeaderFieldsTooLarge
		}
		if resp.StatusCode != want {
			t.Errorf("trickled header of %d bytes = %d, want %d", n, resp.StatusCode, want)
		}
	}
}

// BenchmarkFirstBytesLimited is BenchmarkFirstBytes with both per-source
// limits on (never reached): the limiter's cost per connection, and the
// event's clientip.limit_prefix encoded.
func BenchmarkFirstBytesLimited(b *testing.B) {
	s, err := sink.New(io.Discard, sink.Config{})
	if err != nil {
		b.Fatal(err)
	}
	l := mustLimiter(b, limit.Config{MaxConnsPerIP: 1 << 20, RatePerIP: 1e9, BurstPerIP: 1 << 30})
	addr := startServer(b, func(c *server.Config) { c.Publisher, c.Limiter = s, l }).addr
	var d net.Dialer
	br := bufio.NewReaderSize(nil, 4096)
	b.ReportAllocs()
	for b.Loop() {
		lineRoundTrip(b, &d, addr, br)
	}
}

// Ensure the header limit does not depend on how the bytes are cut into
// writes: random cuts of headers around the limit, as a first request and
// after a pipelined one, are answered 200 up to the limit and 431 above.
func TestHTTPHeaderLimitAnyCut(t *testing.T) {
	ts := startServer(t, nil)
	rng := rand.New(rand.NewPCG(13, 10))
	const small = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for i := range 24 {
		n := server.MaxHeaderBytes - 1 + i%3
		head := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
		req := head + strings.Repeat("c", n-len(head)-4) + "\r\n\r\n"
		if i%2 == 1 {
			req = small + req
		}
		cuts := []int{0, len(req)}
		for range 1 + rng.IntN(4) {
			cuts = append(cuts, rng.IntN(len(req)))
		}
		slices.Sort(cuts)
		c := newLineClient(t, ts.addr)
		go func() {
			for k := 1; k < len(cuts); k++ {
				if _, err := io.WriteString(c, req[cuts[k-1]:cuts[k]]); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		if i%2 == 1 {
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("header of %d bytes cut at %v: %v", n, cuts, err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if n > server.MaxHeaderBytes {
			want = http.StatusRequestHeaderFieldsTooLarge
		}
		if resp.StatusCode != want {
			t.Errorf("header of %d bytes cut at %v (pipelined %v) = %d, want %d", n, cuts, i%2 == 1, resp.StatusCode, want)
		}
		c.Close()
	}
}

// Ensure a real HTTP health check behind PROXY v2 LOCAL keeps working now
// that LOCAL is the peer's own connection: HAProxy's "option httpchk" with
// send-proxy-v2 sends LOCAL and GET /healthz; the app answers it as the
// peer's direct connection, counted by the peer's limits, and even checks
// over the limit get /healthz's 200, so the proxy never marks the app down
// because of the limits. Client traffic through the same proxy is still
// served by its own (header) address.
func TestHAProxyHTTPCheckThroughLocal(t *testing.T) {
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Skipf("skipping: %s not installed (apt-get install haproxy): %v", haproxyBin, err)
	}
	// One token for each source, none back while the test runs.
	l := mustLimiter(t, limit.Config{RatePerIP: 1e-4, BurstPerIP: 1})
	ts := proxyServer(t, origin.Trusted, l)
	front := freeAddrs(t, 1)[0]
	cfg := fmt.Sprintf(`global
    maxconn 50
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 5s
frontend fe
    bind %s
    default_backend be
backend be
    option httpchk GET /healthz
    server app %s send-proxy-v2 check inter 100ms fall 2 rise 1
`, front, ts.addr)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	cmd := exec.Command(haproxyBin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", logs.String())
		}
	})

	// HTTP checks arrive as the peer's direct HTTP connections.
	checks := func() (all, limited int) {
		for _, ev := range ts.rec.all() {
			if ev.Network.Protocol == event.ProtocolHTTP && ev.ClientIP.Via == event.ViaDirect && ev.Source.IP.String() == "127.0.0.1" {
				all++
				if ev.Residency.Rule == "per-source-limit" {
					limited++
				}
			}
		}
		return all, limited
	}
	waitFor(t, func() bool { all, _ := checks(); return all >= 6 })

	// The backend is up: a client through the proxy is served, by its own
	// address.
	c := dialFrom(t, "127.0.0.52", front)
	lc := &lineClient{Conn: c, br: bufio.NewReader(c)}
	r := lc.report(t)
	if r[report.KeyClient] != c.LocalAddr().String() || r[report.KeyVia] != event.ViaProxyV2 || r[report.KeyDecision] != policy.Serve {
		t.Errorf("client through haproxy: report %v, want itself via proxy-v2, served", r)
	}
	c.Close()

	cmd.Process.Kill()
	cmd.Wait()
	all, limited := checks()
	if limited < all-1 || limited == 0 {
		t.Errorf("%d HTTP checks, %d counted over the peer's limit; want all but the first (burst 1)", all, limited)
	}
	for _, ev := range ts.rec.all() {
		if ev.Event.Reason == "health-check" {
			t.Errorf("an HTTP check with payload recorded as a health check: %+v", ev.Event)
		}
		if ev.ClientIP.Via == event.ViaDirect && ev.Network.Protocol == event.ProtocolHTTP && ev.Event.Reason != "served" {
			t.Errorf("HTTP check event %s/%s, want served (/healthz answers 200)", ev.Event.Action, ev.Event.Reason)
		}
	}
	if strings.Contains(logs.String(), "is DOWN") {
		t.Errorf("haproxy marked the app down:\n%s", logs.String())
	}
}
