package udp

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/pires/go-proxyproto"
)

// FuzzDatagram drives hostile datagrams through the datagram path (PROXY
// v2 parsing in trusted mode, from a trusted or an untrusted peer, flows,
// the reply and its cut) and checks what must hold for any input: no panic,
// a reply never over 3x the datagram, a reply's first line in the line form
// (a cut one may lack required keys) naming the client the origin gave.
func FuzzDatagram(f *testing.F) {
	hdr := func(src, dst string, payload string) []byte {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		tp := proxyproto.UDPv4
		if s.Addr().Is6() {
			tp = proxyproto.UDPv6
		}
		b, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
			SourceAddr: net.UDPAddrFromAddrPort(s), DestinationAddr: net.UDPAddrFromAddrPort(d)}).FormatUDPDatagram([]byte(payload))
		return b
	}
	local, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}).FormatUDPDatagram([]byte("x"))
	for _, seed := range [][]byte{
		nil,
		[]byte("hello\n"),
		[]byte("token=0123456789abcdef\n" + strings.Repeat(".", 300)),
		[]byte("originlens-probe id=1 seq=2\r\n" + strings.Repeat(" ", 400)),
		[]byte("a \"quoted\" = line\x00\x7f\n"),
		hdr("198.51.100.7:4000", "192.0.2.1:443", "probe\n"+strings.Repeat(".", 200)),
		hdr("[2001:db8::7]:5000", "[2001:db8::1]:443", "v6"),
		hdr("198.51.100.7:4000", "192.0.2.1:443", "")[:20], // cut inside the header
		local,
		[]byte("PROXY TCP4 198.51.100.7 192.0.2.1 4000 443\r\nhello\n"),
		append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x12\xff\xff"), strings.Repeat("z", 100)...),
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	res, err := origin.NewResolver(origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Resolver: res, Publisher: discard{}, MaxFlows: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	sock := &socket{local: netip.MustParseAddrPort("127.0.0.1:9")}
	f.Fuzz(func(t *testing.T, d []byte, fromTrusted bool) {
		peer := netip.MustParseAddrPort("127.0.0.3:1000")
		if fromTrusted {
			peer = netip.MustParseAddrPort("127.0.0.2:1000")
		}
		o, payload, rerr := res.ResolveDatagram(peer, sock.local, d)
		refused := datagrams(srv, resultFlowLimit)
		reply, fl := srv.answer(sock, d, nil, peer, time.Now(), nil)
		if fl != nil && (rerr != nil || o.Local || loopPartner(o, payload)) {
			t.Fatalf("answered, but ResolveDatagram said %v (local %v), loop partner %v", rerr, o.Local, loopPartner(o, payload))
		}
		refusedFlow := datagrams(srv, resultFlowLimit) > refused
		if fl == nil && rerr == nil && !o.Local && !loopPartner(o, payload) && !refusedFlow && Amplification*len(payload) >= 12 {
			t.Fatalf("a %d-byte payload got no reply", len(payload))
		}
		if fl != nil && refusedFlow {
			t.Fatal("answered and counted as refused a flow")
		}
		if fl == nil {
			return
		}
		defer srv.flows.done(srv, fl)
		if !fl.proven.Load() && len(reply) > Amplification*len(d) {
			t.Fatalf("%d-byte reply to a %d-byte datagram", len(reply), len(d))
		}
		if len(reply) == 0 {
			return
		}
		first, _, _ := strings.Cut(string(reply), "\n")
		rep, err := report.ParseLine(first)
		if err != nil && !errors.Is(err, report.ErrMissing) {
			t.Fatalf("reply %q: %v", reply, err)
		}
		if c := rep[report.KeyClient]; c != "" && c != o.Client.String() {
			t.Fatalf("reply says client=%s, origin %s", c, o.Client)
		}
		if rep[report.KeyTruncated] == "" && err != nil {
			t.Fatalf("whole reply %q: %v", reply, err)
		}
	})
}

type discard struct{}

func (discard) Publish(event.Event) {}
