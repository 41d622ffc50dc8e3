package udp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/prometheus/client_golang/prometheus"
)

// TestNoReplyLoop: two UDP servers must not answer each other's replies
// forever (the Loop DoS of CVE-2024-2169): one datagram spoofed from
// server B to server A made A answer B, B answer A's reply, and so on,
// with no attacker left in the loop. Server B's first datagram leaves from
// B's own socket, as a spoofed one would arrive. A answers it once; B
// drops A's reply (it begins with a report line), counted.
func TestNoReplyLoop(t *testing.T) {
	a := start(t, Config{}, "")
	res := mustResolver(t, origin.Config{Mode: origin.Off})
	b, err := New(Config{Resolver: res, Publisher: &recorder{t: t}, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	bconn, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The "spoofed" datagram: from B's address and port to A.
	if _, err := bconn.WriteToUDPAddrPort(padded("hello from a spoofer", 200), a.addr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Serve(ctx, bconn) }()
	t.Cleanup(func() { cancel(); <-done })

	// Wait until B has dropped A's reply or the two are looping.
	deadline := time.Now().Add(waitFor)
	for datagrams(b, resultLoop) < 1 && datagrams(a.srv, resultAnswered) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: A answered %v, B answered %v, B dropped %v", waitFor,
				datagrams(a.srv, resultAnswered), datagrams(b, resultAnswered), datagrams(b, resultLoop))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := datagrams(b, resultAnswered); got != 0 {
		t.Errorf("B answered A's reply %v times: a reply loop", got)
	}
	if got := datagrams(a.srv, resultAnswered); got != 1 {
		t.Errorf("A answered %v datagrams, want the spoofed one only", got)
	}
}

// TestNoEmptyReply: a datagram too short for even "truncated=1" gets no
// reply: an empty reply to an empty datagram, answered by another server
// with an empty reply, is a loop too. One reader keeps the order: the
// first reply to arrive must be the one to the padded datagram.
func TestNoEmptyReply(t *testing.T) {
	r := start(t, Config{Readers: 1}, "")
	c := client(t, "127.0.0.1")
	for _, d := range [][]byte{{}, []byte("hi\n")} {
		if _, err := c.WriteToUDPAddrPort(d, r.addr); err != nil {
			t.Fatal(err)
		}
	}
	reply, _, ok := exchange(t, c, r.addr, padded("whole", 400), waitFor)
	if !ok || !strings.Contains(string(reply), "probe=whole") {
		t.Fatalf("first reply %q, want the padded datagram's: a short datagram got a reply", reply)
	}
	if got := datagrams(r.srv, resultTooShort); got != 2 {
		t.Errorf("too-short = %v, want 2", got)
	}
}

// TestServicePortDropped: a datagram from a port below 1024 (chargen,
// daytime, echo: services that answer any datagram, so a loop partner)
// gets no reply, counted. Binding a low port needs root.
func TestServicePortDropped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("binding a source port below 1024 needs root")
	}
	r := start(t, Config{Readers: 1}, "")
	var low *net.UDPConn
	for port := 1023; port > 900 && low == nil; port-- {
		low, _ = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))))
	}
	if low == nil {
		t.Skip("no free port below 1024")
	}
	t.Cleanup(func() { low.Close() })
	low.WriteToUDPAddrPort(padded("chargen says hi", 300), r.addr)
	waitMetric(t, "loop", func() float64 { return datagrams(r.srv, resultLoop) }, 1)
	if got := datagrams(r.srv, resultAnswered); got != 0 {
		t.Errorf("answered %v datagrams from a service port", got)
	}
}
