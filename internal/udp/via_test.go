package udp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
)

// TestDirectAndProxiedFlowsApart: in mode trusted, a trusted proxy's
// datagram claiming client C for server S, and a datagram C sends to S
// itself, are two paths: each reply reports its own via and peer, and
// each path is its own flow and event. They used to share one flow (keyed
// on client and server only), so the direct client was told via=proxy-v2,
// peer=<the proxy>, and the proxy's proof of address lifted the 3x bound
// for datagrams that came direct.
func TestDirectAndProxiedFlowsApart(t *testing.T) {
	res := mustResolver(t, origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	r := start(t, Config{Resolver: res, Readers: 1}, "")
	lb := client(t, "127.0.0.2")
	c := client(t, "127.0.0.1")
	caddr := c.LocalAddr().(*net.UDPAddr).AddrPort()

	reply, _, ok := exchange(t, lb, r.addr, udpHeader(t, caddr.String(), r.addr.String(), padded("via lb", 400)), waitFor)
	if !ok {
		t.Fatal("proxied datagram: no reply")
	}
	viaLB, _ := parseReply(t, reply)
	reply, _, ok = exchange(t, c, r.addr, padded("direct", 400), waitFor)
	if !ok {
		t.Fatal("direct datagram: no reply")
	}
	direct, _ := parseReply(t, reply)
	if direct[report.KeyVia] != event.ViaDirect || direct[report.KeyPeer] != caddr.String() {
		t.Errorf("direct datagram: reply says via=%s peer=%s; want via=direct peer=%s", direct[report.KeyVia], direct[report.KeyPeer], caddr)
	}
	if direct[report.KeyConn] == viaLB[report.KeyConn] {
		t.Errorf("the direct and the proxied datagrams share flow %s", direct[report.KeyConn])
	}
	// The proxy proves its flow; a tiny direct datagram is still bound.
	tok := []byte("token=" + viaLB[report.KeyToken] + "\n")
	exchange(t, lb, r.addr, udpHeader(t, caddr.String(), r.addr.String(), tok), waitFor)
	if reply, _, _ := exchange(t, c, r.addr, []byte("hey\n"), waitFor); len(reply) > Amplification*4 {
		t.Errorf("a 4-byte direct datagram got %d bytes: the proxy's proof lifted the bound of the direct path", len(reply))
	}
	r.stop()
	if evs := r.rec.all(); len(evs) != 2 {
		t.Errorf("%d events, want 2 (one per path)", len(evs))
	}
}
