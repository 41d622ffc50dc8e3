package relay_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/relay"
	"github.com/pires/go-proxyproto"
)

// FuzzHeader builds PROXY headers from arbitrary addresses and TLV values
// and reads them back with go-proxyproto: the client address always comes
// back (unmapped), the server address when it has the client's family, and
// every non-empty TLV value byte for byte. Nothing the geo databases or
// rules could return (long or odd strings) may produce a header a reader
// rejects, or make Header panic.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{198, 51, 100, 10}, uint16(40000), []byte{192, 0, 2, 10}, uint16(443), "DE", "eu-central-1", "serve", uint32(64500), true)
	f.Add(netip.MustParseAddr("2001:db8::1").AsSlice(), uint16(1), []byte{192, 0, 2, 10}, uint16(80), "", "", "redirect", uint32(0), false)
	f.Add(netip.MustParseAddr("::ffff:203.0.113.7").AsSlice(), uint16(65535), netip.MustParseAddr("2001:db8::2").AsSlice(), uint16(0), "ZZ", "\x00\xff", "", uint32(1), true)
	f.Fuzz(func(t *testing.T, ca []byte, cp uint16, sa []byte, sp uint16, country, region, decision string, asn uint32, v2 bool) {
		c, ok1 := netip.AddrFromSlice(ca)
		s, ok2 := netip.AddrFromSlice(sa)
		if !ok1 || !ok2 || len(country)+len(region)+len(decision) > 60000 {
			return
		}
		mode := relay.ProxyV1
		if v2 {
			mode = relay.ProxyV2
		}
		client, server := netip.AddrPortFrom(c, cp), netip.AddrPortFrom(s, sp)
		m := relay.Meta{Country: country, Region: region, Decision: decision, ASN: asn}
		b, err := relay.Header(mode, client, server, m)
		if err != nil {
			if v2 && len(country)+len(region)+len(decision) > 16000 {
				return // too large for one header: refused, not truncated
			}
			t.Fatalf("Header(%v, %v, %+v): %v", client, server, m, err)
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("go-proxyproto cannot read Header(%v, %v): %v\n%q", client, server, err, b)
		}
		src, dst, ok := h.TCPAddrs()
		if !ok {
			t.Fatalf("header %q has no TCP addresses", b)
		}
		gotSrc := netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port())
		if gotSrc != netip.AddrPortFrom(c.Unmap(), cp) {
			t.Errorf("source %v, want %v", gotSrc, client)
		}
		if s.Unmap().Is4() == c.Unmap().Is4() {
			if got := netip.AddrPortFrom(dst.AddrPort().Addr().Unmap(), dst.AddrPort().Port()); got != netip.AddrPortFrom(s.Unmap(), sp) {
				t.Errorf("destination %v, want %v", got, server)
			}
		}
		if !v2 {
			return
		}
		tlvs, err := h.TLVs()
		if err != nil {
			t.Fatal(err)
		}
		want := map[proxyproto.PP2Type]string{}
		for typ, v := range map[proxyproto.PP2Type]string{relay.TLVCountry: country, relay.TLVRegion: region, relay.TLVDecision: decision} {
			if v != "" {
				want[typ] = v
			}
		}
		if asn != 0 {
			want[relay.TLVASN] = string(binary.BigEndian.AppendUint32(nil, asn))
		}
		got := map[proxyproto.PP2Type]string{}
		for _, tlv := range tlvs {
			got[tlv.Type] = string(tlv.Value)
		}
		if len(got) != len(want) {
			t.Fatalf("TLVs %q, want %q", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("TLV %#x = %q, want %q", byte(k), got[k], v)
			}
		}
	})
}
