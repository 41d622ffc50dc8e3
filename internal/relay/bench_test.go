package relay_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/relay"
)

// BenchmarkForward measures bulk throughput through Forward on loopback:
// the client writes b.N bytes in 1 MiB chunks, the upstream discards them.
// With splice(2) the bytes never enter user space (compare the strace
// count in the relay's report: a few splice calls per MiB, no read/write).
//
//	go test -run '^$' -bench Forward ./internal/relay
func BenchmarkForward(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sink := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sink <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		sink <- n
	}()
	front, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer front.Close()
	client, err := net.Dial("tcp4", front.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	acc, err := front.Accept()
	if err != nil {
		b.Fatal(err)
	}
	up, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan relay.Result, 1)
	go func() { done <- relay.Forward(acc.(*net.TCPConn), nil, up.(*net.TCPConn), time.Minute) }()
	chunk := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	client.(*net.TCPConn).CloseWrite()
	if n := <-sink; n != int64(b.N)<<20 {
		b.Fatalf("upstream got %d bytes, want %d", n, int64(b.N)<<20)
	}
	b.StopTimer()
	client.Close()
	<-done
	acc.Close()
	up.Close()
}

// BenchmarkDial measures one upstream dial on loopback and its close, in
// plain mode and (root only) transparent mode from 32 local client
// addresses in turn (127.0.0.2-33, port 0: a local source needs no
// routing). The upstream accepts and closes first, so the dialing side
// keeps no TIME_WAIT.
//
//	go test -run '^$' -bench Dial -benchmem ./internal/relay
func BenchmarkDial(b *testing.B) {
	for _, mode := range []relay.Mode{relay.Plain, relay.Transparent} {
		b.Run(mode.String(), func(b *testing.B) {
			if mode == relay.Transparent && os.Geteuid() != 0 {
				b.Skip("transparent mode needs root or CAP_NET_ADMIN")
			}
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
					c.Close()
				}
			}()
			d, err := relay.New(context.Background(), relay.Config{Upstream: ln.Addr().String(), Mode: mode})
			if err != nil {
				b.Fatal(err)
			}
			server := netip.MustParseAddrPort("127.0.0.1:80")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%32)}), 0)
				i++
				c, err := d.Dial(context.Background(), client, server, relay.Meta{})
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkForwardShort measures Forward over one short exchange, the
// relay's common case: a line to the upstream, its echo back, the client's
// half-close, the upstream's. Each op also dials and accepts both loopback
// connections (the same before and after a change to Forward: compare
// allocs/op and B/op).
//
//	go test -run '^$' -bench ForwardShort -benchmem ./internal/relay
func BenchmarkForwardShort(b *testing.B) {
	upLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer upLn.Close()
	go func() {
		for {
			c, err := upLn.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	front, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer front.Close()
	buf := make([]byte, 5)
	b.ReportAllocs()
	for b.Loop() {
		client, err := net.Dial("tcp4", front.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		acc, err := front.Accept()
		if err != nil {
			b.Fatal(err)
		}
		up, err := net.Dial("tcp4", upLn.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan relay.Result, 1)
		go func() { done <- relay.Forward(acc.(*net.TCPConn), nil, up.(*net.TCPConn), time.Minute) }()
		client.Write([]byte("ping\n"))
		if _, err := io.ReadFull(client, buf); err != nil {
			b.Fatal(err)
		}
		client.(*net.TCPConn).CloseWrite()
		if _, err := client.Read(buf); err != io.EOF {
			b.Fatalf("client: want EOF after the upstream's half-close, got %v", err)
		}
		if r := <-done; r.FromClient != 5 || r.ToClient != 5 {
			b.Fatalf("Forward: %+v", r)
		}
		client.Close()
		acc.Close()
		up.Close()
	}
}
