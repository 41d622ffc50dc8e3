//go:build linux

package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/server"
)

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
