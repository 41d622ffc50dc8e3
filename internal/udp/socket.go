package udp

// Destination addresses come from the kernel as control messages
// (IP_PKTINFO for IPv4 sockets, IPV6_PKTINFO for IPv6 and dual-stack ones,
// where IPv4 datagrams show up with an IPv4-mapped address) and go back
// with the reply as the source to use. golang.org/x/sys/unix, already a
// dependency of the module, has the socket options and the pktinfo
// structures; golang.org/x/net/ipv4 and ipv6 would add a module for the
// same two control messages.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// oobSize holds one IPv6 pktinfo message and one IPv4 one.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo)

// controlPktinfo asks for the destination address of every datagram, in a
// net.ListenConfig's Control (before bind).
func controlPktinfo(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) { serr = setPktinfo(int(fd)) })
	if err != nil {
		return err
	}
	return serr
}

// setPktinfo enables the destination address reports on fd: IPV6_RECVPKTINFO
// on an IPv6 socket (which reports IPv4 datagrams of a dual-stack socket
// too), IP_PKTINFO on an IPv4 one.
func setPktinfo(fd int) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("udp: socket domain: %w", err)
	}
	if domain == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fmt.Errorf("udp: IPV6_RECVPKTINFO: %w", err)
		}
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("udp: IP_PKTINFO: %w", err)
	}
	return nil
}

// socket is the served socket with what the readers need to know of it.
type socket struct {
	conn  *net.UDPConn
	local netip.AddrPort // the bound address; its port is every flow's server port
	v6    bool           // an AF_INET6 socket: replies carry IPV6_PKTINFO
}

// newSocket enables the destination address reports on conn and returns
// it as a socket.
func newSocket(conn *net.UDPConn) (*socket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = setPktinfo(int(fd)); serr == nil {
			domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		}
	}); err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	if serr != nil {
		return nil, serr
	}
	ap := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return &socket{
		conn:  conn,
		local: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()),
		v6:    domain == unix.AF_INET6,
	}, nil
}

// destination returns the address and port the datagram with control
// messages oob was sent to, unmapped; the socket's own address when oob
// says nothing.
func (s *socket) destination(oob []byte) netip.AddrPort {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			a := netip.AddrFrom4([4]byte(data[8:12]))
			return netip.AddrPortFrom(a, s.local.Port())
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; int ifindex; }
			a := netip.AddrFrom16([16]byte(data[:16])).Unmap()
			if a.IsLinkLocalUnicast() {
				a = a.WithZone(strconv.FormatUint(uint64(binary.NativeEndian.Uint32(data[16:20])), 10))
			}
			return netip.AddrPortFrom(a, s.local.Port())
		}
	}
	return s.local
}

// pktinfo returns the control message that makes a reply leave from src;
// nil for an unspecified src (the kernel chooses).
func (s *socket) pktinfo(src netip.Addr) []byte {
	if !src.IsValid() || src.IsUnspecified() {
		return nil
	}
	if !s.v6 {
		if !src.Is4() {
			return nil
		}
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.As4()})
	}
	info := unix.Inet6Pktinfo{Addr: src.Unmap().As16()} // IPv4 as ::ffff:a.b.c.d
	if z := src.Zone(); z != "" {
		if idx, err := strconv.ParseUint(z, 10, 32); err == nil {
			info.Ifindex = uint32(idx)
		}
	}
	return unix.PktInfo6(&info)
}
