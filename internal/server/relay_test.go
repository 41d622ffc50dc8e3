package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/server"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// relayUpstream is a loopback upstream that counts its accepts and hands
// each connection to serve (in its own goroutine).
type relayUpstream struct {
	addr    string
	accepts atomic.Int64
}

func startRelayUpstream(t *testing.T, serve func(c *net.TCPConn)) *relayUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &relayUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepts.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return u
}

func relayDialer(t *testing.T, upstream string, mode relay.Mode) *relay.Dialer {
	t.Helper()
	d, err := relay.New(context.Background(), relay.Config{Upstream: upstream, Mode: mode, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func relayRandom(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// relayed is what the upstream of TestRelayBytesUnchanged saw.
type relayed struct {
	header *proxyproto.Header
	got    []byte
	err    error
}

// Ensure a served client's bytes reach the upstream unchanged and the
// upstream's reach the client unchanged, both ways at once, each side
// half-closing on its own; the app writes nothing of its own; one event
// with the relay fields and the byte counts. In the proxy modes the
// upstream reads a header with the client's address first. With a PROXY
// header expected, the client's header is not forwarded.
func TestRelayBytesUnchanged(t *testing.T) {
	for _, tc := range []struct {
		mode      relay.Mode
		inHeader  bool // the client sends a PROXY v2 header (mode required)
		wantProxy int  // the PROXY version the upstream reads; 0: none
	}{
		{relay.Plain, false, 0},
		{relay.Plain, true, 0},
		{relay.ProxyV2, false, 2},
		{relay.ProxyV2, true, 2},
		{relay.ProxyV1, false, 1},
	} {
		name := tc.mode.String()
		if tc.inHeader {
			name += "-behind-proxy-v2"
		}
		t.Run(name, func(t *testing.T) {
			const n = 4 << 20
			down := relayRandom(n)
			seen := make(chan relayed, 1)
			up := startRelayUpstream(t, func(c *net.TCPConn) {
				br := bufio.NewReader(c)
				var r relayed
				if tc.wantProxy != 0 {
					if r.header, r.err = proxyproto.Read(br); r.err != nil {
						seen <- r
						return
					}
				}
				go func() { c.Write(down); c.CloseWrite() }()
				r.got, r.err = io.ReadAll(br)
				seen <- r
			})
			ts := startServer(t, func(c *server.Config) {
				c.Relay = relayDialer(t, up.addr, tc.mode)
				if tc.inHeader {
					res, err := origin.NewResolver(origin.Config{Mode: origin.Required})
					if err != nil {
						t.Fatal(err)
					}
					c.Resolver = res
				}
			})
			conn := dial(t, ts.addr).(*net.TCPConn)
			client := netip.MustParseAddrPort("198.51.100.10:40000")
			var hdr []byte
			if tc.inHeader {
				h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:80")))
				hdr, _ = h.Format()
			} else {
				client = addrOf(t, conn.LocalAddr())
			}
			payload := relayRandom(n)
			gotDown := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(conn); gotDown <- b }()
			if _, err := conn.Write(append(hdr, payload...)); err != nil {
				t.Fatal(err)
			}
			conn.CloseWrite()
			r := <-seen
			if r.err != nil {
				t.Fatalf("upstream: %v", r.err)
			}
			if !bytes.Equal(r.got, payload) {
				t.Errorf("upstream got %d bytes, not the client's %d bytes unchanged", len(r.got), n)
			}
			if !bytes.Equal(<-gotDown, down) {
				t.Errorf("client did not get the upstream's %d bytes unchanged", n)
			}
			if tc.wantProxy != 0 {
				src, _, _ := r.header.TCPAddrs()
				if int(r.header.Version) != tc.wantProxy || src.AddrPort() != client {
					t.Errorf("upstream header v%d from %v, want v%d from the client %v", r.header.Version, src, tc.wantProxy, client)
				}
			}
			ev := ts.rec.wait(1)[0]
			if ev.Relay.Mode != tc.mode.String() || ev.Relay.Upstream.IP.String()+":"+relayPort(ev.Relay.Upstream.Port) != up.addr {
				t.Errorf("event relay = %+v, want mode %s upstream %s", ev.Relay, tc.mode, up.addr)
			}
			if ev.Relay.End != relay.EndClientClosed && ev.Relay.End != relay.EndUpstreamClosed {
				t.Errorf("relay.end = %q, want a clean close", ev.Relay.End)
			}
			if ev.Source.Bytes != int64(len(hdr)+n) || ev.Destination.Bytes != n {
				t.Errorf("source.bytes %d, destination.bytes %d; want %d, %d", ev.Source.Bytes, ev.Destination.Bytes, len(hdr)+n, n)
			}
			if ev.Event.Action != event.ActionClosed || ev.Source.IP != client.Addr() || ev.Event.Duration <= 0 {
				t.Errorf("event %s from %v duration %d, want closed from %v", ev.Event.Action, ev.Source.IP, ev.Event.Duration, client.Addr())
			}
			if got := len(ts.rec.all()); got != 1 {
				t.Errorf("%d events, want 1", got)
			}
		})
	}
}

func relayPort(p uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}

// Ensure a denied client is closed without a byte and the upstream never
// sees a connection; the event says denied.
func TestRelayDeniedNeverReachesUpstream(t *testing.T) {
	up := startRelayUpstream(t, func(c *net.TCPConn) {})
	ts := startServer(t, func(c *server.Config) {
		c.Relay = relayDialer(t, up.addr, relay.Plain)
		c.Decider = deciderFunc(func(netip.Addr, geo.Location) policy.Decision {
			return policy.Decision{Decision: policy.Deny, Rule: "test-deny"}
		})
	})
	for range 3 {
		conn := dial(t, ts.addr)
		conn.Write([]byte("hello\n"))
		// Closed with the client's bytes unread: EOF or a reset.
		if b, err := io.ReadAll(conn); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("denied client read %q, %v; want a close without bytes", b, err)
		}
	}
	for _, ev := range ts.rec.wait(3) {
		if ev.Event.Action != event.ActionDenied || ev.Relay.End != relay.EndDenied {
			t.Errorf("event %s relay.end %q, want denied", ev.Event.Action, ev.Relay.End)
		}
	}
	if n := up.accepts.Load(); n != 0 {
		t.Errorf("the upstream accepted %d connections of denied clients", n)
	}
}

// Ensure an upstream where nothing listens closes the client at once, is
// counted, and the event says so.
func TestRelayUpstreamRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(c *server.Config) { c.Relay = relayDialer(t, addr, relay.Plain); c.Registerer = reg })
	conn := dial(t, ts.addr)
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Errorf("client read %q, %v; want a close without bytes", b, err)
	}
	ev := ts.rec.wait(1)[0]
	if ev.Event.Action != event.ActionRefused || ev.Event.Reason != relay.EndUpstreamRefused || ev.Relay.End != relay.EndUpstreamRefused {
		t.Errorf("event %s/%s relay.end %q, want refused upstream-refused", ev.Event.Action, ev.Event.Reason, ev.Relay.End)
	}
	if v := metricValue(t, reg, "originlens_relay_upstream_errors_total", map[string]string{"result": relay.EndUpstreamRefused}); v != 1 {
		t.Errorf("originlens_relay_upstream_errors_total{result=upstream-refused} = %v, want 1", v)
	}
}

