//go:build linux

package server_test

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
	"github.com/prometheus/client_golang/prometheus"
)

// headerMode makes a server read a PROXY header from every peer, within
// timeout.
func headerMode(t testing.TB, timeout time.Duration) func(*server.Config) {
	t.Helper()
	res, err := origin.NewResolver(origin.Config{Mode: origin.Required, HeaderTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *server.Config) { c.Resolver = res }
}

// dialSilent opens n connections that send nothing.
func dialSilent(t testing.TB, addr string, n int) []net.Conn {
	t.Helper()
	cs := make([]net.Conn, n)
	for i := range cs {
		cs[i] = dial(t, addr)
	}
	return cs
}

// Ensure 1,000 clients that connect and send nothing hold far fewer than
// 1,000 goroutines once past the grace (they wait in the lot), the parked
// gauge counts them, and each still ends at its first read's timeout with
// today's reason (first-bytes-timeout with no PROXY header expected,
// proxy-header-timeout with one), one event each, after which the gauge is
// back to 0.
func TestSilentClientsParkWithoutGoroutines(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name, reason string
		mod          func(*server.Config)
	}{
		{"first-bytes", "first-bytes-timeout", func(c *server.Config) { c.FirstBytesTimeout = 3 * time.Second }},
		{"proxy-header", "proxy-header-timeout", headerMode(t, 3*time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			ts := startParking(t, func(c *server.Config) {
				tc.mod(c)
				c.Registerer = reg
			})
			before := runtime.NumGoroutine()
			cs := dialSilent(t, ts.addr, n)
			waitFor(t, func() bool { return server.Parked(ts.srv) == n })
			if g := metricValue(t, reg, "originlens_parked_connections", nil); g != n {
				t.Errorf("parked gauge %v with %d parked, want %d", g, n, n)
			}
			var delta int
			waitFor(t, func() bool { delta = runtime.NumGoroutine() - before; return delta < 100 || server.Parked(ts.srv) < n })
			if delta >= 100 {
				t.Fatalf("%d more goroutines with %d silent clients, want fewer than 100", delta, n)
			}
			evs := byID(t, ts.rec.wait(n))
			if len(evs) != n {
				t.Fatalf("%d distinct events, want %d", len(evs), n)
			}
			for _, ev := range evs {
				if ev.Event.Reason != tc.reason || ev.Event.Action != "connection-refused" {
					t.Fatalf("event %s: %s %q, want connection-refused %q", ev.Event.ID, ev.Event.Action, ev.Event.Reason, tc.reason)
				}
				if d := time.Duration(ev.Event.Duration); d < 3*time.Second-50*time.Millisecond {
					t.Fatalf("event %s: ended after %v, before the 3s timeout", ev.Event.ID, d)
				}
			}
			for _, c := range cs {
				expectEOF(t, c, nil)
			}
			waitFor(t, func() bool { return metricValue(t, reg, "originlens_parked_connections", nil) == 0 })
			if p := ts.rec.published.Load(); p != n {
				t.Errorf("%d events published, want %d", p, n)
			}
		})
	}
}

// Ensure a client that stays silent past the grace, parked, then sends its
// PROXY v2 header and a line a second later gets the normal report: the
// client the header names, served, one event.
func TestSilentThenProxyHeader(t *testing.T) {
	ts := startParking(t, headerMode(t, 10*time.Second))
	c := newLineClient(t, ts.addr)
	waitFor(t, func() bool { return server.Parked(ts.srv) == 1 })
	time.Sleep(time.Second) // the scenario: a slow client, parked meanwhile
	src := netip.MustParseAddrPort("192.0.2.7:5555")
	if _, err := c.Write(proxyV2(t, src, netip.MustParseAddrPort("198.51.100.1:80"))); err != nil {
		t.Fatal(err)
	}
	r := c.report(t)
	if r[report.KeyClient] != src.String() || r[report.KeyVia] != "proxy-v2" {
		t.Errorf("report %v, want client %s via proxy-v2", r.Line(), src)
	}
	c.readLine(t) // greeting
	c.send(t, "quit\n")
	expectEOF(t, c, c.br)
	ev := ts.rec.wait(1)[0]
	if ev.Event.Reason != "served" || ev.Source.IP != src.Addr() {
		t.Errorf("event: reason %q, source %v; want served, %v", ev.Event.Reason, ev.Source.IP, src.Addr())
	}
}

