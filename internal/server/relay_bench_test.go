package server_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/server"
	"github.com/originlens/originlens/internal/sink"
)

// BenchmarkRelayConn measures one relayed connection over loopback in
// plain mode: accept, resolve, locate, decide, dial the upstream, forward a
// line and its echo both ways with half-closes, publish the event (JSON to
// io.Discard). The upstream's own work (an echo) is included.
//
//	go test -run '^$' -bench RelayConn -benchmem ./internal/server
func BenchmarkRelayConn(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	d, err := relay.New(context.Background(), relay.Config{Upstream: ln.Addr().String(), Mode: relay.Plain})
	if err != nil {
		b.Fatal(err)
	}
	s, err := sink.New(io.Discard, sink.Config{})
	if err != nil {
		b.Fatal(err)
	}
	addr := startServer(b, func(c *server.Config) { c.Publisher = s; c.Relay = d }).addr
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 5)
		for pb.Next() {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			c.Write([]byte("ping\n"))
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
