//go:build linux

package server

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parkLot holds the connections that wait for a client's bytes without a
// goroutine: line connections whose echo loop waits for a next line, and
// silent connections waiting for their first byte (awaitFirstByte). An
// idle netcat session costs its conn and socket (about 2 KiB) instead of a
// goroutine stack (8 KiB).
//
// A parked connection's socket is registered in the lot's own epoll
// instance (EPOLLIN|EPOLLRDHUP|EPOLLONESHOT) under a token, never the bare
// descriptor: tokens come from a counter and are never reused, so an event
// that arrives after its connection left the lot finds no connection and
// is dropped. The socket stays registered in Go's netpoller too; the
// continuation reads it with a plain Read.
//
// Ownership (what makes wake/drain races and descriptor reuse impossible):
//
//   - A connection is in the lot, in parked (by token) and in byTime (by
//     deadline), and registered in the epoll instance, all or none, and
//     only under mu.
//   - While it is in the lot, the lot owns it: no goroutine runs it and
//     nobody closes its socket, so its descriptor is open and its own.
//   - Whoever takes it out under mu (take: the loop on readiness or on
//     its deadline, the drain before it closes it) deregisters the
//     descriptor in the same critical section and becomes the owner; it
//     hands the connection to the pool (resume), which continues it on a
//     worker with Server.resume (serve or resumeLine). Only one taker can find it, so it is
//     continued once, and it publishes its event once.
//   - The socket is closed only by an owner outside the lot (the drain
//     after take, or finish), so a descriptor is never closed, or reused by
//     another socket, while it is registered.
//   - park refuses a connection the drain has marked closed (checked under
//     mu, which the drain takes after marking): the drain either finds it
//     in the lot or the parking worker sees the mark and keeps it.
//
// Each parked connection counts once in the pool's WaitGroup, from park
// until its hand-back, so the drain waits for parked connections as for
// running ones. The loop goroutine is started by newParkLot and ends in
// close, which Serve calls after the drain, when the lot is empty. park,
// unpark and handBack are safe for concurrent use; close is called once.
type parkLot struct {
	epfd   int             // the epoll instance, open until close
	file   *os.File        // epfd in Go's netpoller: the loop waits on it
	sys    syscall.RawConn // file's
	wg     *sync.WaitGroup // the pool's
	count  *atomic.Int64   // parked connections, for tests
	resume func(c *conn)   // hands a taken connection to a worker; must not block
	done   chan struct{}   // closed when loop returns

	mu     sync.Mutex
	next   uint64           // the last token handed out
	parked map[uint64]*conn // by token
	byTime deadlineHeap     // the same connections, earliest deadline first
	closed bool             // close was called: park refuses
	reg    struct {         // park's registration, for register
		c   *conn
		err error
		fn  func(uintptr) // l.register
	}
	gone bool // the epoll instance is closed, with every registration: take leaves epfd alone
}

// newParkLot creates the epoll instance and starts the lot's goroutine.
// wg counts parked connections; resume is called, without mu, for each
// connection taken out of the lot.
//
// The loop does not block in epoll_wait on a thread of its own: the epoll
// instance is itself pollable, so it sits in Go's netpoller like a socket,
// the loop waits on it with RawConn.Read, and the earliest parked deadline
// is its read deadline.
func newParkLot(wg *sync.WaitGroup, count *atomic.Int64, resume func(*conn)) (*parkLot, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "parklot")
	sys, err := f.SyscallConn()
	if err == nil {
		// Is it in the netpoller? A deadline can only be set if it is.
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll fd in the netpoller: %w", err)
	}
	l := &parkLot{epfd: epfd, file: f, sys: sys, wg: wg, count: count, resume: resume,
		done: make(chan struct{}), parked: make(map[uint64]*conn)}
	l.reg.fn = l.register
	go l.loop()
	return l, nil
}

