//go:build linux

package server_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/server"
)

// startParking starts a server whose echo loops park after 5 ms and whose
// idle workers exit after 50 ms, so that tests see parked connections
// without goroutines quickly.
func startParking(t *testing.T, mod func(*server.Config)) *testServer {
	t.Helper()
	ts := startServer(t, mod)
	server.SetParkAfter(ts.srv, 5*time.Millisecond, 50*time.Millisecond)
	return ts
}

// openParked opens n line clients that read their report and greeting,
// and waits until all n are parked.
func openParked(t *testing.T, ts *testServer, n int) []*lineClient {
	t.Helper()
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
		cs[i].report(t)
		cs[i].readLine(t)
	}
	waitFor(t, func() bool { return server.Parked(ts.srv) == int64(n) })
	return cs
}

// Ensure many parked connections each echo their own lines when they wake,
// park again between lines, and end with one served event each whose byte
// counts include every echoed byte.
func TestParkedEcho(t *testing.T) {
	ts := startParking(t, nil)
	const n = 100
	cs := openParked(t, ts, n)
	for round := range 2 {
		for i, c := range cs {
			c.send(t, fmt.Sprintf("line %d of %d\n", round, i))
		}
		for i, c := range cs {
			if got, want := c.readLine(t), fmt.Sprintf("line %d of %d", round, i); got != want {
				t.Fatalf("client %d: echo %q, want %q", i, got, want)
			}
		}
		waitFor(t, func() bool { return server.Parked(ts.srv) == n }) // parked again
	}
	for _, c := range cs {
		c.send(t, "quit\n")
		expectEOF(t, c, c.br)
	}
	evs := byID(t, ts.rec.wait(n))
	if len(evs) != n {
		t.Fatalf("%d distinct events, want %d", len(evs), n)
	}
	bySrc := bySource(ts.rec.all())
	for i, c := range cs {
		ev := bySrc[addrOf(t, c.LocalAddr())]
		in := int64(len("hello\n") + len(fmt.Sprintf("line 0 of %d\n", i))*2 + len("quit\n"))
		if ev.Event.Reason != "served" || ev.Source.Bytes != in {
			t.Errorf("client %d: reason %q, source.bytes %d; want served, %d", i, ev.Event.Reason, ev.Source.Bytes, in)
		}
	}
	if p := server.Parked(ts.srv); p != 0 {
		t.Errorf("%d connections still parked after all ended", p)
	}
}

