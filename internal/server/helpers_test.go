package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
	"github.com/originlens/originlens/internal/sink"
	"github.com/prometheus/client_golang/prometheus"
)

// recorder collects published events. It round-trips every event through
// the real JSON sink and event.Parse, so tests see what a consumer sees.
type recorder struct {
	t         testing.TB
	published atomic.Int64 // Publish calls so far, counted synchronously
	mu        sync.Mutex
	events    []event.Event
	notify    chan struct{}
	sink      *sink.JSONLines
	pw        *io.PipeWriter
	done      chan struct{}
}

func newRecorder(t testing.TB) *recorder {
	pr, pw := io.Pipe()
	s, err := sink.New(pw, sink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{t: t, notify: make(chan struct{}, 1), sink: s, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ev, err := event.Parse(sc.Bytes())
			if err != nil {
				t.Errorf("event.Parse(%s): %v", sc.Bytes(), err)
				continue
			}
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		pw.Close()
		<-r.done
	})
	return r
}

func (r *recorder) Publish(ev event.Event) {
	r.published.Add(1)
	r.sink.Publish(ev)
}

// wait returns the first n events, failing the test if they do not all
// arrive within 30 s (a failure bound for a busy machine).
func (r *recorder) wait(n int) []event.Event {
	r.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		got := len(r.events)
		if got >= n {
			evs := append([]event.Event(nil), r.events[:n]...)
			r.mu.Unlock()
			return evs
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			r.t.Fatalf("got %d events, want %d", got, n)
		}
	}
}

// all returns every event so far.
func (r *recorder) all() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.events...)
}

// testServer is a server on 127.0.0.1:0 with real origin, geo and policy
// components.
type testServer struct {
	addr   string
	srv    *server.Server
	rec    *recorder
	cancel context.CancelFunc
	done   chan error
	cfg    server.Config
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a server; mod may change the config (Resolver, Decider,
// limits...) before it starts. The server is drained at cleanup.
func startServer(t testing.TB, mod func(*server.Config)) *testServer {
	t.Helper()
	res, err := origin.NewResolver(origin.Config{Mode: origin.Off})
	if err != nil {
		t.Fatal(err)
	}
	db, err := geo.Open(geo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rec := newRecorder(t)
	cfg := server.Config{
		Resolver:     res,
		Locator:      db,
		Decider:      policy.Default(),
		Publisher:    rec,
		DrainTimeout: 2 * time.Second,
		Logger:       testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().String(), srv: srv, rec: rec, cancel: cancel, done: make(chan error, 1), cfg: cfg}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop drains the server and waits for Serve to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(ts.done)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Serve did not return after the drain")
	}
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// lineClient is a netcat-like client.
type lineClient struct {
	net.Conn
	br *bufio.Reader
}

func newLineClient(t testing.TB, addr string) *lineClient {
	c := dial(t, addr)
	return &lineClient{Conn: c, br: bufio.NewReader(c)}
}

func (c *lineClient) send(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

func (c *lineClient) readLine(t testing.TB) string {
	t.Helper()
	l, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// report sends a first line and parses the report line.
func (c *lineClient) report(t testing.TB) report.Report {
	t.Helper()
	c.send(t, "hello\n")
	l := c.readLine(t)
	r, err := report.ParseLine(l)
	if err != nil {
		t.Fatalf("report.ParseLine(%q): %v", l, err)
	}
	return r
}

// expectEOF reads until EOF, failing on anything else.
func expectEOF(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var rd io.Reader = c
	if br != nil {
		rd = br
	}
	b, err := io.ReadAll(rd)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("want EOF, got %v after %q", err, b)
	}
	if len(b) > 0 {
		t.Fatalf("want EOF, got %q", b)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func addrOf(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// byID indexes events by id, failing on duplicates.
func byID(t testing.TB, evs []event.Event) map[string]event.Event {
	t.Helper()
	m := make(map[string]event.Event, len(evs))
	for _, ev := range evs {
		if _, dup := m[ev.Event.ID]; dup {
			t.Fatalf("duplicate event id %s", ev.Event.ID)
		}
		m[ev.Event.ID] = ev
	}
	return m
}

// bySource indexes events by source address.
func bySource(evs []event.Event) map[netip.AddrPort]event.Event {
	m := make(map[netip.AddrPort]event.Event, len(evs))
	for _, ev := range evs {
		m[netip.AddrPortFrom(ev.Source.IP, ev.Source.Port)] = ev
	}
	return m
}

// deciderFunc is a Decider from a function, for decisions the policy file
// would make (deny, redirect).
type deciderFunc func(netip.Addr, geo.Location) policy.Decision

func (f deciderFunc) Decide(a netip.Addr, l geo.Location) policy.Decision { return f(a, l) }

// limiterFunc is a Limiter from a function; it counts every address as
// its /128 or /32.
type limiterFunc func(netip.Addr, time.Time) (func(), error)

func (f limiterFunc) Acquire(a netip.Addr, now time.Time) (netip.Prefix, func(), error) {
	r, err := f(a, now)
	return netip.PrefixFrom(a, a.BitLen()), r, err
}

func mustResolver(t testing.TB) *origin.Resolver {
	t.Helper()
	r, err := origin.NewResolver(origin.Config{Mode: origin.Off})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// metricValue returns the value of the counter or gauge name{labels} in
// reg, or -1 when it is absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