// park hands c to the lot: its socket is registered and the caller, which
// owns c, must not touch c again once park returns true (another worker may
// already be continuing it). It returns false, and the caller keeps c, when
// c cannot be parked: the lot is closing, the drain closed c, or its socket
// has no descriptor to register. c.deadline is c's idle deadline, already
// set on the socket. It does not block.
func (l *parkLot) park(c *conn) bool {
	if !sysConn(c) {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || c.state.Load() == stateClosed {
		return false
	}
	// Control holds the descriptor open: a Close meanwhile waits for it.
	l.reg.c, l.reg.err = c, nil
	err := c.sys.Control(l.reg.fn)
	l.reg.c = nil
	if err != nil || l.reg.err != nil {
		return false
	}
	l.next++
	c.token = l.next
	l.parked[c.token] = c
	heap.Push(&l.byTime, c)
	l.wg.Add(1)
	l.count.Add(1)
	if c.index == 0 {
		l.file.SetReadDeadline(c.deadline) // the earliest now: wake the loop then
	}
	return true
}

// sysConn sets c.sys, the socket's RawConn, if it is not set yet; it
// reports false when the socket has none.
func sysConn(c *conn) bool {
	if c.sys != nil {
		return true
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	sys, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	c.sys = sys
	return true
}

// readable waits until c's socket has a byte, EOF or an error to read, or
// until the time until, whichever comes first, without reading (a read
// would consume a reset's error), and reports whether it is readable. It
// uses the socket's read deadline, which it leaves cleared. A socket
// closed meanwhile (the drain) is readable: its read fails as it would
// have. Without a descriptor it reports true: the caller reads.
func readable(c *conn, until time.Time) bool {
	if !sysConn(c) {
		return true
	}
	c.SetReadDeadline(until)
	err := c.sys.Read(pollReadable)
	c.SetReadDeadline(time.Time{})
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// pollReadable is readable's RawConn.Read callback (a plain function: no
// allocation per call): true when fd has something to read.
func pollReadable(fd uintptr) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(fds[:], 0)
	return n > 0 || err != nil && !errors.Is(err, unix.EINTR)
}

// register is Control's callback for park (a method value made once, not
// a closure per park): it registers l.reg.c's descriptor under the next
// token. Called with mu held.
func (l *parkLot) register(fd uintptr) {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, l.next+1)
	l.reg.err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	l.reg.c.fd = int(fd)
}

// take removes c from the lot and deregisters its socket; the caller owns
// c if it returns true. Callers hold mu.
func (l *parkLot) take(c *conn) bool {
	if c.token == 0 || l.parked[c.token] != c {
		return false
	}
	delete(l.parked, c.token)
	heap.Remove(&l.byTime, c.index)
	if !l.gone {
		// The descriptor is open and c's: nobody closes a parked socket.
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	}
	c.token, c.fd, c.woken = 0, -1, true
	l.count.Add(-1)
	return true
}

// unpark takes c out of the lot if it is parked, for the drain, which then
// owns it: it closes the socket and gives c back with handBack. Safe for
// concurrent use.
func (l *parkLot) unpark(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.take(c)
}

// handBack gives a connection taken out of the lot to the pool, which
// continues it, and ends its count as parked.
func (l *parkLot) handBack(c *conn) {
	l.resume(c)
	l.wg.Done()
}

// loop waits for parked sockets to become readable (bytes, EOF, reset) and
// for the earliest deadline, takes those connections out and hands them
// back. It returns once close has closed the epoll instance, handing back
// whatever is still parked (nothing, when Serve has drained).
func (l *parkLot) loop() {
	defer close(l.done)
	events := make([]unix.EpollEvent, 128)
	var ready []*conn
	n := 0
	poll := func(fd uintptr) bool {
		var err error
		n, err = unix.EpollWait(int(fd), events, 0)
		return n > 0 || err != nil && !errors.Is(err, unix.EINTR)
	}
	gone := false
	for {
		n = 0
		err := l.sys.Read(poll)
		if gone = err != nil && !errors.Is(err, os.ErrDeadlineExceeded); gone || n < 0 {
			break // closed (or epoll_wait failed): hand everything back below
		}
		now := time.Now()
		l.mu.Lock()
		for i := range max(n, 0) {
			if c := l.parked[token(&events[i])]; c != nil && l.take(c) {
				ready = append(ready, c)
			}
		}
		for len(l.byTime) > 0 && !now.Before(l.byTime[0].deadline) {
			c := l.byTime[0]
			l.take(c)
			ready = append(ready, c)
		}
		var next time.Time // none: no deadline
		if len(l.byTime) > 0 {
			next = l.byTime[0].deadline
		}
		l.file.SetReadDeadline(next)
		l.mu.Unlock()
		for i, c := range ready {
			l.handBack(c)
			ready[i] = nil
		}
		ready = ready[:0]
	}
	l.mu.Lock()
	l.closed, l.gone = true, gone
	for _, c := range l.parked {
		l.take(c)
		ready = append(ready, c)
	}
	l.mu.Unlock()
	for _, c := range ready {
		l.handBack(c)
	}
}

// close stops the loop, waits for it and closes the epoll instance. Serve
// calls it after the drain; parking fails from then on.
func (l *parkLot) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.file.Close() // ends the loop's Read
	<-l.done
}

// setToken and token store a 64-bit token in an epoll event's data (the
// Fd and Pad fields are its two 32-bit halves on every Linux port).
func setToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd, ev.Pad = int32(uint32(tok)), int32(uint32(tok>>32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// deadlineHeap orders parked connections by deadline; conn.index is a
// connection's place in it.
type deadlineHeap []*conn

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	c := x.(*conn)
	c.index = len(*h)
	*h = append(*h, c)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
