// Package relay forwards an accepted client connection to an upstream
// service so that an unmodified service sees the true client address. It
// dials the upstream in one of four modes (transparent: the upstream
// socket's source is the client's address and port, with IP_TRANSPARENT;
// proxy-v2 and proxy-v1: a PROXY header with the client's address first, v2
// carrying the geo and residency results as TLVs 0xE0-0xE3; plain: nothing),
// copies bytes both ways with the kernel's splice path, half-closes each
// direction on its own, ends idle connections, and says how the connection
// ended. [Check] is the start-up self-check of transparent mode, done the
// way Cloudflare's mmproxy does it: a test connection from a recognisable
// non-local address, through the routing, to a listener of its own.
//
// Transparent mode needs CAP_NET_ADMIN (or CAP_NET_RAW) and the policy
// routing that brings the upstream's replies to the relay's socket:
//
//	ip rule add from 127.0.0.1/8 iif lo table 123
//	ip route add local 0.0.0.0/0 dev lo table 123
//	ip -6 rule add from ::1/128 iif lo table 123
//	ip -6 route add local ::/0 dev lo table 123
package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// Mode is the --upstream-mode setting.
type Mode int

const (
	// Transparent: the upstream connection's source is the client's
	// address and port (IP_TRANSPARENT), nothing is added to the bytes.
	Transparent Mode = iota
	// ProxyV2: a PROXY protocol v2 header with the client's address and
	// the TLVs of [Meta] precedes the client's bytes.
	ProxyV2
	// ProxyV1: a PROXY protocol v1 line with the client's address precedes
	// the client's bytes.
	ProxyV1
	// Plain: the upstream sees the relay as its client; no header.
	Plain
)

// ParseMode parses "transparent", "proxy-v2", "proxy-v1" or "plain".
func ParseMode(s string) (Mode, error) {
	for m := Transparent; m <= Plain; m++ {
		if m.String() == s {
			return m, nil
		}
	}
	return Transparent, fmt.Errorf("upstream mode must be transparent, proxy-v2, proxy-v1 or plain, not %q", s)
}

// String returns the flag spelling of m.
func (m Mode) String() string {
	switch m {
	case Transparent:
		return "transparent"
	case ProxyV2:
		return "proxy-v2"
	case ProxyV1:
		return "proxy-v1"
	case Plain:
		return "plain"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// The PROXY v2 TLVs of proxy-v2 mode, in the range the specification
// leaves to applications (0xE0-0xEF). Values are ASCII strings without a
// terminator, except ASN; a TLV whose value is unknown is left out.
const (
	TLVCountry  proxyproto.PP2Type = 0xE0 // ISO 3166-1 alpha-2 country of the client ("DE")
	TLVRegion   proxyproto.PP2Type = 0xE1 // residency region that serves the client ("eu")
	TLVDecision proxyproto.PP2Type = 0xE2 // residency decision: "serve" or "redirect"
	TLVASN      proxyproto.PP2Type = 0xE3 // autonomous system number, 4 bytes big-endian
)

// Meta is what the relay tells a proxy-v2 upstream about the client
// besides its address.
type Meta struct {
	Country  string
	Region   string
	Decision string
	ASN      uint32
}

// TLVs returns m's TLVs in type order, leaving out empty values.
func (m Meta) TLVs() []proxyproto.TLV {
	var tlvs []proxyproto.TLV
	for _, t := range []struct {
		typ proxyproto.PP2Type
		v   string
	}{{TLVCountry, m.Country}, {TLVRegion, m.Region}, {TLVDecision, m.Decision}} {
		if t.v != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: t.typ, Value: []byte(t.v)})
		}
	}
	if m.ASN != 0 {
		tlvs = append(tlvs, proxyproto.TLV{Type: TLVASN, Value: binary.BigEndian.AppendUint32(nil, m.ASN)})
	}
	return tlvs
}

// DefaultDialTimeout bounds dialing the upstream when Config.DialTimeout
// is zero. The upstream is on the same host or network: a short bound lets
// an unreachable upstream close the client at once.
const DefaultDialTimeout = 3 * time.Second

// Config configures a [Dialer].
type Config struct {
	Upstream    string        // host:port; a name is resolved once, by New
	Mode        Mode          // default Transparent
	Mark        int           // SO_MARK on upstream sockets; 0: none
	DialTimeout time.Duration // default DefaultDialTimeout
}

// Dialer dials the upstream. It is safe for concurrent use.
type Dialer struct {
	mode    Mode
	mark    int
	timeout time.Duration
	v4, v6  netip.AddrPort // the upstream's addresses by family; either may be invalid
	name    string
	// The net.Dialers of the modes, built once (their Control functions
	// too): plain for the proxy and plain modes; for transparent mode one
	// keeping the client's port and one letting connect pick it.
	plainND, transND, noPortND net.Dialer
	// shared is the dial context that dials from an uncancelable context
	// share (see dialContext).
	shared atomic.Pointer[sharedDeadline]
}