// Ensure idle connections hold no goroutine: 500 parked connections leave
// fewer than 50 goroutines more than before them (with a goroutine per
// idle connection it would be 500 more).
func TestParkedHoldNoGoroutine(t *testing.T) {
	ts := startParking(t, func(c *server.Config) { c.MaxConns = 1000 })
	base := runtime.NumGoroutine()
	const n = 500
	cs := openParked(t, ts, n)
	var delta int
	for range 600 { // idle workers exit after 50 ms
		if delta = runtime.NumGoroutine() - base; delta < n/10 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if delta >= n/10 {
		t.Fatalf("%d idle connections hold %d more goroutines, want fewer than %d", n, delta, n/10)
	}
	t.Logf("%d parked connections, %d more goroutines", n, delta)
	// They still answer.
	for _, i := range []int{0, n / 2, n - 1} {
		cs[i].send(t, "still there\n")
		if got := cs[i].readLine(t); got != "still there" {
			t.Errorf("client %d: echo %q", i, got)
		}
	}
}

// Ensure a parked connection's idle timeout ends it as before: EOF for the
// client, one event each with reason idle-timeout, not before the deadline.
func TestParkedIdleTimeout(t *testing.T) {
	const idle = 1500 * time.Millisecond
	ts := startParking(t, func(c *server.Config) { c.IdleTimeout = idle })
	const n = 20
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
		cs[i].report(t)
		cs[i].readLine(t)
	}
	parked := false
	waitFor(t, func() bool {
		parked = parked || server.Parked(ts.srv) > 0
		return ts.rec.published.Load() == n
	})
	if !parked {
		t.Errorf("no connection was parked before the idle timeout")
	}
	for _, c := range cs {
		expectEOF(t, c, c.br)
	}
	evs := byID(t, ts.rec.wait(n))
	for _, ev := range evs {
		if ev.Event.Action != event.ActionClosed || ev.Event.Reason != "idle-timeout" {
			t.Errorf("event %s: %s/%s, want connection-closed/idle-timeout", ev.Event.ID, ev.Event.Action, ev.Event.Reason)
		}
		if d := time.Duration(ev.Event.Duration); d < idle {
			t.Errorf("event %s: ended after %v, before the idle timeout %v", ev.Event.ID, d, idle)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := ts.rec.published.Load(); got != n {
		t.Errorf("%d events published, want %d (one per connection)", got, n)
	}
}

// Ensure the drain keeps parked connections open and echoing until the
// drain timeout, then closes each with one event, reason shutdown, before
// Serve returns.
func TestParkedDrain(t *testing.T) {
	ts := startParking(t, func(c *server.Config) { c.DrainTimeout = 1500 * time.Millisecond })
	const n = 30
	cs := openParked(t, ts, n)
	ts.cancel()
	// A parked connection still echoes during the drain.
	cs[0].send(t, "during the drain\n")
	if got := cs[0].readLine(t); got != "during the drain" {
		t.Errorf("echo during the drain = %q", got)
	}
	for _, c := range cs {
		expectEOF(t, c, c.br)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
		close(ts.done)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	if got := ts.rec.published.Load(); got != n {
		t.Fatalf("%d events published when Serve returned, want %d", got, n)
	}
	for _, ev := range byID(t, ts.rec.wait(n)) {
		if ev.Event.Reason != "shutdown" {
			t.Errorf("event %s: reason %q, want shutdown", ev.Event.ID, ev.Event.Reason)
		}
	}
	if p := server.Parked(ts.srv); p != 0 {
		t.Errorf("%d connections parked after Serve returned", p)
	}
	// The lot's goroutine ended with Serve.
	waitFor(t, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*parkLot).loop")
	})
}

// Ensure parked connections end as before when the client half-closes
// (served), half-closes after a last line without newline (echoed,
// served) or resets (io-error).
func TestParkedClientEnds(t *testing.T) {
	ts := startParking(t, nil)
	cs := openParked(t, ts, 3)
	half, last, reset := cs[0], cs[1], cs[2]

	half.Conn.(*net.TCPConn).CloseWrite()
	expectEOF(t, half, half.br)

	last.send(t, "no newline")
	last.Conn.(*net.TCPConn).CloseWrite()
	if got := last.readLine(t); got != "no newline" {
		t.Errorf("last line echo = %q", got)
	}
	expectEOF(t, last, last.br)

	reset.Conn.(*net.TCPConn).SetLinger(0)
	reset.Close()

	evs := bySource(ts.rec.wait(3))
	for c, want := range map[*lineClient]string{half: "served", last: "served", reset: "io-error"} {
		if ev := evs[addrOf(t, c.LocalAddr())]; ev.Event.Reason != want {
			t.Errorf("%v: reason %q, want %q", c.LocalAddr(), ev.Event.Reason, want)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if got := ts.rec.published.Load(); got != 3 {
		t.Errorf("%d events, want 3", got)
	}
}

// TestParkRandomized interleaves wakes (lines), idle timeouts, client
// closes and resets with a drain at a random moment, parking after 1 ms so
// that connections park and wake many times: every connection must end
// with exactly one event whose reason its client's behaviour allows, and
// Serve must return with every event published.
func TestParkRandomized(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 14))
			idle := time.Duration(200+rng.IntN(300)) * time.Millisecond
			drain := time.Duration(rng.IntN(300)) * time.Millisecond
			ts := startServer(t, func(c *server.Config) { c.IdleTimeout, c.DrainTimeout = idle, drain })
			server.SetParkAfter(ts.srv, time.Millisecond, 20*time.Millisecond)
			const n = 40
			type plan struct {
				lines  int
				gap    time.Duration
				finish string // quit, half, reset, idle
			}
			plans := make([]plan, n)
			for i := range plans {
				plans[i] = plan{lines: rng.IntN(5), gap: time.Duration(rng.IntN(30)) * time.Millisecond,
					finish: []string{"quit", "half", "reset", "idle"}[rng.IntN(4)]}
			}
			allowed := map[string][]string{
				"quit":  {"served", "shutdown", "io-error"},
				"half":  {"served", "shutdown", "io-error"},
				"reset": {"io-error", "served", "shutdown"},
				"idle":  {"idle-timeout", "shutdown"},
			}
			cs := make([]*lineClient, n)
			for i := range cs {
				cs[i] = newLineClient(t, ts.addr)
				cs[i].report(t)
				cs[i].readLine(t)
			}
			stopAt := time.Duration(rng.IntN(200)) * time.Millisecond
			time.AfterFunc(stopAt, ts.cancel)
			var wg sync.WaitGroup
			for i, c := range cs {
				p := plans[i]
				wg.Go(func() {
					for range p.lines {
						time.Sleep(p.gap)
						if _, err := c.Write([]byte("x\n")); err != nil {
							return // closed by the drain
						}
						if _, err := c.br.ReadString('\n'); err != nil {
							return
						}
					}
					switch p.finish {
					case "quit":
						c.Write([]byte("quit\n"))
					case "half":
						c.Conn.(*net.TCPConn).CloseWrite()
					case "reset":
						c.Conn.(*net.TCPConn).SetLinger(0)
						c.Close()
						return
					}
					c.SetReadDeadline(time.Now().Add(20 * time.Second))
					for {
						if _, err := c.br.ReadString('\n'); err != nil {
							return
						}
					}
				})
			}
			wg.Wait()
			select {
			case <-ts.done:
				close(ts.done)
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return")
			}
			if got := ts.rec.published.Load(); got != n {
				t.Fatalf("%d events published when Serve returned, want %d", got, n)
			}
			evs := bySource(ts.rec.wait(n))
			for i, c := range cs {
				ev, ok := evs[addrOf(t, c.LocalAddr())]
				if !ok {
					t.Errorf("client %d: no event", i)
					continue
				}
				ok = false
				for _, r := range allowed[plans[i].finish] {
					ok = ok || ev.Event.Reason == r
				}
				if !ok {
					t.Errorf("client %d (%+v): reason %q, want one of %v", i, plans[i], ev.Event.Reason, allowed[plans[i].finish])
				}
			}
			if p := server.Parked(ts.srv); p != 0 {
				t.Errorf("%d connections parked after Serve returned", p)
			}
		})
	}
}

