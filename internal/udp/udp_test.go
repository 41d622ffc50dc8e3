package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/pires/go-proxyproto"
)

// TestManySources sends 1,000 datagrams from 50 sockets on 50 loopback
// addresses, 20 each in lock step, and checks every reply (report keys, the
// client address and port, the echoed probe line, the greeting) and the 50
// flow events (datagrams and bytes each way equal what the clients sent and
// received).
func TestManySources(t *testing.T) {
	const sources, perSource = 50, 20
	r := start(t, Config{Decider: policy.Default()}, "")

	type tally struct {
		addr                 netip.AddrPort
		sentBytes, recvBytes int64
		recvPackets          int64
		conn                 string
	}
	tallies := make([]tally, sources)
	var wg sync.WaitGroup
	for i := range sources {
		c := client(t, fmt.Sprintf("127.0.0.%d", 10+i))
		wg.Go(func() {
			tl := &tallies[i]
			tl.addr = c.LocalAddr().(*net.UDPAddr).AddrPort()
			for seq := range perSource {
				line := fmt.Sprintf("originlens-probe src=%d seq=%d", i, seq)
				d := padded(line, 300+seq)
				reply, _, ok := exchange(t, c, r.addr, d, waitFor)
				tl.sentBytes += int64(len(d))
				if !ok {
					t.Errorf("source %d seq %d: no reply", i, seq)
					return
				}
				tl.recvBytes += int64(len(reply))
				tl.recvPackets++
				rep, rest := parseReply(t, reply)
				for _, k := range report.Order {
					if _, present := rep[k]; report.Required(k) && !present {
						t.Errorf("reply %q lacks %s", reply, k)
					}
				}
				if rep[report.KeyClient] != tl.addr.String() || rep[report.KeyVia] != event.ViaDirect ||
					rep[report.KeyServer] != r.addr.String() || rep[report.KeyProbe] != line || rep[report.KeyTruncated] != "" {
					t.Errorf("source %d seq %d: reply %q: want client=%s via=direct server=%s probe=%q, not truncated", i, seq, reply, tl.addr, r.addr, line)
				}
				if rep[report.KeyDecision] == policy.Serve && strings.TrimSpace(rest) == "" {
					t.Errorf("reply %q: served without a greeting", reply)
				}
				if len(reply) > Amplification*len(d) {
					t.Errorf("reply of %d bytes to a datagram of %d", len(reply), len(d))
				}
				if seq == 0 {
					tl.conn = rep[report.KeyConn]
				} else if rep[report.KeyConn] != tl.conn {
					t.Errorf("source %d: conn %s then %s: one flow, one event id", i, tl.conn, rep[report.KeyConn])
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitMetric(t, "answered", func() float64 { return datagrams(r.srv, resultAnswered) }, sources*perSource)
	if n := r.srv.Flows(); n != sources {
		t.Errorf("Flows() = %d, want %d", n, sources)
	}
	r.stop()
	evs := r.rec.all()
	if len(evs) != sources {
		t.Fatalf("%d events at shutdown, want %d", len(evs), sources)
	}
	byClient := map[netip.AddrPort]event.Event{}
	for _, ev := range evs {
		byClient[netip.AddrPortFrom(ev.Source.IP, ev.Source.Port)] = ev
	}
	for i, tl := range tallies {
		ev, ok := byClient[tl.addr]
		if !ok {
			t.Errorf("source %d (%s): no event", i, tl.addr)
			continue
		}
		if ev.Network.Transport != event.TransportUDP || ev.Flow.End != endShutdown || ev.Event.ID != tl.conn {
			t.Errorf("source %d: transport %q end %q id %s; want udp, shutdown, %s", i, ev.Network.Transport, ev.Flow.End, ev.Event.ID, tl.conn)
		}
		if ev.Source.Packets != perSource || ev.Source.Bytes != tl.sentBytes ||
			ev.Destination.Packets != tl.recvPackets || ev.Destination.Bytes != tl.recvBytes {
			t.Errorf("source %d: event in %d/%dB out %d/%dB; client sent %d/%dB, received %d/%dB", i,
				ev.Source.Packets, ev.Source.Bytes, ev.Destination.Packets, ev.Destination.Bytes,
				perSource, tl.sentBytes, tl.recvPackets, tl.recvBytes)
		}
		if ev.Flow.FirstSeen.IsZero() || ev.Flow.LastSeen.Before(ev.Flow.FirstSeen) || !ev.Event.Start.Equal(ev.Flow.FirstSeen) {
			t.Errorf("source %d: first seen %v, last seen %v, start %v", i, ev.Flow.FirstSeen, ev.Flow.LastSeen, ev.Event.Start)
		}
		if ev.Residency.Decision == "" || ev.Event.Action == "" {
			t.Errorf("source %d: no decision or action in %+v", i, ev)
		}
	}
}

// TestAmplificationBound sends datagrams of 0 to 400 bytes: no reply is
// longer than 3x its datagram; short ones are cut at a key boundary and say
// truncated=1; a datagram echoing the flow's token lifts the bound for its
// flow only.
func TestAmplificationBound(t *testing.T) {
	r := start(t, Config{}, "")
	c := client(t, "127.0.0.1")
	sawCut, sawFull := false, false
	for n := 7; n <= 400; n += 7 { // under 4 bytes: no reply (TestNoEmptyReply)
		d := padded("x", n)[:n]
		reply, _, ok := exchange(t, c, r.addr, d, waitFor)
		if !ok {
			t.Fatalf("%d bytes: no reply", n)
		}
		if len(reply) > Amplification*n {
			t.Fatalf("%d-byte datagram got a %d-byte reply: %q", n, len(reply), reply)
		}
		if len(reply) == 0 {
			continue
		}
		first, _, _ := strings.Cut(string(reply), "\n")
		rep, err := report.ParseLine(first)
		if err != nil && !errors.Is(err, report.ErrMissing) {
			t.Fatalf("%d bytes: reply %q: %v", n, reply, err)
		}
		if rep[report.KeyTruncated] == "1" {
			sawCut = true
			if rep[report.KeyClient] != "" && rep[report.KeyClient] != c.LocalAddr().String() {
				t.Errorf("cut reply %q: client is not %s", reply, c.LocalAddr())
			}
		} else {
			sawFull = true
			if err != nil {
				t.Errorf("full reply %q: %v", reply, err)
			}
		}
	}
	if !sawCut || !sawFull {
		t.Fatalf("saw cut replies %v, full replies %v: want both", sawCut, sawFull)
	}

	// echo hello | nc -u: the short form.
	reply, _, _ := exchange(t, c, r.addr, []byte("hello\n"), waitFor)
	if len(reply) > 18 || !strings.Contains(string(reply), "truncated=1") {
		t.Errorf("hello: reply %q, want at most 18 bytes with truncated=1", reply)
	}

	// Proof: the token of a full reply, echoed in a small datagram.
	full, _, _ := exchange(t, c, r.addr, padded("probe", 600), waitFor)
	rep, _ := parseReply(t, full)
	tok := rep[report.KeyToken]
	if len(tok) != 16 {
		t.Fatalf("reply %q: token %q, want 16 hex digits", full, tok)
	}
	other := client(t, "127.0.0.2")
	small := []byte("token=" + tok + "\n")
	if reply, _, _ := exchange(t, other, r.addr, small, waitFor); len(reply) > Amplification*len(small) {
		t.Errorf("another source with a stolen token got %d bytes for %d", len(reply), len(small))
	}
	reply, _, _ = exchange(t, c, r.addr, small, waitFor)
	rep, _ = parseReply(t, reply)
	if rep[report.KeyTruncated] != "" || len(reply) <= Amplification*len(small) {
		t.Errorf("proven source: reply %q of %d bytes, want the whole report (over %d)", reply, len(reply), Amplification*len(small))
	}
	if reply, _, _ = exchange(t, c, r.addr, []byte("hi\n"), waitFor); strings.Contains(string(reply), "truncated") {
		t.Errorf("proven flow, 3-byte datagram: reply %q is still cut", reply)
	}
	if got := datagrams(r.srv, resultAnswered); got < 60 {
		t.Errorf("answered = %v", got)
	}
}

// TestRateLimit: a source over its reply budget gets no replies, counted in
// the metrics and its flow's event; another source is unaffected.
func TestRateLimit(t *testing.T) {
	lim := mustLimiter(t, limit.Config{RatePerIP: 0.001, BurstPerIP: 5})
	r := start(t, Config{Limiter: lim}, "")
	c := client(t, "127.0.0.3")
	const sent = 12
	for i := range sent {
		if _, err := c.WriteToUDPAddrPort(padded(fmt.Sprint("seq=", i), 400), r.addr); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, "answered+rate-limited", func() float64 {
		return datagrams(r.srv, resultAnswered) + datagrams(r.srv, resultRateLimited)
	}, sent)
	replies := 0
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
		replies++
	}
	if replies != 5 || datagrams(r.srv, resultRateLimited) != sent-5 {
		t.Errorf("%d replies, %v rate-limited; want 5 and %d", replies, datagrams(r.srv, resultRateLimited), sent-5)
	}
	if _, _, ok := exchange(t, client(t, "127.0.0.4"), r.addr, padded("other", 400), waitFor); !ok {
		t.Error("another source got no reply")
	}
	r.stop()
	for _, ev := range r.rec.all() {
		if ev.Source.IP.String() != "127.0.0.3" {
			continue
		}
		if ev.Flow.RateLimited != sent-5 || ev.Source.Packets != sent || ev.Destination.Packets != 5 {
			t.Errorf("event: rate_limited %d, packets in %d out %d; want %d, %d, 5", ev.Flow.RateLimited, ev.Source.Packets, ev.Destination.Packets, sent-5, sent)
		}
		return
	}
	t.Error("no event for the limited source")
}

// TestMaxFlows: over --udp-max-flows the least recently seen flow is
// published (flow.end evicted) and dropped, and counted.
func TestMaxFlows(t *testing.T) {
	const max, sources = 10, 25
	r := start(t, Config{MaxFlows: max}, "")
	var order []netip.AddrPort
	for i := range sources {
		c := client(t, fmt.Sprintf("127.0.1.%d", 1+i))
		if _, _, ok := exchange(t, c, r.addr, padded("p", 400), waitFor); !ok {
			t.Fatalf("source %d: no reply", i)
		}
		order = append(order, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	evs := r.rec.waitEvents(t, sources-max)
	if got := flowsEnded(r.srv, endEvicted); got != sources-max {
		t.Errorf("evicted = %v, want %d", got, sources-max)
	}
	if n := r.srv.Flows(); n != max {
		t.Errorf("Flows() = %d, want %d", n, max)
	}
	// The oldest flows are the ones evicted. Their events may come out of
	// order: one whose reply is still being sent is published once the
	// reply is counted in it.
	oldest := map[netip.AddrPort]bool{}
	for _, a := range order[:sources-max] {
		oldest[a] = true
	}
	for i, ev := range evs {
		if got := netip.AddrPortFrom(ev.Source.IP, ev.Source.Port); !oldest[got] || ev.Flow.End != endEvicted {
			t.Errorf("event %d: %s end %s; want one of the %d oldest flows, evicted", i, got, ev.Flow.End, sources-max)
		}
		delete(oldest, netip.AddrPortFrom(ev.Source.IP, ev.Source.Port))
	}
	r.stop()
	if evs := r.rec.all(); len(evs) != sources {
		t.Errorf("%d events after shutdown, want %d", len(evs), sources)
	}
}

// TestIdleTimeout: a flow idle for the idle timeout is published; the
// next datagram from the same address and port starts a new flow.
func TestIdleTimeout(t *testing.T) {
	r := start(t, Config{IdleTimeout: 100 * time.Millisecond}, "")
	c := client(t, "127.0.0.5")
	reply, _, _ := exchange(t, c, r.addr, padded("one", 400), waitFor)
	first, _ := parseReply(t, reply)
	evs := r.rec.waitEvents(t, 1)
	if evs[0].Flow.End != endIdle || evs[0].Event.ID != first[report.KeyConn] || evs[0].Source.Packets != 1 {
		t.Errorf("event %+v: want end idle-timeout, id %s, 1 packet", evs[0].Flow, first[report.KeyConn])
	}
	reply, _, _ = exchange(t, c, r.addr, padded("two", 400), waitFor)
	second, _ := parseReply(t, reply)
	if second[report.KeyConn] == first[report.KeyConn] {
		t.Errorf("a datagram after the idle timeout kept the old flow %s", first[report.KeyConn])
	}
}

// udpHeader returns a PROXY v2 UDP datagram: header for src -> dst, then
// payload.
func udpHeader(t testing.TB, src, dst string, payload []byte) []byte {
	t.Helper()
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	tp := proxyproto.UDPv4
	if s.Addr().Is6() {
		tp = proxyproto.UDPv6
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
		SourceAddr: net.UDPAddrFromAddrPort(s), DestinationAddr: net.UDPAddrFromAddrPort(d)}
	b, err := h.FormatUDPDatagram(payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProxyV2 sends PROXY v2 datagrams from a trusted and an untrusted
// peer, and plain datagrams in trusted and required modes.
func TestProxyV2(t *testing.T) {
	res := mustResolver(t, origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	r := start(t, Config{Resolver: res}, "")
	lb := client(t, "127.0.0.2")
	stranger := client(t, "127.0.0.3")

	reply, _, ok := exchange(t, lb, r.addr, udpHeader(t, "198.51.100.7:4000", "192.0.2.1:443", padded("via lb", 400)), waitFor)
	if !ok {
		t.Fatal("trusted PROXY datagram: no reply")
	}
	rep, _ := parseReply(t, reply)
	if rep[report.KeyClient] != "198.51.100.7:4000" || rep[report.KeyVia] != event.ViaProxyV2 ||
		rep[report.KeyPeer] != lb.LocalAddr().String() || rep[report.KeyServer] != "192.0.2.1:443" {
		t.Errorf("trusted PROXY datagram: reply %q", reply)
	}

	// A header from an untrusted peer is a spoof: dropped, counted.
	stranger.WriteToUDPAddrPort(udpHeader(t, "203.0.113.9:1", "192.0.2.1:443", padded("spoof", 400)), r.addr)
	waitMetric(t, "proxy-spoof", func() float64 { return datagrams(r.srv, resultProxyPrefix+"spoof") }, 1)
	// The trusted peer without a header, or with v1: dropped.
	lb.WriteToUDPAddrPort(padded("no header", 400), r.addr)
	waitMetric(t, "proxy-missing", func() float64 { return datagrams(r.srv, resultProxyPrefix+"missing") }, 1)
	lb.WriteToUDPAddrPort(append([]byte("PROXY TCP4 198.51.100.7 192.0.2.1 4000 443\r\n"), padded("v1", 400)...), r.addr)
	waitMetric(t, "proxy-malformed", func() float64 { return datagrams(r.srv, resultProxyPrefix+"malformed") }, 1)
	// LOCAL: a health check, no reply.
	local, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}).FormatUDPDatagram(nil)
	lb.WriteToUDPAddrPort(local, r.addr)
	waitMetric(t, "health-check", func() float64 { return datagrams(r.srv, resultHealthCheck) }, 1)
	// A plain datagram from the stranger is a direct client's.
	reply, _, ok = exchange(t, stranger, r.addr, padded("plain", 400), waitFor)
	if rep, _ := parseReply(t, reply); !ok || rep[report.KeyClient] != stranger.LocalAddr().String() || rep[report.KeyVia] != event.ViaDirect {
		t.Errorf("plain datagram from an untrusted peer: reply %q", reply)
	}
	// Only the two answered datagrams made flows.
	r.stop()
	evs := r.rec.all()
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2 (dropped datagrams make no flow)", len(evs))
	}
	for _, ev := range evs {
		if ev.ClientIP.Via == event.ViaProxyV2 && (ev.Source.IP.String() != "198.51.100.7" || ev.ClientIP.Peer.IP.String() != "127.0.0.2" || ev.Destination.Port != 443) {
			t.Errorf("proxied flow event: %+v %+v %+v", ev.Source, ev.Destination, ev.ClientIP)
		}
	}

	// Required mode: every datagram must carry a header.
	req := start(t, Config{Resolver: mustResolver(t, origin.Config{Mode: origin.Required})}, "")
	c := client(t, "127.0.0.1")
	c.WriteToUDPAddrPort(padded("plain", 400), req.addr)
	waitMetric(t, "required: proxy-missing", func() float64 { return datagrams(req.srv, resultProxyPrefix+"missing") }, 1)
	reply, _, ok = exchange(t, c, req.addr, udpHeader(t, "[2001:db8::7]:5000", "[2001:db8::1]:443", padded("v6", 400)), waitFor)
	if rep, _ := parseReply(t, reply); !ok || rep[report.KeyClient] != "[2001:db8::7]:5000" {
		t.Errorf("required mode, IPv6 header: reply %q", reply)
	}
	// Counted after the write: the reply can arrive first.
	waitMetric(t, "required mode: answered (the plain datagram was dropped)", func() float64 { return datagrams(req.srv, resultAnswered) }, 1)
}

// TestReplySource binds the server to 0.0.0.0 and sends to 127.0.0.1 and
// 127.0.0.2 (and ::1): each reply comes from the address the client sent
// to, which the report's server key names too.
func TestReplySource(t *testing.T) {
	r := start(t, Config{}, "0.0.0.0:0")
	c := client(t, "127.0.0.10")
	dsts := []string{"127.0.0.1", "127.0.0.2"}
	if ln, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err == nil {
		ln.Close()
		dsts = append(dsts, "::1")
	}
	for _, ip := range dsts {
		dst := netip.AddrPortFrom(netip.MustParseAddr(ip), r.addr.Port())
		cc := c
		if ip == "::1" {
			cc = client(t, "::1")
		}
		reply, from, ok := exchange(t, cc, dst, padded("where", 400), waitFor)
		if !ok {
			t.Fatalf("to %s: no reply", dst)
		}
		if from != dst {
			t.Errorf("sent to %s, reply came from %s", dst, from)
		}
		if rep, _ := parseReply(t, reply); rep[report.KeyServer] != dst.String() {
			t.Errorf("sent to %s, report says server=%s", dst, rep[report.KeyServer])
		}
	}
}

// TestDeniedAndLimitedByPrefix: a client the rules deny gets the report
// (decision=deny, no greeting) and its flow's event says connection-denied
// with the rule; two IPv6 sockets of one source share its reply budget
// (the limiter counts IPv6 by /64).
func TestDeniedAndLimitedByPrefix(t *testing.T) {
	rules, err := policy.Parse("deny-loopback.yaml", []byte(`
default: {decision: serve, region: us-east-2}
rules:
  - name: no-loopback
    when: {cidr: [127.0.0.7/32]}
    then: {decision: deny, reason: test}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Decider: rules, Limiter: mustLimiter(t, limit.Config{RatePerIP: 0.001, BurstPerIP: 2})}, "0.0.0.0:0")
	denied := client(t, "127.0.0.7")
	reply, _, ok := exchange(t, denied, r.addr, padded("who", 400), waitFor)
	rep, rest := parseReply(t, reply)
	if !ok || rep[report.KeyDecision] != policy.Deny || rep[report.KeyRule] != "no-loopback" || rest != "" {
		t.Errorf("denied client: reply %q, want decision=deny rule=no-loopback and no greeting", reply)
	}

	if ln, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Log("no IPv6 loopback: the /64 budget is not checked")
	} else {
		ln.Close()
		// Two sockets on ::1: 2 replies between them, then none.
		v6 := netip.AddrPortFrom(netip.IPv6Loopback(), r.addr.Port())
		a, b := client(t, "::1"), client(t, "::1")
		got := 0
		for _, c := range []*net.UDPConn{a, b, a, b} {
			if _, _, ok := exchange(t, c, v6, padded("v6", 400), 300*time.Millisecond); ok {
				got++
			}
		}
		if got != 2 {
			t.Errorf("4 datagrams from one /64 with a burst of 2: %d replies, want 2", got)
		}
	}
	r.stop()
	for _, ev := range r.rec.all() {
		if ev.Source.IP.String() == "127.0.0.7" {
			if ev.Event.Action != event.ActionDenied || ev.Event.Reason != "denied:no-loopback" || ev.Residency.Decision != policy.Deny {
				t.Errorf("denied flow event: %s %s %s", ev.Event.Action, ev.Event.Reason, ev.Residency.Decision)
			}
			return
		}
	}
	t.Error("no event for the denied client")
}

func mustLimiter(t testing.TB, cfg limit.Config) *limit.Limiter {
	t.Helper()
	l, err := limit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
