//go:build linux

package server

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bufferedConn is a resolved connection with bytes already read from the
// socket (as origin.Conn has after a PROXY header).
type bufferedConn struct {
	net.Conn
	n int
}

func (b bufferedConn) Buffered() int { return b.n }

// Ensure a connection whose resolved connection still buffers bytes is
// never parked, even when the grace is skipped (over maxGraceWaits): its
// socket would never become readable for them. The control case, with
// nothing buffered, parks.
func TestPendingNotParked(t *testing.T) {
	_, sc := loopbackPair(t)
	lot, wg, count := lotThatMustNotHandBack(t)
	s := &Server{}
	s.parkAfter.Store(int64(time.Second))
	s.graceWaits.Store(maxGraceWaits) // every wait parks at once

	for _, buffered := range []int{5, 0} {
		c := &conn{Conn: sc, lot: lot, deadline: time.Now().Add(time.Minute)}
		c.lr = limitedReader{r: bufferedConn{sc, buffered}, n: noLimit64}
		parked, n, err := s.graceWait(c)
		if parked {
			if !lot.unpark(c) {
				t.Fatal("parked but not in the lot")
			}
			wg.Done()
		}
		if want := buffered == 0; parked != want || n != 0 || err != nil {
			t.Errorf("%d bytes buffered: graceWait = %v, %d, %v; want parked %v", buffered, parked, n, err, want)
		}
	}
	if count.Load() != 0 {
		t.Errorf("%d still parked", count.Load())
	}
}

// loopbackPair returns both ends of a loopback TCP connection, closed at
// the end of the test.
func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// lotThatMustNotHandBack returns a park lot, closed at the end of the test,
// that fails the test if it hands a connection back, with its WaitGroup
// and count; it skips the test where no lot can be made.
func lotThatMustNotHandBack(t *testing.T) (*parkLot, *sync.WaitGroup, *atomic.Int64) {
	t.Helper()
	wg, count := new(sync.WaitGroup), new(atomic.Int64)
	lot, err := newParkLot(wg, count, func(*conn) { t.Error("a connection was handed back") })
	if err != nil {
		t.Skipf("no park lot: %v", err)
	}
	t.Cleanup(lot.close)
	return lot, wg, count
}
