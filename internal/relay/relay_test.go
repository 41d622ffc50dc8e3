package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/relay"
	"github.com/pires/go-proxyproto"
)

// upstream is a loopback TCP server for the tests: it counts accepts and
// hands each connection to serve.
type upstream struct {
	ln      net.Listener
	accepts chan *net.TCPConn
}

func newUpstream(t *testing.T, network, addr string) *upstream {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, accepts: make(chan *net.TCPConn, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepts <- c.(*net.TCPConn)
		}
	}()
	return u
}

func (u *upstream) next(t *testing.T) *net.TCPConn {
	t.Helper()
	select {
	case c := <-u.accepts:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(30 * time.Second):
		t.Fatal("upstream: no connection within 30s")
	}
	return nil
}

// pair returns a connected client and the relay's accepted side of it.
func pair(t *testing.T, network, listen, from string) (client, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Timeout: 30 * time.Second}
	if from != "" {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))
	}
	c, err := d.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); a.Close() })
	return c.(*net.TCPConn), a.(*net.TCPConn)
}

func apOf(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func newDialer(t *testing.T, upstream string, mode relay.Mode) *relay.Dialer {
	t.Helper()
	d, err := relay.New(context.Background(), relay.Config{Upstream: upstream, Mode: mode, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// plainSetup returns a loopback upstream, a client, the relay's accepted
// side of it and the relay's plain connection to the upstream (not yet
// forwarding).
func plainSetup(t *testing.T) (up *upstream, client, acc, uc *net.TCPConn) {
	t.Helper()
	up = newUpstream(t, "tcp4", "127.0.0.1:0")
	d := newDialer(t, up.ln.Addr().String(), relay.Plain)
	client, acc = pair(t, "tcp4", "127.0.0.1:0", "")
	uc, err := d.Dial(context.Background(), apOf(acc.RemoteAddr()), apOf(acc.LocalAddr()), relay.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return up, client, acc, uc
}

// sendAndSum writes n random bytes to w, half-closes, and returns the hash
// of prefix followed by them.
func sendAndSum(w *net.TCPConn, prefix []byte, n int) ([32]byte, error) {
	b := make([]byte, n)
	rand.Read(b)
	if _, err := w.Write(b); err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append(bytes.Clone(prefix), b...)), w.CloseWrite()
}

// readSum reads r to EOF and returns the hash of what arrived.
func readSum(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, n, err
}

// Ensure a large random payload crosses both ways unchanged, each side
// half-closing on its own, in every mode (the PROXY header, when there is
// one, read off by the upstream first).
func TestForwardBothWays(t *testing.T) {
	for _, mode := range []relay.Mode{relay.Plain, relay.ProxyV1, relay.ProxyV2} {
		t.Run(mode.String(), func(t *testing.T) {
			up := newUpstream(t, "tcp4", "127.0.0.1:0")
			d := newDialer(t, up.ln.Addr().String(), mode)
			client, acc := pair(t, "tcp4", "127.0.0.1:0", "")
			pending := []byte("first bytes read with the header\n")
			uc, err := d.Dial(context.Background(), apOf(acc.RemoteAddr()), apOf(acc.LocalAddr()), relay.Meta{Country: "DE", Decision: "serve"})
			if err != nil {
				t.Fatal(err)
			}
			res := make(chan relay.Result, 1)
			go func() { res <- relay.Forward(acc, pending, uc, 30*time.Second) }()

			srv := up.next(t)
			br := bufio.NewReader(srv)
			if mode != relay.Plain {
				h, err := proxyproto.Read(br)
				if err != nil {
					t.Fatalf("upstream: reading the PROXY header: %v", err)
				}
				if src, _, _ := h.TCPAddrs(); src.AddrPort() != apOf(client.LocalAddr()) {
					t.Errorf("header source = %v, want the client %v", src, client.LocalAddr())
				}
			}
			const n = 8 << 20
			type sum struct {
				s   [32]byte
				n   int64
				err error
			}
			upGot, clientGot := make(chan sum, 1), make(chan sum, 1)
			go func() { s, k, err := readSum(br); upGot <- sum{s, k, err} }()
			go func() { s, k, err := readSum(client); clientGot <- sum{s, k, err} }()
			sentUp, err := sendAndSum(client, pending, n)
			if err != nil {
				t.Fatal(err)
			}
			sentDown, err := sendAndSum(srv, nil, n)
			if err != nil {
				t.Fatal(err)
			}
			u, c := <-upGot, <-clientGot
			if u.err != nil || c.err != nil {
				t.Fatalf("reads: upstream %v, client %v", u.err, c.err)
			}
			if u.n != int64(len(pending)+n) || c.n != n {
				t.Fatalf("upstream read %d bytes, want %d; client read %d, want %d", u.n, len(pending)+n, c.n, n)
			}
			if u.s != sentUp {
				t.Error("the upstream got other bytes than the client sent")
			}
			if c.s != sentDown {
				t.Error("the client got other bytes than the upstream sent")
			}
			var r relay.Result
			select {
			case r = <-res:
			case <-time.After(30 * time.Second):
				t.Fatal("Forward did not return after both half-closes")
			}
			if r.FromClient != int64(len(pending)+n) || r.ToClient != n {
				t.Errorf("Result bytes = %d up, %d down; want %d, %d", r.FromClient, r.ToClient, len(pending)+n, n)
			}
			if r.End != relay.EndClientClosed && r.End != relay.EndUpstreamClosed || r.Err != nil {
				t.Errorf("Result = %+v, want a clean end", r)
			}
		})
	}
}

// Ensure the upstream gets exactly the pending bytes and then the client's
// bytes, in order (hash of the whole stream).
func TestForwardPendingFirst(t *testing.T) {
	up, client, acc, uc := plainSetup(t)
	pending := make([]byte, 100_000)
	rand.Read(pending)
	go relay.Forward(acc, pending, uc, 30*time.Second)
	srv := up.next(t)
	body := make([]byte, 3<<20)
	rand.Read(body)
	go func() { client.Write(body); client.CloseWrite() }()
	got, err := io.ReadAll(srv)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(pending), body...); !bytes.Equal(got, want) {
		t.Fatalf("upstream got %d bytes, not the %d pending+body bytes in order", len(got), len(want))
	}
}

// Ensure a connection where nothing moves ends with EndIdleTimeout and
// both peers see it closed.
func TestForwardIdleTimeout(t *testing.T) {
	up, _, acc, uc := plainSetup(t)
	res := make(chan relay.Result, 1)
	go func() { res <- relay.Forward(acc, nil, uc, 300*time.Millisecond) }()
	up.next(t)
	select {
	case r := <-res:
		if r.End != relay.EndIdleTimeout {
			t.Fatalf("End = %q, want %q (%v)", r.End, relay.EndIdleTimeout, r.Err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no idle timeout within 30s")
	}
}

// Ensure a transfer that runs longer than the idle timeout, one way only,
// is not ended by it (the silent direction sees the other's progress).
func TestForwardBusyIsNotIdle(t *testing.T) {
	up, client, acc, uc := plainSetup(t)
	const idle = 200 * time.Millisecond
	res := make(chan relay.Result, 1)
	go func() { res <- relay.Forward(acc, nil, uc, idle) }()
	srv := up.next(t)
	go func() {
		// 12 chunks, 50 ms apart: 3 idle periods of steady trickle.
		for i := 0; i < 12; i++ {
			srv.Write(bytes.Repeat([]byte{'x'}, 1000))
			time.Sleep(idle / 4)
		}
		srv.CloseWrite()
	}()
	n, err := io.Copy(io.Discard, client)
	if err != nil || n != 12000 {
		t.Fatalf("client read %d bytes (%v), want 12000", n, err)
	}
	client.CloseWrite()
	r := <-res
	if r.End == relay.EndIdleTimeout {
		t.Fatalf("a trickling transfer ended as idle: %+v", r)
	}
}

// Ensure dialing a port where nothing listens fails at once as refused,
// and an address family the upstream lacks as unreachable.
func TestDialFailures(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := newDialer(t, addr, relay.Plain)
	c := netip.MustParseAddrPort("127.0.0.1:1000")
	_, err = d.Dial(context.Background(), c, c, relay.Meta{})
	if !errors.Is(err, relay.ErrRefused) || relay.DialEnd(err) != relay.EndUpstreamRefused {
		t.Errorf("Dial to a closed port: %v, want ErrRefused", err)
	}
	d = newDialer(t, "192.0.2.1:80", relay.Transparent)
	_, err = d.Dial(context.Background(), netip.MustParseAddrPort("[2001:db8::5]:4000"), c, relay.Meta{})
	if !errors.Is(err, relay.ErrUnreachable) || relay.DialEnd(err) != relay.EndUpstreamUnreachable {
		t.Errorf("transparent Dial of an IPv6 client to an IPv4-only upstream: %v, want ErrUnreachable", err)
	}
}

// Ensure the v2 header carries the client and server addresses and the
// documented TLVs, readable by go-proxyproto, and v1 the addresses.
func TestHeader(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.10:40000")
	server := netip.MustParseAddrPort("192.0.2.10:443")
	m := relay.Meta{Country: "FR", Region: "eu", Decision: "redirect", ASN: 64500}
	b, err := relay.Header(relay.ProxyV2, client, server, m)
	if err != nil {
		t.Fatal(err)
	}
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	src, dst, _ := h.TCPAddrs()
	if src.AddrPort() != client || dst.AddrPort() != server {
		t.Errorf("v2 addresses %v -> %v, want %v -> %v", src, dst, client, server)
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	got := map[proxyproto.PP2Type]string{}
	for _, tlv := range tlvs {
		got[tlv.Type] = string(tlv.Value)
	}
	want := map[proxyproto.PP2Type]string{0xE0: "FR", 0xE1: "eu", 0xE2: "redirect", 0xE3: "\x00\x00\xfb\xf4"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("TLV %#x = %q, want %q", byte(k), got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("TLVs %v, want exactly %v", got, want)
	}

	b, err = relay.Header(relay.ProxyV1, netip.MustParseAddrPort("[2001:db8:c::10]:5000"), server, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := "PROXY TCP6 2001:db8:c::10 :: 5000 443\r\n"; string(b) != want {
		t.Errorf("v1 header with a mixed-family server = %q, want %q", b, want)
	}
	// Empty values are left out.
	b, _ = relay.Header(relay.ProxyV2, client, server, relay.Meta{})
	h, _ = proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
	if tlvs, _ := h.TLVs(); len(tlvs) != 0 {
		t.Errorf("empty Meta gave TLVs %v", tlvs)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"transparent", "proxy-v2", "proxy-v1", "plain"} {
		m, err := relay.ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := relay.ParseMode("proxy"); err == nil {
		t.Error("ParseMode(proxy) accepted")
	}
}

func TestNewRejects(t *testing.T) {
	for _, up := range []string{"", "localhost", "127.0.0.1:0", "127.0.0.1:70000", "[::1]:x"} {
		if _, err := relay.New(context.Background(), relay.Config{Upstream: up}); err == nil {
			t.Errorf("New(%q) accepted", up)
		}
	}
	if _, err := relay.New(context.Background(), relay.Config{Upstream: "127.0.0.1:1", Mark: -1}); err == nil {
		t.Error("New accepted a negative mark")
	}
}

// Ensure transparent mode connects from the client's own address and port
// (a local client from 127.0.0.2, so that no routing is needed). Root or
// CAP_NET_ADMIN only.
func TestTransparentLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("transparent mode needs root or CAP_NET_ADMIN")
	}
	for _, tc := range []struct{ network, listen, from string }{
		{"tcp4", "127.0.0.1:0", "127.0.0.2:0"},
		{"tcp6", "[::1]:0", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			up := newUpstream(t, tc.network, tc.listen)
			d := newDialer(t, up.ln.Addr().String(), relay.Transparent)
			client, acc := pair(t, tc.network, tc.listen, tc.from)
			// The client's own port is taken on this host (it is the
			// client's socket): the dial falls back to another port.
			uc, err := d.Dial(context.Background(), apOf(acc.RemoteAddr()), apOf(acc.LocalAddr()), relay.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			srv := up.next(t)
			if got, want := apOf(srv.RemoteAddr()).Addr(), apOf(client.LocalAddr()).Addr(); got != want {
				t.Errorf("upstream sees %v, want the client's address %v", got, want)
			}
		})
	}
}

// Ensure an upstream that resets while the client is silent ends the
// relay at once (not after the idle timeout): the client is closed and the
// end is the upstream's. The upstream-to-client direction runs in Forward's
// own goroutine; its failure must wake the client-to-upstream direction,
// which is blocked reading a quiet client.
func TestForwardUpstreamResetWhileClientSilent(t *testing.T) {
	up, client, acc, uc := plainSetup(t)
	res := make(chan relay.Result, 1)
	go func() { res <- relay.Forward(acc, nil, uc, 10*time.Minute) }()
	srv := up.next(t)
	if _, err := client.Write([]byte("0123456789abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(srv, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	srv.SetLinger(0)
	srv.Close() // unread bytes and linger 0: a reset
	select {
	case r := <-res:
		if r.End != relay.EndUpstreamClosed || r.Err == nil {
			t.Errorf("End = %q, Err = %v; want %q with the reset", r.End, r.Err, relay.EndUpstreamClosed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Forward still running 30s after the upstream reset (idle timeout 10m): the silent client is never released")
	}
}

// Ensure a connection the client half-closed, whose upstream then stays
// silent, ends as EndIdleTimeout: the idle timeout ended it, not the
// client (the event said client-closed with outcome failure).
func TestForwardIdleAfterHalfClose(t *testing.T) {
	up, client, acc, uc := plainSetup(t)
	res := make(chan relay.Result, 1)
	go func() { res <- relay.Forward(acc, nil, uc, 300*time.Millisecond) }()
	srv := up.next(t)
	client.Write([]byte("req"))
	client.CloseWrite()
	if b, err := io.ReadAll(srv); err != nil || string(b) != "req" {
		t.Fatalf("upstream read %q, %v; want req then EOF", b, err)
	}
	select {
	case r := <-res:
		if r.End != relay.EndIdleTimeout || r.FromClient != 3 {
			t.Fatalf("End = %q, FromClient = %d (%v); want %q after 3 bytes", r.End, r.FromClient, r.Err, relay.EndIdleTimeout)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no idle timeout within 30s")
	}
}

// Ensure transparent mode refuses a client address that cannot be a
// unicast source (from a PROXY header: 0.0.0.0, ::, broadcast, multicast).
// Bound to such an address the socket took a local source: the upstream
// saw 127.0.0.1 (or ::1), a local client, for a remote one.
func TestTransparentRefusesNonUnicastClient(t *testing.T) {
	for _, tc := range []struct{ network, listen, client string }{
		{"tcp4", "127.0.0.1:0", "0.0.0.0:5555"},
		{"tcp4", "127.0.0.1:0", "255.255.255.255:5555"},
		{"tcp4", "127.0.0.1:0", "224.0.0.1:5555"},
		{"tcp6", "[::1]:0", "[::]:5555"},
		{"tcp6", "[::1]:0", "[ff02::1]:5555"},
	} {
		t.Run(tc.client, func(t *testing.T) {
			up := newUpstream(t, tc.network, tc.listen)
			d := newDialer(t, up.ln.Addr().String(), relay.Transparent)
			uc, err := d.Dial(context.Background(), netip.MustParseAddrPort(tc.client), apOf(up.ln.Addr()), relay.Meta{})
			if err == nil {
				uc.Close()
				srv := up.next(t)
				t.Fatalf("dialled from %s; the upstream saw %v", tc.client, srv.RemoteAddr())
			}
			if !errors.Is(err, relay.ErrUnreachable) {
				t.Errorf("err = %v, want ErrUnreachable", err)
			}
		})
	}
}

// Ensure a client that reads steadily but slower than one splice round
// per idle timeout is not cut off: progress in the middle of a long
// splice counts. One io.Copy round used to move up to a whole pipe (1 MiB)
// under one write deadline, and the other direction saw no progress until
// it returned: a client reading 400 KB/s with a 1 s idle timeout got its
// stream truncated with a clean FIN after about a second.
func TestForwardSlowReaderIsNotIdle(t *testing.T) {
	up, client, acc, uc := plainSetup(t)
	// Small buffers towards the client: the stream cannot sit in the
	// kernel there, the relay keeps writing while the client reads. The
	// upstream side keeps its large buffers, so one splice can take a
	// whole pipe.
	client.SetReadBuffer(16 << 10)
	acc.SetWriteBuffer(32 << 10)
	const n = 3 << 20
	res := make(chan relay.Result, 1)
	go func() { res <- relay.Forward(acc, nil, uc, time.Second) }()
	srv := up.next(t)
	go func() {
		srv.Write(bytes.Repeat([]byte{'x'}, n))
		srv.CloseWrite()
	}()
	got := 0
	buf := make([]byte, 16<<10)
	deadline := time.Now().Add(60 * time.Second) // failure bound
	client.SetReadDeadline(deadline)
	for got < n && time.Now().Before(deadline) {
		k, err := client.Read(buf)
		got += k
		if err != nil {
			break
		}
		time.Sleep(40 * time.Millisecond) // <= 400 KB/s: 1 MiB takes over 2 s, but never a second without a read
	}
	client.CloseWrite()
	var r relay.Result
	select {
	case r = <-res:
	case <-time.After(60 * time.Second):
		t.Fatalf("Forward did not end 60 s after the client half-closed (the client got %d of %d bytes)", got, n)
	}
	if got != n || r.End == relay.EndIdleTimeout {
		t.Fatalf("the slow reader got %d of %d bytes; Forward ended %q after %d bytes (%v)", got, n, r.End, r.ToClient, r.Err)
	}
}
