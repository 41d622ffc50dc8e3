package relay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// control returns a net.Dialer Control function that sets the upstream
// socket's options after socket() and before bind() and connect():
// TCP_SYNCNT 2 (fail fast), SO_MARK when mark > 0, and for a transparent
// socket IP_TRANSPARENT or IPV6_TRANSPARENT and SO_REUSEADDR (the client's
// port may still be held by a socket in TIME_WAIT), plus
// IP_BIND_ADDRESS_NO_PORT when noPort.
func control(transparent, noPort bool, mark int) func(network, address string, rc syscall.RawConn) error {
	return func(network, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			set := func(level, opt, v int, name string) {
				if serr == nil {
					if err := unix.SetsockoptInt(s, level, opt, v); err != nil {
						serr = &sockoptError{name, err}
					}
				}
			}
			set(unix.IPPROTO_TCP, unix.TCP_SYNCNT, 2, "TCP_SYNCNT")
			if mark > 0 {
				set(unix.SOL_SOCKET, unix.SO_MARK, mark, "SO_MARK")
			}
			if transparent {
				if network == "tcp6" {
					set(unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT")
				} else {
					set(unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1, "IP_TRANSPARENT")
				}
				set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR")
				if noPort {
					set(unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT")
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