// sharedDeadline is a dial context with a deadline and the last start
// time (unix nanoseconds) of a dial that may use it.
type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: the deadline ends it
	until  int64
}

// maxDialShare bounds how much earlier than its own timeout a dial's
// shared context may end.
const maxDialShare = 10 * time.Millisecond

// dialContext returns the context a dial starting now runs under: it ends
// at most the dial timeout from now, or with ctx. A dial from
// context.Background (the server's: never canceled, no values) takes a
// shared one, made by the first dial of a window of min(timeout/16, 10 ms): its
// deadline is between the timeout minus that window and the timeout from
// the dial's start. A context with a deadline costs a runtime timer, a
// done channel and a cancel per dial; shared, the dials of a busy relay
// pay none of them (and the timer ends it: nothing to cancel).
func (d *Dialer) dialContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx != context.Background() {
		return context.WithTimeout(ctx, d.timeout)
	}
	now := time.Now()
	if s := d.shared.Load(); s != nil && now.UnixNano() <= s.until {
		return s.ctx, func() {}
	}
	c, cancel := context.WithDeadline(ctx, now.Add(d.timeout))
	d.shared.Store(&sharedDeadline{ctx: c, cancel: cancel, until: now.Add(min(d.timeout/16, maxDialShare)).UnixNano()})
	return c, func() {}
}

// New resolves cfg.Upstream (with the default resolver: use an address, or
// a name from /etc/hosts such as localhost) and returns a Dialer. It
// blocks for the resolution.
func New(ctx context.Context, cfg Config) (*Dialer, error) {
	if cfg.Mode < Transparent || cfg.Mode > Plain {
		return nil, fmt.Errorf("relay: unknown upstream mode %d", int(cfg.Mode))
	}
	if cfg.Mark < 0 {
		return nil, fmt.Errorf("relay: mark must not be negative, got %d", cfg.Mark)
	}
	if cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("relay: dial timeout must not be negative, got %v", cfg.DialTimeout)
	}
	d := &Dialer{mode: cfg.Mode, mark: cfg.Mark, timeout: cfg.DialTimeout, name: cfg.Upstream,
		plainND:  net.Dialer{Control: control(false, false, cfg.Mark), KeepAlive: -1},
		transND:  net.Dialer{Control: control(true, false, cfg.Mark), KeepAlive: -1},
		noPortND: net.Dialer{Control: control(true, true, cfg.Mark), KeepAlive: -1},
	}
	if d.timeout == 0 {
		d.timeout = DefaultDialTimeout
	}
	host, ps, err := net.SplitHostPort(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("relay: upstream %q: want host:port", cfg.Upstream)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("relay: upstream %q: port must be a number 1-65535", cfg.Upstream)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, fmt.Errorf("relay: resolving upstream %q: %w", cfg.Upstream, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && !d.v4.IsValid():
			d.v4 = netip.AddrPortFrom(a, uint16(port))
		case a.Is6() && !d.v6.IsValid():
			d.v6 = netip.AddrPortFrom(a, uint16(port))
		}
	}
	// A loopback upstream serves both families: a transparent dial must use
	// the client's family, and the other loopback is the same host.
	if d.v4.IsValid() && d.v4.Addr().IsLoopback() && !d.v6.IsValid() {
		d.v6 = netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port))
	}
	if d.v6.IsValid() && d.v6.Addr().IsLoopback() && !d.v4.IsValid() {
		d.v4 = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	}
	if !d.v4.IsValid() && !d.v6.IsValid() {
		return nil, fmt.Errorf("relay: upstream %q has no address", cfg.Upstream)
	}
	return d, nil
}

// Mode returns the dialer's mode.
func (d *Dialer) Mode() Mode { return d.mode }

// Upstream returns the upstream address a connection from client is
// relayed to (invalid when the upstream has no address the mode can use).
func (d *Dialer) Upstream(client netip.Addr) netip.AddrPort {
	up, _ := d.upstream(client.Unmap())
	return up
}

// Families reports which client address families the dialer can relay
// transparently (an upstream address of that family is known).
func (d *Dialer) Families() (v4, v6 bool) { return d.v4.IsValid(), d.v6.IsValid() }

// upstream picks the upstream address for a client: of the client's family
// in transparent mode (the source and destination must share one), else
// IPv4 first.
func (d *Dialer) upstream(client netip.Addr) (netip.AddrPort, error) {
	if d.mode == Transparent {
		up := d.v4
		if client.Is6() {
			up = d.v6
		}
		if !up.IsValid() {
			return up, fmt.Errorf("relay: upstream %s has no address of the client's family (%s)", d.name, client)
		}
		return up, nil
	}
	if d.v4.IsValid() {
		return d.v4, nil
	}
	return d.v6, nil
}

