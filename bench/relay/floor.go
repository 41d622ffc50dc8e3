package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// runFloor is the "go-floor" relay: the least a transparent relay written
// with Go's net package does per connection (accept, dial the upstream
// from the client's address and port with IP_TRANSPARENT, io.Copy each
// way, which splices, half-close, close), with no origin, rules, limits,
// event or metrics. It shows how much of the app's cost per connection is
// Go's own (net, the netpoller, the scheduler) and how much is the app's.
// args: LISTEN UPSTREAM. It blocks until accept fails.
func runFloor(args []string) error {
	if len(args) != 2 {
		return errors.New("go-floor: want LISTEN UPSTREAM")
	}
	up, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return err
	}
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", args[0])
	if err != nil {
		return err
	}
	upAddr := net.TCPAddrFromAddrPort(up)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go floorConn(c.(*net.TCPConn), upAddr)
	}
}

func floorConn(c *net.TCPConn, up *net.TCPAddr) {
	defer c.Close()
	d := net.Dialer{
		LocalAddr: c.RemoteAddr(),
		KeepAlive: -1,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1); serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				}
			})
			return errors.Join(err, serr)
		},
	}
	uc, err := d.Dial("tcp", up.String())
	if err != nil {
		return
	}
	u := uc.(*net.TCPConn)
	defer u.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.CloseWrite()
	<-done
}
