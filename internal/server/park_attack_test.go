//go:build linux

package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Ensure parked connections count against MaxConns: with MaxConns parked,
// the next client is refused at accept (too-many-connections); once one
// parked client quits, a new one is served. The open-connections gauge
// follows and is 0 when all have ended.
func TestParkedCountAgainstMaxConns(t *testing.T) {
	const max = 5
	reg := prometheus.NewRegistry()
	ts := startParking(t, func(c *server.Config) { c.MaxConns = max; c.Registerer = reg })
	cs := openParked(t, ts, max)
	if g := metricValue(t, reg, "originlens_open_connections", nil); g != max {
		t.Errorf("open gauge %v with %d parked, want %d", g, max, max)
	}
	over := dial(t, ts.addr)
	expectEOF(t, over, nil)
	if ev := ts.rec.wait(1)[0]; ev.Event.Reason != "too-many-connections" {
		t.Fatalf("over the limit: reason %q, want too-many-connections", ev.Event.Reason)
	}
	cs[0].send(t, "quit\n")
	expectEOF(t, cs[0], cs[0].br)
	ts.rec.wait(2)
	waitFor(t, func() bool { return ts.srv.Open() == max-1 })
	next := newLineClient(t, ts.addr)
	next.report(t)
	next.readLine(t)
	next.send(t, "quit\n")
	expectEOF(t, next, next.br)
	for _, c := range cs[1:] {
		c.send(t, "quit\n")
		expectEOF(t, c, c.br)
	}
	ts.rec.wait(max + 2)
	waitFor(t, func() bool { return metricValue(t, reg, "originlens_open_connections", nil) == 0 })
}

// Ensure each per-source slot a parked connection holds is released
// exactly once, however it ends (quit, half-close, reset, idle timeout,
// drain), after many park/wake cycles.
func TestParkedReleaseOnce(t *testing.T) {
	var mu sync.Mutex
	held := map[int]int{} // acquire number -> releases
	acquired := 0
	lim := limiterFunc(func(netip.Addr, time.Time) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		acquired++
		id := acquired
		held[id] = 0
		return func() { mu.Lock(); held[id]++; mu.Unlock() }, nil
	})
	ts := startServer(t, func(c *server.Config) {
		c.Limiter, c.IdleTimeout, c.DrainTimeout = lim, 600*time.Millisecond, 300*time.Millisecond
	})
	server.SetParkAfter(ts.srv, time.Millisecond, 20*time.Millisecond)
	const n = 50
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
		cs[i].report(t)
		cs[i].readLine(t)
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for k := range 5 {
				time.Sleep(time.Duration(5+(i*k)%40) * time.Millisecond)
				if _, err := fmt.Fprintf(c, "%d\n", k); err != nil {
					return
				}
				if _, err := c.br.ReadString('\n'); err != nil {
					return
				}
			}
			switch i % 5 {
			case 0:
				c.Write([]byte("quit\n"))
			case 1:
				c.Conn.(*net.TCPConn).CloseWrite()
			case 2:
				c.Conn.(*net.TCPConn).SetLinger(0)
				c.Close()
			case 3: // idle timeout
			case 4:
				if i > n/2 {
					ts.cancel() // drain while others still park and wake
				}
			}
		})
	}
	wg.Wait()
	ts.stop(t)
	ts.rec.wait(n)
	mu.Lock()
	defer mu.Unlock()
	if acquired != n {
		t.Errorf("%d acquired, want %d", acquired, n)
	}
	for id, r := range held {
		if r != 1 {
			t.Errorf("slot %d released %d times, want once", id, r)
		}
	}
}

// Ensure the idle timeout holds after many park/wake cycles: clients that
// send lines at random gaps below the idle timeout (each parks between
// lines), then stop, each end with idle-timeout no sooner than the idle
// timeout after their last echo, and not far later.
func TestParkedIdleAfterCycles(t *testing.T) {
	const idle = 400 * time.Millisecond
	ts := startServer(t, func(c *server.Config) { c.IdleTimeout = idle })
	server.SetParkAfter(ts.srv, time.Millisecond, 20*time.Millisecond)
	const n = 30
	last := make([]atomic.Int64, n)
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
		cs[i].report(t)
		cs[i].readLine(t)
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		wg.Go(func() {
			for k := range 8 {
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
				if _, err := fmt.Fprintf(c, "%d\n", k); err != nil {
					t.Errorf("client %d: line %d: %v", i, k, err)
					return
				}
				if got, err := c.br.ReadString('\n'); got != fmt.Sprintf("%d\n", k) {
					t.Errorf("client %d: echo %q, %v", i, got, err)
					return
				}
				last[i].Store(time.Now().UnixNano())
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if b, err := c.br.ReadString('\n'); err == nil || b != "" {
				t.Errorf("client %d: %q, %v after its last line; want EOF", i, b, err)
			}
			if waited := time.Since(time.Unix(0, last[i].Load())); waited < idle-50*time.Millisecond {
				t.Errorf("client %d closed %v after its last echo, before the idle timeout %v", i, waited, idle)
			}
		})
	}
	wg.Wait()
	for _, ev := range ts.rec.wait(n) {
		if ev.Event.Reason != "idle-timeout" {
			t.Errorf("event %s: reason %q, want idle-timeout", ev.Event.ID, ev.Event.Reason)
		}
	}
}

