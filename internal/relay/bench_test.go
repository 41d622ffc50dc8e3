package relay_test

import (
	"io"
	"net"
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
