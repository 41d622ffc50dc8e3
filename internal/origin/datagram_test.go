package origin_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/pires/go-proxyproto"
)

// udpV2 builds a PROXY v2 header for UDP src -> dst with tlvs.
func udpV2(tb testing.TB, src, dst string, tlvs ...proxyproto.TLV) []byte {
	tb.Helper()
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	tp := proxyproto.UDPv4
	if s.Addr().Is6() {
		tp = proxyproto.UDPv6
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
		SourceAddr: net.UDPAddrFromAddrPort(s), DestinationAddr: net.UDPAddrFromAddrPort(d)}
	return format(tb, h, tlvs)
}

// Ensure ResolveDatagram applies the --proxy-protocol modes to datagrams:
// headers only from trusted peers, v2 with UDP addresses only, CRC checked,
// the payload after the header.
func TestResolveDatagram(t *testing.T) {
	lb := netip.MustParseAddrPort("10.0.0.5:40000")
	stranger := netip.MustParseAddrPort("[::ffff:198.51.100.9]:5000") // mapped: unmapped by ResolveDatagram
	local := netip.MustParseAddrPort("10.0.0.10:8443")
	hdr := udpV2(t, "198.51.100.7:4000", "192.0.2.1:443")
	crcHdr := sealCRC(udpV2(t, "198.51.100.7:4000", "192.0.2.1:443", crcTLV()), crcAt(12))
	badCRC := append([]byte(nil), crcHdr...)
	badCRC[len(badCRC)-1] ^= 1
	trusted, err := origin.NewResolver(origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	required, _ := origin.NewResolver(origin.Config{Mode: origin.Required})
	off, _ := origin.NewResolver(origin.Config{Mode: origin.Off})
	tests := []struct {
		name       string
		r          *origin.Resolver
		peer       netip.AddrPort
		d          []byte
		wantErr    error
		wantClient string
		wantLocal  bool
	}{
		{"trusted header", trusted, lb, cat(hdr, []byte("hi")), nil, "198.51.100.7:4000", false},
		{"trusted crc", trusted, lb, cat(crcHdr, []byte("hi")), nil, "198.51.100.7:4000", false},
		{"trusted bad crc", trusted, lb, cat(badCRC, []byte("hi")), origin.ErrBadCRC, "", false},
		{"trusted ipv6", trusted, lb, cat(udpV2(t, "[2001:db8::7]:1", "[2001:db8::1]:443"), []byte("hi")), nil, "[2001:db8::7]:1", false},
		{"trusted no header", trusted, lb, []byte("hi"), origin.ErrMissingHeader, "", false},
		{"trusted v1", trusted, lb, cat(v1(t, "198.51.100.7:4000", "192.0.2.1:443"), []byte("hi")), origin.ErrBadHeader, "", false},
		{"trusted tcp addresses", trusted, lb, cat(v2(t, "198.51.100.7:4000", "192.0.2.1:443"), []byte("hi")), origin.ErrBadHeader, "", false},
		{"trusted cut header", trusted, lb, hdr[:len(hdr)-3], origin.ErrBadHeader, "", false},
		{"trusted local", trusted, lb, v2Local(t), nil, "10.0.0.5:40000", true},
		{"untrusted header", trusted, stranger, cat(hdr, []byte("hi")), origin.ErrSpoof, "", false},
		{"untrusted plain", trusted, stranger, []byte("hi"), nil, "198.51.100.9:5000", false},
		{"untrusted signature prefix", trusted, stranger, hdr[:5], nil, "198.51.100.9:5000", false},
		{"required plain", required, stranger, []byte("hi"), origin.ErrMissingHeader, "", false},
		{"required header", required, stranger, cat(hdr, []byte("hi")), nil, "198.51.100.7:4000", false},
		{"off header is payload", off, lb, cat(hdr, []byte("hi")), nil, "10.0.0.5:40000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, payload, err := tt.r.ResolveDatagram(tt.peer, local, tt.d)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("ResolveDatagram error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if o.Client.String() != tt.wantClient || o.Local != tt.wantLocal || !o.Peer.Addr().Is4() {
				t.Errorf("origin %+v; want client %s, local %v, unmapped peer", o, tt.wantClient, tt.wantLocal)
			}
			if o.Via == event.ViaProxyV2 && !tt.wantLocal && string(payload) != "hi" {
				t.Errorf("payload %q, want hi", payload)
			}
		})
	}
}
