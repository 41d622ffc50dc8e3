package probe_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/probe"
)

// gate is a line server that counts simultaneous connections and holds
// every answer until want connections are open at once (or hold passes),
// then answers each with a report. A connection counts as open from its
// accept to its answer.
type gate struct {
	mu        sync.Mutex
	open, max int
	want      int
	full      chan struct{} // closed when open reaches want
}

func startGate(tb testing.TB, want int, hold time.Duration) (string, *gate) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := &gate{want: want, full: make(chan struct{})}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { g.serve(c, hold) })
		}
	})
	return ln.Addr().String(), g
}

func (g *gate) serve(c net.Conn, hold time.Duration) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	g.mu.Lock()
	g.open++
	g.max = max(g.max, g.open)
	if g.open == g.want {
		close(g.full)
	}
	g.mu.Unlock()
	_, err := bufio.NewReader(c).ReadString('\n')
	if err == nil {
		select {
		case <-g.full:
		case <-time.After(hold):
		}
	}
	// Not open any more once it answers: the client may dial its next
	// attempt as soon as it reads the answer.
	g.mu.Lock()
	g.open--
	g.mu.Unlock()
	if err != nil {
		return
	}
	fmt.Fprintf(c, "client=%s via=direct peer=%s server=%s conn=gate decision=serve\n", c.RemoteAddr(), c.RemoteAddr(), c.LocalAddr())
}

func (g *gate) maxOpen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

// TestRunConcurrency: -c N starts N attempts together, each interval. With
// a one-hour interval, the 4 attempts of -c 4 -n 4 can only all finish if
// they start at once; the gate server answers none before it holds 4
// connections at the same time. (Before, the interval paced every attempt,
// so -c had no visible effect: the second attempt would wait an hour.)
func TestRunConcurrency(t *testing.T) {
	addr, g := startGate(t, 4, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second) // failure bound
	defer cancel()
	res, err := probe.Run(ctx, probe.Config{Target: addr, Count: 4, Concurrency: 4, Interval: time.Hour,
		Options: probe.Options{Timeout: 40 * time.Second}})
	if err != nil {
		t.Fatalf("Run: %v (the server saw at most %d connections at once)", err, g.maxOpen())
	}
	if tr := res.Targets[0]; tr.Attempts != 4 || tr.Preserved != 4 || g.maxOpen() != 4 {
		t.Errorf("-c 4 -n 4: %d attempts, %d preserved, at most %d at once; want 4, 4, 4 (%s)", tr.Attempts, tr.Preserved, g.maxOpen(), tr.Advice)
	}
}

// TestRunConcurrencyOne: -c 1 never has two attempts open at once.
func TestRunConcurrencyOne(t *testing.T) {
	addr, g := startGate(t, 2, 50*time.Millisecond)
	res, err := probe.Run(context.Background(), probe.Config{Target: addr, Count: 3, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if tr := res.Targets[0]; tr.Preserved != 3 || g.maxOpen() != 1 {
		t.Errorf("-c 1 -n 3: %d preserved, at most %d at once; want 3, 1", tr.Preserved, g.maxOpen())
	}
}
