package origin

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/originlens/originlens/internal/event"
	"github.com/pires/go-proxyproto"
)

// ResolveDatagram is [Resolver.Resolve] for one UDP datagram d that peer
// sent to local: it returns the datagram's origin and its payload (d itself,
// or the bytes after the PROXY header, aliasing d). The PROXY protocol over
// UDP puts a v2 header in front of every datagram (header and payload in
// one datagram, never split); v1 has no UDP form.
//
//   - Off: nothing is parsed; Client is the peer; payload is d.
//   - Required, or Trusted with a peer inside a trusted prefix: d must begin
//     with a v2 header carrying UDP over IPv4 or IPv6 (or LOCAL, a health
//     check: Local is set), else ErrMissingHeader (no signature),
//     ErrBadHeader (v1, a truncated or malformed header, TCP addresses) or
//     ErrBadCRC.
//   - Trusted with any other peer: a datagram that begins with a v1 or v2
//     signature is ErrSpoof; any other datagram is a direct client's.
//
// peer and local are unmapped here. It does not block and is safe for
// concurrent use.
func (r *Resolver) ResolveDatagram(peer, local netip.AddrPort, d []byte) (Origin, []byte, error) {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	o := Origin{Client: peer, Peer: peer, Server: local, Via: event.ViaDirect}
	k := classify(d)
	switch {
	case r.mode == Off:
		return o, d, nil
	case r.mode == Trusted && !r.isTrusted(peer.Addr()):
		if k == sigV1 || k == sigV2 {
			return o, nil, fmt.Errorf("%w: PROXY %s signature in a datagram from %s", ErrSpoof, versionName(k), peer.Addr())
		}
		return o, d, nil
	case k == sigV1:
		return o, nil, fmt.Errorf("%w: PROXY v1 has no UDP form", ErrBadHeader)
	case k != sigV2:
		return o, nil, ErrMissingHeader
	}
	if len(d) < v2PrefixLen {
		return o, nil, fmt.Errorf("%w: truncated v2 header", ErrBadHeader)
	}
	n := v2PrefixLen + int(binary.BigEndian.Uint16(d[14:16]))
	if n > len(d) {
		return o, nil, fmt.Errorf("%w: v2 header of %d bytes in a datagram of %d", ErrBadHeader, n, len(d))
	}
	vpce, tlvErr := inspectTLVs(d[:n])
	h, payload, err := proxyproto.ParseUDPDatagram(d)
	if err != nil {
		return o, nil, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if tlvErr != nil {
		return o, nil, tlvErr
	}
	o.Via, o.VPCEID = event.ViaProxyV2, vpce
	if h.Command.IsLocal() {
		o.Local = true
		return o, payload, nil
	}
	switch h.TransportProtocol {
	case proxyproto.UDPv4, proxyproto.UDPv6:
	default:
		return o, nil, fmt.Errorf("%w: transport %#x is not UDP over IP", ErrBadHeader, byte(h.TransportProtocol))
	}
	src, dst, ok := h.UDPAddrs()
	if !ok {
		return o, nil, fmt.Errorf("%w: no UDP addresses", ErrBadHeader)
	}
	client, ok1 := udpAddrPort(src)
	server, ok2 := udpAddrPort(dst)
	if !ok1 || !ok2 {
		return o, nil, fmt.Errorf("%w: invalid address", ErrBadHeader)
	}
	o.Client, o.Server = client, server
	return o, payload, nil
}

func udpAddrPort(a *net.UDPAddr) (netip.AddrPort, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port < 0 || a.Port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), true
}
