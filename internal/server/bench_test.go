package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"

	"github.com/originlens/originlens/internal/server"
	"github.com/originlens/originlens/internal/sink"
)

// startBenchServer runs a server whose events go through the real JSON
// sink to io.Discard, so that the benchmark pays for encoding events.
func startBenchServer(b *testing.B) string {
	b.Helper()
	s, err := sink.New(io.Discard, sink.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return startServer(b, func(c *server.Config) { c.Publisher = s }).addr
}

// lineRoundTrip is one netcat-style connection: connect, send a first
// line, read the report and the greeting, close.
func lineRoundTrip(b *testing.B, d *net.Dialer, addr string, br *bufio.Reader) {
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		b.Fatal(err)
	}
	br.Reset(c)
	if _, err := br.ReadSlice('\n'); err != nil {
		b.Fatal(err)
	}
	if _, err := br.ReadSlice('\n'); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// BenchmarkFirstBytes measures the whole handler path over loopback: a
// connection in, the origin resolved, located and decided, the report line
// and greeting out, the event encoded. Allocations include the client's.
func BenchmarkFirstBytes(b *testing.B) {
	addr := startBenchServer(b)
	var d net.Dialer
	br := bufio.NewReaderSize(nil, 4096)
	b.ReportAllocs()
	for b.Loop() {
		lineRoundTrip(b, &d, addr, br)
	}
}

// BenchmarkFirstBytesParallel is BenchmarkFirstBytes with concurrent
// clients.
func BenchmarkFirstBytesParallel(b *testing.B) {
	addr := startBenchServer(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var d net.Dialer
		br := bufio.NewReaderSize(nil, 4096)
		for pb.Next() {
			lineRoundTrip(b, &d, addr, br)
		}
	})
}
