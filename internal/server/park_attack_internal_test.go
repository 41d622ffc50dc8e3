//go:build linux

package server

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ensure a failed epoll_ctl (here EEXIST: the descriptor is already in the
// lot's epoll instance; in production ENOSPC past max_user_watches, or
// ENOMEM) leaves the connection with its caller: graceWait reports it not
// parked, the lot holds nothing and counts nothing, and the connection
// still reads its client's next bytes on its goroutine.
func TestParkEpollCtlFails(t *testing.T) {
	client, sc := loopbackPair(t)
	lot, _, count := lotThatMustNotHandBack(t)
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ctlErr error
	raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN}
		ctlErr = unix.EpollCtl(lot.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	s := &Server{}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, 4096) }
	s.parkAfter.Store(int64(10 * time.Millisecond))
	c := &conn{Conn: sc, lot: lot, deadline: time.Now().Add(time.Minute)}
	c.SetDeadline(c.deadline)
	c.lr = limitedReader{r: c, n: noLimit64}
	parked, n, err := s.graceWait(c)
	if parked || n != 0 || err != nil {
		t.Fatalf("graceWait = %v, %d, %v; want not parked, nothing read", parked, n, err)
	}
	lot.mu.Lock()
	inLot := len(lot.parked) + len(lot.byTime)
	lot.mu.Unlock()
	if inLot != 0 || count.Load() != 0 || c.token != 0 {
		t.Fatalf("after a failed park: %d in the lot, count %d, token %d", inLot, count.Load(), c.token)
	}
	client.Write([]byte("next\n"))
	if parked, err := s.waitLine(c); parked || err != nil {
		t.Fatalf("waitLine = %v, %v", parked, err)
	}
	if line, err := readLine(c.br, 100); string(line) != "next\n" || err != nil {
		t.Errorf("read %q, %v after a failed park", line, err)
	}
}

// Ensure the lot hands back each parked connection at its own deadline,
// whatever the order they were parked in: near and far deadlines mixed
// (some an hour away, some already past), none before its deadline, none
// forgotten, the far ones kept until taken out.
func TestParkDeadlinesMixed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type back struct {
		c  *conn
		at time.Time
	}
	backs := make(chan back, 100)
	var wg sync.WaitGroup
	var count atomic.Int64
	lot, err := newParkLot(&wg, &count, func(c *conn) { backs <- back{c, time.Now()} })
	if err != nil {
		t.Skipf("no park lot: %v", err)
	}
	defer lot.close()

	const n = 40
	now := time.Now()
	var far []*conn
	near := map[*conn]bool{}
	for i := range n {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		// Near deadlines in a shuffled order, one already past; every
		// fourth an hour away.
		d := now.Add(time.Duration((i*7919)%n) * 20 * time.Millisecond)
		if i%4 == 3 {
			d = now.Add(time.Hour)
		}
		c := &conn{Conn: sc, deadline: d}
		if !lot.park(c) {
			t.Fatalf("conn %d not parked", i)
		}
		if i%4 == 3 {
			far = append(far, c)
		} else {
			near[c] = true
		}
	}
	for range len(near) {
		select {
		case b := <-backs:
			if !near[b.c] {
				t.Fatalf("a connection handed back that was not due (deadline %v)", b.c.deadline)
			}
			if b.at.Before(b.c.deadline) {
				t.Errorf("handed back %v before its deadline", b.c.deadline.Sub(b.at))
			}
			delete(near, b.c) // handBack has ended its count in wg
		case <-time.After(30 * time.Second):
			t.Fatalf("%d connections past their deadline not handed back", len(near))
		}
	}
	if got := count.Load(); got != int64(len(far)) {
		t.Errorf("%d parked, want the %d far ones", got, len(far))
	}
	for _, c := range far {
		if !lot.unpark(c) {
			t.Errorf("far connection not in the lot")
		}
		wg.Done() // handBack's part, for a connection taken out by hand
	}
	select {
	case b := <-backs:
		t.Errorf("unexpected hand-back (deadline %v)", b.c.deadline)
	default:
	}
}
