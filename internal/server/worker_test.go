package server_test

import (
	"io"
	"testing"

	"github.com/originlens/originlens/internal/server"
)

// TestWorkersReused: connections one after the other are served by
// goroutines that finished an earlier connection, and the drain ends
// every goroutine, idle or not.
func TestWorkersReused(t *testing.T) {
	ts := startServer(t, nil)
	const n = 20
	for i := range n {
		c := newLineClient(t, ts.addr)
		c.report(t)
		c.send(t, "quit\n")
		if _, err := io.Copy(io.Discard, c.br); err != nil {
			t.Fatalf("connection %d: reading to the close: %v", i, err)
		}
		c.Close()
		ts.rec.wait(i + 1) // its goroutine has published: it is about to wait for the next
	}
	running, started := server.Workers(ts.srv)
	// A goroutine may now and then still be on its way back when the next
	// connection is accepted; without reuse every connection would start one.
	if started > n/2 {
		t.Errorf("%d goroutines started for %d connections in a row, want reuse (at most %d)", started, n, n/2)
	}
	if running < 1 {
		t.Errorf("%d goroutines running after the connections, want the idle ones kept", running)
	}
	ts.stop(t)
	if running, _ := server.Workers(ts.srv); running != 0 {
		t.Errorf("%d connection goroutines still running after Serve returned", running)
	}
	t.Logf("%d connections, %d goroutines started", n, started)
}