// Errors of [Dialer.Dial], wrapped: test them with errors.Is.
var (
	// ErrRefused: the upstream answered with a reset (nothing listens).
	ErrRefused = errors.New("relay: upstream refused the connection")
	// ErrUnreachable: no answer within the dial timeout, no route, or the
	// transparent socket could not be set up.
	ErrUnreachable = errors.New("relay: upstream unreachable")
)

// Dial connects to the upstream for the client and, in the proxy modes,
// writes the PROXY header (client -> server, plus m's TLVs in v2). client
// and server are what the relay learnt of the connection (unmapped). Dial
// blocks for at most the dial timeout (and ctx). The error wraps
// [ErrRefused] or [ErrUnreachable] for a dial failure; in transparent mode
// a client address that cannot be a source (unspecified, broadcast,
// multicast: only a PROXY header can claim one) is ErrUnreachable.
func (d *Dialer) Dial(ctx context.Context, client, server netip.AddrPort, m Meta) (*net.TCPConn, error) {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	up, err := d.upstream(client.Addr())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	ctx, cancel := d.dialContext(ctx)
	defer cancel()
	var tc *net.TCPConn
	if d.mode == Transparent {
		if a := client.Addr(); a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			// Bound to such an address the socket would take a local
			// source: the upstream would see a local client.
			return nil, fmt.Errorf("%w: client address %s cannot be a source address", ErrUnreachable, a)
		}
		tc, err = d.dialTransparent(ctx, client, up)
	} else {
		var c net.Conn
		if c, err = d.plainND.DialContext(ctx, "tcp", up.String()); err == nil {
			tc = c.(*net.TCPConn)
		}
	}
	if err != nil {
		return nil, dialErr(err)
	}
	if d.mode == ProxyV1 || d.mode == ProxyV2 {
		if err := writeHeader(tc, d.mode, client, server, m, d.timeout); err != nil {
			tc.Close()
			return nil, fmt.Errorf("relay: writing the PROXY header to %s: %w", up, err)
		}
	}
	return tc, nil
}

// dialTransparent dials up from the client's address, keeping its port
// (as go-mmproxy does) and, when that port is taken on this host (the
// client is local, or an older socket holds it), letting connect pick one
// (IP_BIND_ADDRESS_NO_PORT). Dialer.DialTCP takes the addresses as they
// are: no resolver, no address strings to format and parse.
func (d *Dialer) dialTransparent(ctx context.Context, client, up netip.AddrPort) (*net.TCPConn, error) {
	c, err := d.transND.DialTCP(ctx, "tcp", client, up)
	if client.Port() != 0 && (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)) {
		c, err = d.noPortND.DialTCP(ctx, "tcp", netip.AddrPortFrom(client.Addr(), 0), up)
	}
	return c, err
}

// dialErr classifies a dial error.
func dialErr(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// writeHeader writes the PROXY header for mode under a write deadline.
func writeHeader(c *net.TCPConn, mode Mode, client, server netip.AddrPort, m Meta, timeout time.Duration) error {
	b, err := Header(mode, client, server, m)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	_, err = c.Write(b)
	c.SetWriteDeadline(time.Time{})
	return err
}

// Header returns the PROXY header bytes of mode (ProxyV1 or ProxyV2) for a
// connection from client to server, built with go-proxyproto. A server
// address of the other family (or none) is replaced by the unspecified
// address of the client's family, port kept: a header has one family.
func Header(mode Mode, client, server netip.AddrPort, m Meta) ([]byte, error) {
	ca := client.Addr().Unmap()
	sa := server.Addr().Unmap()
	if !sa.IsValid() || sa.Is4() != ca.Is4() {
		sa = netip.IPv4Unspecified()
		if ca.Is6() {
			sa = netip.IPv6Unspecified()
		}
	}
	h := &proxyproto.Header{
		Version:           2,
		Command:           proxyproto.PROXY,
		TransportProtocol: proxyproto.TCPv4,
		SourceAddr:        net.TCPAddrFromAddrPort(netip.AddrPortFrom(ca, client.Port())),
		DestinationAddr:   net.TCPAddrFromAddrPort(netip.AddrPortFrom(sa, server.Port())),
	}
	if ca.Is6() {
		h.TransportProtocol = proxyproto.TCPv6
	}
	switch mode {
	case ProxyV1:
		h.Version = 1
	case ProxyV2:
		if err := h.SetTLVs(m.TLVs()); err != nil {
			return nil, fmt.Errorf("relay: PROXY v2 TLVs: %w", err)
		}
	default:
		return nil, fmt.Errorf("relay: no PROXY header in mode %s", mode)
	}
	return h.Format()
}
