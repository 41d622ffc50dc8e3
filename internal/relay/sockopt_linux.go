package relay

import (
	"sync"
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
	// The options are chosen here, once per Dialer; the returned function
	// only applies them (one rc.Control, no allocation of its own).
	var opts4, opts6 []opt
	add := func(o opt, v6 opt) { opts4, opts6 = append(opts4, o), append(opts6, v6) }
	both := func(o opt) { add(o, o) }
	both(opt{unix.IPPROTO_TCP, unix.TCP_SYNCNT, 2, "TCP_SYNCNT"})
	if mark > 0 {
		both(opt{unix.SOL_SOCKET, unix.SO_MARK, mark, "SO_MARK"})
	}
	if transparent {
		add(opt{unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1, "IP_TRANSPARENT"}, opt{unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT"})
		both(opt{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"})
		if noPort {
			both(opt{unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT"})
		}
	}
	// The function rc.Control runs is an applier's method value, made
	// once per applier and pooled: a closure per dial (and its error)
	// would be two allocations on every relayed connection.
	var pool sync.Pool
	pool.New = func() any {
		a := &applier{}
		a.fn = a.apply
		return a
	}
	return func(network, _ string, rc syscall.RawConn) error {
		a := pool.Get().(*applier)
		a.opts = opts4
		if network == "tcp6" {
			a.opts = opts6
		}
		err := rc.Control(a.fn)
		serr := a.err
		a.opts, a.err = nil, nil
		pool.Put(a)
		if err != nil {
			return err
		}
		return serr
	}
}

// opt is one socket option a Dialer sets.
type opt struct {
	level, opt, v int
	name          string
}

// applier sets opts on a socket in its apply method (fn, bound once),
// recording the first failure in err.
type applier struct {
	opts []opt
	err  error
	fn   func(fd uintptr)
}

func (a *applier) apply(fd uintptr) {
	for _, o := range a.opts {
		if err := unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil {
			a.err = &sockoptError{o.name, err}
			return
		}
	}
}