// Ensure a relayed connection where nothing moves ends with the idle
// timeout, closing the client.
func TestRelayIdleTimeout(t *testing.T) {
	up := startRelayUpstream(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	ts := startServer(t, func(c *server.Config) {
		c.Relay = relayDialer(t, up.addr, relay.Plain)
		c.IdleTimeout = 300 * time.Millisecond
	})
	conn := dial(t, ts.addr)
	conn.Write([]byte("one line\n"))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("client: %v, want EOF at the idle timeout", err)
	}
	if ev := ts.rec.wait(1)[0]; ev.Relay.End != relay.EndIdleTimeout || ev.Source.Bytes != 9 {
		t.Errorf("relay.end %q, source.bytes %d; want idle-timeout, 9", ev.Relay.End, ev.Source.Bytes)
	}
}

// Ensure that with no PROXY header expected the upstream is dialled at
// accept: a server that speaks first (an SSH banner) reaches a client that
// has sent nothing.
func TestRelayServerFirst(t *testing.T) {
	const banner = "SSH-2.0-OpenSSH_9.2 test\r\n"
	up := startRelayUpstream(t, func(c *net.TCPConn) {
		c.Write([]byte(banner))
		io.Copy(c, c) // then echo
	})
	ts := startServer(t, func(c *server.Config) { c.Relay = relayDialer(t, up.addr, relay.Plain) })
	conn := dial(t, ts.addr)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != banner {
		t.Fatalf("client read %q, %v before sending anything; want the banner %q", line, err, banner)
	}
	conn.Write([]byte("SSH-2.0-client\r\n"))
	if line, _ := br.ReadString('\n'); line != "SSH-2.0-client\r\n" {
		t.Errorf("echo %q", line)
	}
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	if ev := ts.rec.wait(1)[0]; ev.Relay.End != relay.EndClientClosed || ev.Destination.Bytes != int64(len(banner)+16) {
		t.Errorf("relay.end %q, destination.bytes %d", ev.Relay.End, ev.Destination.Bytes)
	}
}

// Ensure a relayed connection still open at the end of the drain is closed
// on both sides and published as shutdown.
func TestRelayDrainClosesBothSides(t *testing.T) {
	upClosed := make(chan struct{})
	up := startRelayUpstream(t, func(c *net.TCPConn) {
		c.Write([]byte("hi\n"))
		io.Copy(io.Discard, c) // until the relay closes its side
		close(upClosed)
	})
	ts := startServer(t, func(c *server.Config) { c.Relay = relayDialer(t, up.addr, relay.Plain) })
	conn := dial(t, ts.addr)
	if l, err := bufio.NewReader(conn).ReadString('\n'); l != "hi\n" {
		t.Fatalf("client read %q, %v", l, err)
	}
	ts.stop(t) // drain timeout 2 s, then the open connection is closed
	select {
	case <-upClosed:
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream connection was not closed at the end of the drain")
	}
	if ev := ts.rec.wait(1)[0]; ev.Event.Reason != "shutdown" || ev.Relay.Mode != "plain" || ev.Relay.End != relay.EndShutdown {
		t.Errorf("event reason %q relay %+v, want reason and relay.end shutdown", ev.Event.Reason, ev.Relay)
	}
}
