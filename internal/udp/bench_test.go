package udp

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
)

// BenchmarkUDPServe measures the served datagram rate over loopback: client
// sockets in lock step (send, wait for the reply), each datagram a padded
// probe line, the reply the whole report and greeting. Allocations count
// the server's and the clients' (one process).
func BenchmarkUDPServe(b *testing.B) {
	r := start(b, Config{Decider: policy.Default()}, "")
	benchLockStep(b, r.addr)
}

// BenchmarkUDPEcho is the baseline: a bare Go UDP echo server (one
// ReadFromUDPAddrPort and one WriteToUDPAddrPort per datagram, as many
// readers as the app's server) on the same machine, driven the same way.
func BenchmarkUDPEcho(b *testing.B) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	readers := 1
	if s, err := New(Config{Resolver: mustResolver(b, origin.Config{}), Publisher: discard{}}); err == nil {
		readers = s.cfg.Readers
	}
	for range readers {
		go func() {
			buf := make([]byte, maxDatagram)
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				conn.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
	}
	benchLockStep(b, conn.LocalAddr().(*net.UDPAddr).AddrPort())
}

// benchLockStep sends b.N datagrams to dst from parallel clients, each
// waiting for its reply, and reports datagrams/s.
func benchLockStep(b *testing.B, dst netip.AddrPort) {
	d := padded("originlens-probe id=bench seq=1", 200)
	var lost atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for pb.Next() {
			c.WriteToUDPAddrPort(d, dst)
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
				lost.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "datagrams/s")
	b.ReportMetric(float64(lost.Load()), "lost")
}

// BenchmarkUDPAnswer is the datagram path without the socket: origin, flow
// lookup, reply with its amplification check. Its allocations are the
// server's per datagram.
func BenchmarkUDPAnswer(b *testing.B) {
	srv, err := New(Config{Resolver: mustResolver(b, origin.Config{}), Publisher: discard{}, Decider: policy.Default(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	sock := &socket{local: netip.MustParseAddrPort("127.0.0.1:9")}
	peer := netip.MustParseAddrPort("198.51.100.7:4000")
	d := padded("originlens-probe id=bench seq=1", 200)
	reply := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		var f *flow
		reply, f = srv.answer(sock, d, nil, peer, time.Now(), reply[:0])
		srv.flows.done(srv, f)
	}
}

// BenchmarkUDPAnswerChurn is the datagram path for a source at its flow
// cap sending from a new port every time: the datagram is refused
// (flow-limit) before a flow is built. Before the cap each such datagram
// built a flow (locate, decide, report line, token) and, in a full table,
// evicted and published another.
func BenchmarkUDPAnswerChurn(b *testing.B) {
	srv, err := New(Config{Resolver: mustResolver(b, origin.Config{}), Publisher: discard{}, Decider: policy.Default(),
		MaxFlowsPerSource: 64, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	sock := &socket{local: netip.MustParseAddrPort("127.0.0.1:9")}
	src := netip.MustParseAddr("198.51.100.7")
	d := padded("originlens-probe id=bench seq=1", 200)
	reply := make([]byte, 0, 2048)
	for port := range uint16(64) {
		var f *flow
		if reply, f = srv.answer(sock, d, nil, netip.AddrPortFrom(src, 2000+port), time.Now(), reply[:0]); f == nil {
			b.Fatal("no flow under the cap")
		}
		srv.flows.done(srv, f)
	}
	port := uint16(3000)
	b.ReportAllocs()
	for b.Loop() {
		port = max(port+1, 3000)
		if _, f := srv.answer(sock, d, nil, netip.AddrPortFrom(src, port), time.Now(), reply[:0]); f != nil {
			b.Fatal("a flow over the cap")
		}
	}
}
