package server_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
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