// Ensure silent clients parked before their first byte when the drain
// times out each end with one event and the reason a silent client on its
// goroutine gets (the same server with a grace longer than the timeouts,
// which never parks, says which).
func TestDrainSilentParked(t *testing.T) {
	const n = 20
	for _, tc := range []struct {
		name string
		mod  func(*server.Config)
	}{
		{"first-bytes", func(c *server.Config) { c.FirstBytesTimeout = time.Minute }},
		{"proxy-header", headerMode(t, time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reasons := func(park bool) map[string]int {
				ts := startParking(t, func(c *server.Config) { tc.mod(c); c.DrainTimeout = 300 * time.Millisecond })
				if !park {
					server.SetParkAfter(ts.srv, time.Hour, time.Hour)
				}
				dialSilent(t, ts.addr, n)
				waitFor(t, func() bool { return ts.srv.Open() == n })
				if park {
					waitFor(t, func() bool { return server.Parked(ts.srv) == n })
				}
				ts.stop(t)
				got := map[string]int{}
				evs := ts.rec.wait(n)
				for _, ev := range evs {
					got[ev.Event.Reason]++
				}
				if p := ts.rec.published.Load(); len(byID(t, evs)) != n || p != n {
					t.Errorf("park %v: %d events published (%d distinct), want %d", park, p, len(byID(t, evs)), n)
				}
				if p := server.Parked(ts.srv); p != 0 {
					t.Errorf("park %v: %d still parked after the drain", park, p)
				}
				return got
			}
			want, got := reasons(false), reasons(true)
			if len(want) != 1 || got[firstKey(want)] != n {
				t.Errorf("reasons parked %v, on a goroutine %v", got, want)
			}
		})
	}
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// Ensure an NLB-style TCP health check (connect, then close without a
// byte) is still empty, whether it closes at once or after it parked,
// with or without a PROXY header expected.
func TestSilentCloseIsEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*server.Config)
	}{
		{"first-bytes", nil},
		{"proxy-header", headerMode(t, 10*time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startParking(t, tc.mod)
			c := dial(t, ts.addr)
			c.Close()
			if ev := ts.rec.wait(1)[0]; ev.Event.Reason != "empty" {
				t.Errorf("closed at once: reason %q, want empty", ev.Event.Reason)
			}
			c = dial(t, ts.addr)
			waitFor(t, func() bool { return server.Parked(ts.srv) == 1 })
			c.Close()
			if ev := ts.rec.wait(2)[1]; ev.Event.Reason != "empty" {
				t.Errorf("closed after parking: reason %q, want empty", ev.Event.Reason)
			}
			waitFor(t, func() bool { return server.Parked(ts.srv) == 0 })
		})
	}
}

// Ensure a parked silent client that then sends a PROXY v2 LOCAL header
// and closes is still a health check.
func TestSilentThenLocalHeader(t *testing.T) {
	ts := startParking(t, headerMode(t, 10*time.Second))
	c := dial(t, ts.addr)
	waitFor(t, func() bool { return server.Parked(ts.srv) == 1 })
	if _, err := c.Write(localV2(t)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	expectEOF(t, c, nil)
	if ev := ts.rec.wait(1)[0]; ev.Event.Reason != "health-check" {
		t.Errorf("reason %q, want health-check", ev.Event.Reason)
	}
}

// Ensure relay mode parks nothing without a PROXY header to read (the
// upstream is dialled at accept: its banner reaches a silent client),
// and with one parks the silent client and relays it once it speaks.
func TestRelaySilentClients(t *testing.T) {
	const banner = "SSH-2.0-OpenSSH_9.2 test\r\n"
	up := startRelayUpstream(t, func(c *net.TCPConn) {
		c.Write([]byte(banner))
		io.Copy(c, c)
	})
	ts := startParking(t, func(c *server.Config) {
		c.Relay = relayDialer(t, up.addr, relay.Plain)
		c.FirstBytesTimeout = time.Minute // a parked client would wait past the read's 30 s
	})
	conn := dial(t, ts.addr)
	if l, err := bufio.NewReader(conn).ReadString('\n'); l != banner {
		t.Fatalf("silent client read %q, %v; want the banner at accept", l, err)
	}
	if p := server.Parked(ts.srv); p != 0 {
		t.Errorf("%d parked in relay mode without a PROXY header", p)
	}

	hs := startParking(t, func(c *server.Config) {
		headerMode(t, 10*time.Second)(c)
		c.Relay = relayDialer(t, up.addr, relay.Plain)
	})
	conn = dial(t, hs.addr)
	waitFor(t, func() bool { return server.Parked(hs.srv) == 1 })
	if n := up.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections before the header, want 1 (the first server's)", n)
	}
	src := netip.MustParseAddrPort("192.0.2.7:5555")
	conn.Write(append(proxyV2(t, src, netip.MustParseAddrPort("198.51.100.1:80")), "ping\r\n"...))
	br := bufio.NewReader(conn)
	for _, want := range []string{banner, "ping\r\n"} {
		if l, err := br.ReadString('\n'); l != want {
			t.Fatalf("read %q, %v; want %q", l, err, want)
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	if ev := hs.rec.wait(1)[0]; ev.Source.IP != src.Addr() || ev.Relay.End != relay.EndClientClosed {
		t.Errorf("event: source %v, relay.end %q; want %v, %s", ev.Source.IP, ev.Relay.End, src.Addr(), relay.EndClientClosed)
	}
}