// Ensure a second Serve on a Server that already serves is refused (an
// error, its listener closed) instead of serving: the drain is the
// Server's, so a second Serve's drain would close the first's connections,
// and a parked one's socket while it is registered in the first's lot (its
// descriptor then reused under the lot). The first Serve's parked client
// still echoes and ends served.
func TestServeOnce(t *testing.T) {
	ts := startParking(t, func(c *server.Config) { c.DrainTimeout = 200 * time.Millisecond })
	a := openParked(t, ts, 1)[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, ln) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("second Serve returned nil, want an error")
		}
	case <-time.After(20 * time.Second):
		t.Error("a second Serve on the same Server serves")
		// What that does: its drain ends with a client open and closes
		// every connection of the Server.
		b := newLineClient(t, ln.Addr().String())
		b.report(t)
		b.readLine(t)
		waitFor(t, func() bool { return server.Parked(ts.srv) == 2 })
		cancel()
		expectEOF(t, b, b.br)
		<-done
	}
	a.send(t, "still here\n")
	a.SetReadDeadline(time.Now().Add(20 * time.Second))
	if got, err := a.br.ReadString('\n'); got != "still here\n" {
		t.Fatalf("first Serve's parked client: echo %q, %v", got, err)
	}
	a.send(t, "quit\n")
	expectEOF(t, a, a.br)
	if ev := bySource(ts.rec.wait(1))[addrOf(t, a.LocalAddr())]; ev.Event.Reason != "served" {
		t.Errorf("first Serve's client: reason %q, want served", ev.Event.Reason)
	}
}

// Ensure relayed and HTTP keep-alive connections never park: with a grace
// of 1 ms, a relayed client idle between exchanges and an HTTP client idle
// between requests stay on their goroutines (nothing parked) and go on.
func TestRelayAndHTTPNeverPark(t *testing.T) {
	up := startRelayUpstream(t, func(c *net.TCPConn) { io.Copy(c, c) })
	relayed := startServer(t, func(c *server.Config) { c.Relay = relayDialer(t, up.addr, relay.Plain) })
	server.SetParkAfter(relayed.srv, time.Millisecond, time.Minute)
	answered := startServer(t, nil)
	server.SetParkAfter(answered.srv, time.Millisecond, time.Minute)

	rc := dial(t, relayed.addr)
	rbr := bufio.NewReader(rc)
	hc := dial(t, answered.addr)
	hbr := bufio.NewReader(hc)
	for i := range 3 {
		fmt.Fprintf(rc, "line %d\n", i)
		if got, err := rbr.ReadString('\n'); got != fmt.Sprintf("line %d\n", i) {
			t.Fatalf("relayed echo %q, %v", got, err)
		}
		fmt.Fprintf(hc, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		resp, err := http.ReadResponse(hbr, nil)
		if err != nil {
			t.Fatalf("HTTP request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond) // 50 graces: a line connection would be parked now
		if p, q := server.Parked(relayed.srv), server.Parked(answered.srv); p != 0 || q != 0 {
			t.Fatalf("parked: relay %d, HTTP %d; want none", p, q)
		}
	}
}

// Ensure a client that trickles a line without its newline, one byte at a
// time just inside and just outside the grace (so that it parks and wakes,
// or never parks), is ended at the idle timeout: bytes of an unfinished
// line do not extend it.
func TestTrickleAcrossGraceIdleTimeout(t *testing.T) {
	const idle, grace = 800 * time.Millisecond, 50 * time.Millisecond
	ts := startServer(t, func(c *server.Config) { c.IdleTimeout = idle })
	server.SetParkAfter(ts.srv, grace, time.Minute)
	gaps := []time.Duration{grace - 5*time.Millisecond, grace + 5*time.Millisecond}
	var wg sync.WaitGroup
	for _, gap := range gaps {
		c := newLineClient(t, ts.addr)
		c.report(t)
		c.readLine(t)
		start := time.Now()
		wg.Go(func() {
			for range 400 { // 18 s or more: far past the idle timeout
				time.Sleep(gap)
				if _, err := c.Write([]byte("x")); err != nil {
					break // closed by the server
				}
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, err := io.ReadAll(c.br)
			if err != nil && !isReset(err) {
				t.Errorf("gap %v: read %v", gap, err)
			}
			if took := time.Since(start); took < idle || took > idle+10*time.Second {
				t.Errorf("gap %v: closed after %v, want the idle timeout %v (echoed %d bytes)", gap, took, idle, len(b))
			}
		})
	}
	wg.Wait()
	for _, ev := range ts.rec.wait(len(gaps)) {
		if ev.Event.Reason != "idle-timeout" {
			t.Errorf("event %s: reason %q, want idle-timeout", ev.Event.ID, ev.Event.Reason)
		}
	}
}

// Ensure a burst of clients that connect, wait, send their first line and
// go quiet leaves at most 256 (maxGraceWaits) idle workers once they are
// parked, not one per client for the worker idle time: each held a worker
// (or, silent past the grace, a place in the lot) while it had not sent
// its first line, and an idle worker's stack costs what parking saves.
func TestBurstLeavesBoundedIdleWorkers(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.MaxConns = 2000 })
	server.SetParkAfter(ts.srv, 5*time.Millisecond, time.Hour)
	const n, bound = 800, 256
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
	}
	waitFor(t, func() bool { return ts.srv.Open() == n }) // all accepted
	for _, c := range cs {
		c.send(t, "hello\n")
	}
	for _, c := range cs {
		c.readLine(t) // report
		c.readLine(t) // greeting
	}
	waitFor(t, func() bool { return server.Parked(ts.srv) == n })
	var running int64
	for range 3000 { // 30 s at most
		if running, _ = server.Workers(ts.srv); running <= bound {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if running > bound {
		t.Fatalf("%d workers idle with %d connections parked, want at most %d", running, n, bound)
	}
	cs[n-1].send(t, "still there\n")
	if got := cs[n-1].readLine(t); got != "still there" {
		t.Errorf("echo %q", got)
	}
}
