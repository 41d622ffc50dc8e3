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

// TestReusedStateStartsClean: a worker reuses its connection state, so the
// second of two connections in a row must carry nothing of the first: its
// own byte counts, protocol, id and report, although the first was an
// HTTP request with more bytes each way.
func TestReusedStateStartsClean(t *testing.T) {
	ts := startServer(t, nil)
	defer ts.stop(t)

	h := dial(t, ts.addr)
	req := "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: reuse-test\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(h, req); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(h)
	if err != nil && !isReset(err) {
		t.Fatal(err)
	}
	h.Close()
	first := ts.rec.wait(1)[0]

	c := newLineClient(t, ts.addr)
	r := c.report(t)
	greeting := c.readLine(t)
	c.Close()
	evs := ts.rec.wait(2)
	second := evs[1]

	if first.Network.Protocol != "http" || first.Source.Bytes != int64(len(req)) || first.Destination.Bytes != int64(len(resp)) {
		t.Fatalf("first event: protocol %q, bytes %d/%d; want http, %d/%d",
			first.Network.Protocol, first.Source.Bytes, first.Destination.Bytes, len(req), len(resp))
	}
	wantOut := int64(len(r.Line()) + 1 + len(greeting) + 1)
	if second.Network.Protocol != "line" || second.Source.Bytes != int64(len("hello\n")) || second.Destination.Bytes != wantOut {
		t.Errorf("second event: protocol %q, bytes in %d out %d; want line, %d in, %d out (nothing of the first)",
			second.Network.Protocol, second.Source.Bytes, second.Destination.Bytes, len("hello\n"), wantOut)
	}
	if second.Event.ID == first.Event.ID || r["conn"] != second.Event.ID {
		t.Errorf("second event id %q (report conn=%q), first %q: want its own", second.Event.ID, r["conn"], first.Event.ID)
	}
	if _, started := server.Workers(ts.srv); started != 1 {
		t.Logf("%d goroutines started: the second connection may not have reused the first's worker", started)
	}
}
