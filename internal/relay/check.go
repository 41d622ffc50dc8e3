package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Routing is the policy routing that transparent mode needs for a
// loopback upstream (go-mmproxy's), one command a line, as [Check]'s error
// prints it.
const Routing = `ip rule add from 127.0.0.1/8 iif lo table 123
ip route add local 0.0.0.0/0 dev lo table 123
ip -6 rule add from ::1/128 iif lo table 123
ip -6 route add local ::/0 dev lo table 123`

// The recognisable non-local sources of the check's test connections
// (documentation addresses, as mmproxy uses).
var (
	checkSource4 = netip.MustParseAddrPort("192.0.2.1:0")
	checkSource6 = netip.MustParseAddrPort("[2001:db8::1]:0")
)

// ErrCheck is wrapped by the errors of [Check].
var ErrCheck = errors.New("relay: transparent mode cannot work on this host")

// DefaultCheckTimeout bounds each test connection of [Check].
const DefaultCheckTimeout = time.Second

// Check verifies, the way Cloudflare's mmproxy does, that transparent mode
// works here: for each family the upstream has, it opens a listener of its
// own on the loopback address and connects to it from a non-local
// documentation address (192.0.2.1, 2001:db8::1) with IP_TRANSPARENT and
// the mark, and checks that the listener accepts exactly that source. The
// connection fails with EPERM without CAP_NET_ADMIN, and times out without
// the routing that brings the replies back to lo. The error wraps
// [ErrCheck] and says what is missing and the commands that install it.
// For an upstream that is not on loopback (--upstream-mark and its fwmark
// routing), the test connection goes to the upstream itself, as mmproxy's
// per-target check does: a connect that succeeds or is refused proves the
// answer came back through the routing.
// Check blocks for at most timeout per family (DefaultCheckTimeout when 0).
func (d *Dialer) Check(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	var problems []string
	if d.v4.IsValid() {
		if err := d.checkOne(ctx, d.v4, "tcp4", "127.0.0.1:0", checkSource4, timeout); err != nil {
			problems = append(problems, "IPv4: "+err.Error())
		}
	}
	if d.v6.IsValid() && (!d.v6.Addr().IsLoopback() || hasIPv6Loopback()) {
		if err := d.checkOne(ctx, d.v6, "tcp6", "[::1]:0", checkSource6, timeout); err != nil {
			problems = append(problems, "IPv6: "+err.Error())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s\nrun as root (once per boot; the systemd unit does it), and give the app CAP_NET_ADMIN:\n%s",
		ErrCheck, strings.Join(problems, "; "), Routing)
}

// checkOne checks one family: against a listener of its own on the
// loopback address for a loopback upstream; for an upstream elsewhere (an
// address of this host with --upstream-mark and its fwmark routing, which
// a loopback test connection does not take) against the upstream itself,
// as mmproxy does per target: the connect succeeds, or is refused, only if
// the upstream's answer came back to the transparent socket.
func (d *Dialer) checkOne(ctx context.Context, up netip.AddrPort, network, listen string, src netip.AddrPort, timeout time.Duration) error {
	if up.Addr().IsLoopback() {
		return checkFamily(ctx, network, listen, src, d.mark, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Control: control(true, false, d.mark), KeepAlive: -1}
	c, err := nd.DialContext(ctx, network, up.String())
	switch {
	case err == nil:
		c.Close()
		return nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil // the upstream's reset came back: the routing works
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("IP_TRANSPARENT not permitted (the app needs CAP_NET_ADMIN): %w", err)
	}
	return fmt.Errorf("a test connection from %s to the upstream %s got no answer through the routing (for an upstream that is not on loopback: the fwmark rule and the connmark rules of docs/relay.md): %w",
		src.Addr(), up, err)
}

// hasIPv6Loopback reports whether ::1 can be bound (IPv6 is enabled).
func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// checkFamily makes one test connection from src to a listener of its own
// on listen and says what failed.
func checkFamily(ctx context.Context, network, listen string, src netip.AddrPort, mark int, timeout time.Duration) error {
	ln, err := net.Listen(network, listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got := make(chan netip.AddrPort, 1)
	go func() {
		defer close(got)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			c.Close()
			if peer.Addr().Unmap() == src.Addr() {
				got <- peer
				return
			}
		}
	}()
	nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Control: control(true, false, mark), KeepAlive: -1}
	c, err := nd.DialContext(ctx, network, ln.Addr().String())
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("IP_TRANSPARENT not permitted (the app needs CAP_NET_ADMIN): %w", err)
	case err != nil:
		return fmt.Errorf("a test connection from %s to %s got no answer through the routing (ip rule / ip route missing): %w",
			src.Addr(), ln.Addr(), err)
	}
	c.Close()
	select {
	case _, ok := <-got:
		if !ok {
			return fmt.Errorf("the test connection from %s reached %s with another source address", src.Addr(), ln.Addr())
		}
	case <-ctx.Done():
		return fmt.Errorf("the test connection from %s was not accepted: %w", src.Addr(), ctx.Err())
	}
	return nil
}
