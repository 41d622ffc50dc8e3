package probe

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/udp"
)

type nopPublisher struct{}

func (nopPublisher) Publish(event.Event) {}

// startUDP serves the app's UDP server on 127.0.0.1 in mode oc and returns
// its address.
func startUDP(t *testing.T, oc origin.Config) netip.AddrPort {
	t.Helper()
	res, err := origin.NewResolver(oc)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := udp.New(udp.Config{Resolver: res, Publisher: nopPublisher{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := udp.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, conn) }()
	t.Cleanup(func() { cancel(); <-done })
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Ensure a UDP run against the app counts every datagram answered, times
// them, and finds the address preserved.
func TestRunUDPPreserved(t *testing.T) {
	dst := startUDP(t, origin.Config{})
	res, err := RunUDP(context.Background(), UDPConfig{Target: dst.String(), Count: 20, Concurrency: 3, Interval: 2 * time.Millisecond, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 60 || res.Received != 60 || res.LossPct() != 0 || res.Duplicates != 0 || res.Truncated != 0 {
		t.Errorf("sent %d received %d loss %.1f%% dup %d truncated %d; want 60 60 0 0 0", res.Sent, res.Received, res.LossPct(), res.Duplicates, res.Truncated)
	}
	if res.Verdict != Preserved || res.Saw.Addr().String() != "127.0.0.1" || res.RTT.Count != 60 || res.RTT.Min <= 0 || res.RTT.Max < res.RTT.P99 {
		t.Errorf("verdict %v saw %s rtt %+v", res.Verdict, res.Saw, res.RTT)
	}
	if res.Last[report.KeyVia] != event.ViaDirect {
		t.Errorf("last report %v", res.Last)
	}
}

// Ensure datagrams too small for the report are padded more once a reply
// comes back truncated, until the whole report fits.
func TestRunUDPPadsUntilTheReportFits(t *testing.T) {
	dst := startUDP(t, origin.Config{})
	res, err := RunUDP(context.Background(), UDPConfig{Target: dst.String(), Count: 8, Interval: 20 * time.Millisecond, Size: 40, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Truncated == 0 || res.Received == 0 || res.Verdict != Preserved {
		t.Errorf("truncated %d received %d verdict %v: want truncated replies first, then whole ones", res.Truncated, res.Received, res.Verdict)
	}
}

// Ensure a source-NATing hop (a UDP relay on another loopback address,
// as an NLB without client IP preservation) is found: not preserved,
// naming the relay's address.
func TestRunUDPNotPreserved(t *testing.T) {
	dst := startUDP(t, origin.Config{})
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	defer back.Close()
	var client atomicAddr
	go func() { // client -> server, from the relay's own address
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			client.store(from)
			back.WriteToUDPAddrPort(buf[:n], dst)
		}
	}()
	go func() { // server -> client
		buf := make([]byte, 65536)
		for {
			n, _, err := back.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			front.WriteToUDPAddrPort(buf[:n], client.load())
		}
	}()
	res, err := RunUDP(context.Background(), UDPConfig{Target: front.LocalAddr().String(), Count: 3, Interval: 5 * time.Millisecond, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != NotPreserved || res.Saw.Addr().String() != "127.0.0.9" || !strings.Contains(res.Explain(), "127.0.0.9") {
		t.Errorf("verdict %v saw %s: %s; want not preserved naming 127.0.0.9", res.Verdict, res.Saw, res.Explain())
	}
}

// Ensure a PROXY v2 header over UDP, accepted from a trusted source, makes
// the server see the claimed client, as the probe expects.
func TestRunUDPProxyV2(t *testing.T) {
	dst := startUDP(t, origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	p := &ProxyHeader{Version: 2, Src: netip.MustParseAddrPort("198.51.100.7:4000")}
	res, err := RunUDP(context.Background(), UDPConfig{Target: dst.String(), Count: 2, Proxy: p, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != Preserved || res.Saw.String() != "198.51.100.7:4000" || res.ExpectedFrom != ExpectProxySrc || res.Last[report.KeyVia] != event.ViaProxyV2 {
		t.Errorf("verdict %v saw %s via %s", res.Verdict, res.Saw, res.Last[report.KeyVia])
	}
	if _, err := RunUDP(context.Background(), UDPConfig{Target: dst.String(), Proxy: &ProxyHeader{Version: 1, Src: p.Src}}); err == nil {
		t.Error("PROXY v1 over UDP accepted")
	}
}

// Ensure no listener means no answer: no report, every datagram lost.
func TestRunUDPNoAnswer(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dst := c.LocalAddr().String()
	c.Close() // nothing listens there now
	res, err := RunUDP(context.Background(), UDPConfig{Target: dst, Count: 2, Interval: time.Millisecond, Wait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != NoReport || res.Received != 0 || res.LossPct() != 100 || !strings.HasPrefix(res.Explain(), "no answer") {
		t.Errorf("verdict %v received %d loss %.0f: %s", res.Verdict, res.Received, res.LossPct(), res.Explain())
	}
}

// Ensure the accounting of replies: duplicates, reordering, replies from
// another address, and RFC 3550 jitter (J += (|D| - J)/16).
func TestSenderAccounting(t *testing.T) {
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	s := &sender{}
	t0 := time.Unix(1000, 0)
	for range 4 {
		s.sentAt = append(s.sentAt, t0)
		s.got = append(s.got, 0)
	}
	reply := func(seq int) []byte {
		r := report.Report{report.KeyClient: "198.51.100.7:4000", report.KeyVia: "direct", report.KeyPeer: "198.51.100.7:4000",
			report.KeyServer: dst.String(), report.KeyConn: "x", report.KeyDecision: "serve", report.KeyProbe: UDPLine("run", seq)}
		return []byte(r.Line() + "\nHello!\n")
	}
	ms := time.Millisecond
	s.reply(reply(0), dst, dst, "run", t0.Add(10*ms))
	s.reply(reply(2), dst, dst, "run", t0.Add(20*ms))
	s.reply(reply(1), dst, dst, "run", t0.Add(10*ms)) // after 2: reordered
	s.reply(reply(1), dst, dst, "run", t0.Add(11*ms)) // duplicate
	s.reply(reply(3), netip.MustParseAddrPort("192.0.2.2:443"), dst, "run", t0.Add(12*ms))
	s.reply(reply(3), dst, dst, "other-run", t0.Add(12*ms)) // not ours
	if s.res.Received != 3 || s.res.Reordered != 1 || s.res.Duplicates != 1 || s.res.OtherSource != 1 {
		t.Errorf("received %d reordered %d duplicates %d other source %d; want 3 1 1 1", s.res.Received, s.res.Reordered, s.res.Duplicates, s.res.OtherSource)
	}
	// Transits 10, 20, 10 ms: J = 10/16 = 0.625 ms, then 0.625 + (10 - 0.625)/16.
	want := 0.625 + (10-0.625)/16
	if got := s.jitter / float64(ms); math.Abs(got-want) > 1e-9 {
		t.Errorf("jitter %.6f ms, want %.6f", got, want)
	}
}

// atomicAddr is an address shared by the relay's two goroutines.
type atomicAddr struct {
	mu sync.Mutex
	v  netip.AddrPort
}

func (a *atomicAddr) store(v netip.AddrPort) { a.mu.Lock(); a.v = v; a.mu.Unlock() }

func (a *atomicAddr) load() netip.AddrPort { a.mu.Lock(); defer a.mu.Unlock(); return a.v }