// Ensure a line that starts within the grace wait and ends after it is
// echoed whole: the rest of the line is read under the idle deadline, not
// the grace's (which would end the connection as idle-timeout).
func TestLineAcrossGrace(t *testing.T) {
	ts := startServer(t, nil)
	server.SetParkAfter(ts.srv, 100*time.Millisecond, time.Minute)
	c := newLineClient(t, ts.addr)
	c.report(t)
	c.readLine(t)
	c.send(t, "abc")
	time.Sleep(300 * time.Millisecond)
	c.send(t, "def\n")
	if got := c.readLine(t); got != "abcdef" {
		t.Errorf("echo = %q, want abcdef", got)
	}
	c.send(t, "quit\n")
	expectEOF(t, c, c.br)
	if ev := ts.rec.wait(1)[0]; ev.Event.Reason != "served" {
		t.Errorf("reason %q, want served", ev.Event.Reason)
	}
}

// Ensure a burst of silent clients holds at most 256 goroutines waiting
// out the grace: with a grace of 30 s (the idle timeout is 60 s), the
// connections past the first 256 park at once, and still echo.
func TestGraceWaitsBounded(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.MaxConns = 1000 })
	server.SetParkAfter(ts.srv, 30*time.Second, time.Minute)
	const n, bound = 400, 256
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = newLineClient(t, ts.addr)
		cs[i].report(t)
		cs[i].readLine(t)
	}
	waitFor(t, func() bool { return server.Parked(ts.srv) >= n-bound })
	if p := server.Parked(ts.srv); p > n-bound+10 {
		// A few may have counted themselves while another was still
		// leaving the grace; far more would mean the grace is not bounded.
		t.Logf("%d parked of %d", p, n)
	}
	last := cs[n-1]
	last.send(t, "echo\n")
	if got := last.readLine(t); got != "echo" {
		t.Errorf("echo = %q", got)
	}
}
