package udp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// waitFor is the failure bound of every wait: generous, for a loaded
// 2-core CI machine; the waits poll and return as soon as they can.
const waitFor = 30 * time.Second

// recorder collects published events, each round-tripped through its JSON
// encoding and event.Parse (what the ingest sees).
type recorder struct {
	t      testing.TB
	mu     sync.Mutex
	events []event.Event
}

func (r *recorder) Publish(ev event.Event) {
	b, err := ev.Marshal()
	if err != nil {
		r.t.Errorf("Marshal: %v", err)
		return
	}
	back, err := event.Parse(b)
	if err != nil {
		r.t.Errorf("event.Parse(%s): %v", b, err)
		return
	}
	r.mu.Lock()
	r.events = append(r.events, back)
	r.mu.Unlock()
}

func (r *recorder) all() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.events...)
}

// waitEvents polls until at least n events arrived and returns them.
func (r *recorder) waitEvents(t testing.TB, n int) []event.Event {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		evs := r.all()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events after %v, want %d", len(evs), waitFor, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// running is a Server serving on a loopback socket.
type running struct {
	srv  *Server
	rec  *recorder
	addr netip.AddrPort // where clients send: 127.0.0.1:port unless the test bound elsewhere
	stop func()         // stops Serve and waits for it
}

// start serves cfg on listen ("127.0.0.1:0" when empty) with a recorder
// as publisher and a resolver in mode off unless cfg has one.
func start(t testing.TB, cfg Config, listen string) *running {
	t.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	rec := &recorder{t: t}
	cfg.Publisher = rec
	if cfg.Resolver == nil {
		cfg.Resolver = mustResolver(t, origin.Config{Mode: origin.Off})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Listen(context.Background(), listen)
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(waitFor):
				t.Errorf("Serve did not return %v after cancel", waitFor)
			}
		})
	}
	t.Cleanup(stop)
	return &running{srv: srv, rec: rec, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), stop: stop}
}

func mustResolver(t testing.TB, cfg origin.Config) *origin.Resolver {
	t.Helper()
	r, err := origin.NewResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// client opens an unconnected UDP socket on ip (port 0).
func client(t testing.TB, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends d to dst from c and returns the reply and its source, or
// ok false when none came within wait.
func exchange(t testing.TB, c *net.UDPConn, dst netip.AddrPort, d []byte, wait time.Duration) (reply []byte, from netip.AddrPort, ok bool) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(d, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}, false
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), true
}

// padded is a probe line, a newline and padding up to n bytes in all.
func padded(line string, n int) []byte {
	b := []byte(line + "\n")
	if len(b) < n {
		b = append(b, strings.Repeat(".", n-len(b))...)
	}
	return b
}

// parseReply splits a reply into its report (first line) and the rest.
func parseReply(t testing.TB, reply []byte) (report.Report, string) {
	t.Helper()
	first, rest, _ := strings.Cut(string(reply), "\n")
	r, err := report.ParseLine(first)
	if err != nil {
		t.Fatalf("reply %q: %v", reply, err)
	}
	return r, rest
}

// datagrams reads originlens_udp_datagrams_total{result}.
func datagrams(s *Server, result string) float64 {
	return value(s.metrics.datagrams.WithLabelValues(result))
}

// flowsEnded reads originlens_udp_flows_total{end}.
func flowsEnded(s *Server, end string) float64 {
	return value(s.metrics.flows.WithLabelValues(end))
}

func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// waitMetric polls f until it returns want.
func waitMetric(t testing.TB, name string, f func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for f() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v, want %v", name, f(), waitFor, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
