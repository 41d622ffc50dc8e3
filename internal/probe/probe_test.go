package probe_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/probe/listener"
	"github.com/originlens/originlens/internal/report"
)

// startListener serves nc-probe listen on 127.0.0.1:0 with the given
// origin config and returns its address and the lines it printed.
func startListener(tb testing.TB, oc *origin.Config) (string, *syncBuf) {
	tb.Helper()
	var res *origin.Resolver
	if oc != nil {
		var err error
		if res, err = origin.NewResolver(*oc); err != nil {
			tb.Fatalf("origin.NewResolver: %v", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	out := &syncBuf{}
	srv := listener.New(listener.Config{Resolver: res, Out: out, IdleTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), out
}

func TestOnceDirect(t *testing.T) {
	addr, out := startListener(t, nil)
	rep, tm, err := probe.Once(context.Background(), addr, probe.Options{Echo: 3, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Once(%s) error: %v", addr, err)
	}
	if got, want := rep[report.KeyClient], tm.Local.String(); got != want {
		t.Errorf("report client = %s, want the probe's local address %s", got, want)
	}
	if rep[report.KeyVia] != "direct" || rep[report.KeyDecision] != "serve" || rep[report.KeyClass] != "loopback" {
		t.Errorf("report = %v, want via=direct decision=serve class=loopback", rep)
	}
	if len(tm.Echo) != 3 {
		t.Errorf("echo samples = %d, want 3", len(tm.Echo))
	}
	if tm.Greeting == "" || tm.Connect <= 0 || tm.Report <= 0 {
		t.Errorf("timings = %+v, want greeting, connect and report time", tm)
	}
	if !strings.Contains(out.String(), "from "+tm.Local.String()) {
		t.Errorf("listener printed %q, want the probe's source %s", out.String(), tm.Local)
	}
}

func TestOnceProxyHeader(t *testing.T) {
	addr, out := startListener(t, &origin.Config{
		Mode:    origin.Trusted,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")},
	})
	src := netip.MustParseAddrPort("203.0.113.7:5555")
	for _, v := range []byte{1, 2} {
		rep, _, err := probe.Once(context.Background(), addr, probe.Options{
			Bind:  netip.MustParseAddr("127.0.0.5"),
			Proxy: &probe.ProxyHeader{Version: v, Src: src, Dst: netip.MustParseAddrPort("198.51.100.1:80")},
		})
		if err != nil {
			t.Fatalf("Once v%d from trusted 127.0.0.5: %v", v, err)
		}
		if rep[report.KeyClient] != src.String() || rep[report.KeyPeer] == src.String() {
			t.Errorf("v%d: report = %v, want client %s behind a loopback peer", v, rep, src)
		}
		if want := "proxy-v" + string('0'+v); rep[report.KeyVia] != want {
			t.Errorf("v%d: via = %s, want %s", v, rep[report.KeyVia], want)
		}
		if rep[report.KeyServer] != "198.51.100.1:80" {
			t.Errorf("v%d: server = %s, want the header's destination", v, rep[report.KeyServer])
		}
	}
	// The same header from an untrusted source is a spoof: refused.
	_, _, err := probe.Once(context.Background(), addr, probe.Options{
		Bind:  netip.MustParseAddr("127.0.0.1"),
		Proxy: &probe.ProxyHeader{Version: 2, Src: src},
	})
	var refused *probe.RefusedError
	if probe.StageOf(err) != probe.StageReport || !errors.As(err, &refused) || refused.Code != report.ErrorHeaderUntrusted || !errors.Is(err, probe.ErrClosed) {
		t.Errorf("Once with a header from untrusted 127.0.0.1: err = %v, want a report-stage refusal error=%s (an ErrClosed)", err, report.ErrorHeaderUntrusted)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "spoof") }, "listener to print the spoof refusal")
}

func TestOnceClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, _, err = probe.Once(context.Background(), addr, probe.Options{Timeout: 2 * time.Second})
	if probe.StageOf(err) != probe.StageConnect {
		t.Errorf("Once(closed port) = %v, want a connect-stage error", err)
	}
}

// TestOnceRedirect: a server that answers decision=redirect and closes, as
// the app does, makes echo impossible without failing the attempt.
func TestOnceRedirect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		ap := c.RemoteAddr().String()
		r := report.Report{"client": ap, "via": "direct", "peer": ap, "server": c.LocalAddr().String(), "conn": "r1", "decision": "redirect", "region": "eu-central-1"}
		c.Write([]byte(r.Line() + "\n"))
	}()
	rep, tm, err := probe.Once(context.Background(), ln.Addr().String(), probe.Options{Echo: 2})
	if err != nil {
		t.Fatalf("Once against a redirecting server: %v", err)
	}
	if rep[report.KeyDecision] != "redirect" || len(tm.Echo) != 0 || !strings.Contains(tm.EchoSkipped, "redirect") {
		t.Errorf("Once = %v, %+v; want decision redirect, no echo and a skip reason", rep, tm)
	}
}

func TestOnceTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts (backlog), never answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Long enough for the dial to finish on a busy machine: the timeout
	// must strike while the report is awaited.
	_, _, err = probe.Once(context.Background(), ln.Addr().String(), probe.Options{Timeout: 2 * time.Second})
	if probe.StageOf(err) != probe.StageReport || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Once(silent server) = %v, want a report-stage timeout", err)
	}
}

func TestRunCompare(t *testing.T) {
	a, _ := startListener(t, nil)
	b, _ := startListener(t, nil)
	var seen []probe.Attempt
	res, err := probe.Run(context.Background(), probe.Config{
		Target: a, Compare: b, Count: 5, Concurrency: 2,
		Options:   probe.Options{Echo: 2},
		OnAttempt: func(at probe.Attempt) { seen = append(seen, at) },
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(seen) != 10 || len(res.Targets) != 2 {
		t.Fatalf("Run: %d attempts seen, %d targets; want 10 and 2", len(seen), len(res.Targets))
	}
	for _, tr := range res.Targets {
		if tr.Attempts != 5 || tr.Failures != 0 || tr.Verdict != probe.Preserved || tr.Report.Count != 5 || tr.Echo.Count != 10 {
			t.Errorf("target %s: %+v; want 5 attempts, preserved, 5 report and 10 echo samples", tr.Target, tr)
		}
		if tr.Expected != netip.MustParseAddr("127.0.0.1") || tr.ExpectedFrom != probe.ExpectLocal {
			t.Errorf("target %s: expected %v from %v, want 127.0.0.1 from the local address", tr.Target, tr.Expected, tr.ExpectedFrom)
		}
	}
	if res.Verdict() != probe.Preserved {
		t.Errorf("Verdict() = %v, want preserved", res.Verdict())
	}
}

func TestRunExpectMismatch(t *testing.T) {
	a, _ := startListener(t, nil)
	res, err := probe.Run(context.Background(), probe.Config{Target: a, Count: 2, Expect: netip.MustParseAddr("203.0.113.7")})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Targets[0]
	if tr.Verdict != probe.NotPreserved || !strings.Contains(tr.Explain(), "saw 127.0.0.1") || !strings.Contains(tr.Explain(), "instead of 203.0.113.7") {
		t.Errorf("verdict %v, explain %q; want not preserved naming both addresses", tr.Verdict, tr.Explain())
	}
}

func TestRunCancel(t *testing.T) {
	a, _ := startListener(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := probe.Run(ctx, probe.Config{Target: a, Count: 0, Interval: time.Millisecond, OnAttempt: func(probe.Attempt) {
		if n++; n == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: err = %v, want context.Canceled", err)
	}
	if tr := res.Targets[0]; tr.Attempts < 3 || tr.Failures != 0 {
		t.Errorf("after cancel: %d attempts, %d failures; want >= 3 and 0 (in-flight ones are interrupted, not failed)", tr.Attempts, tr.Failures)
	}
}

func TestRunClosedPort(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	res, err := probe.Run(context.Background(), probe.Config{Target: addr, Count: 3, Options: probe.Options{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Targets[0]
	if tr.Failures != 3 || tr.LossPct() != 100 || tr.FailuresByStage[probe.StageConnect] != 3 || res.Verdict() != probe.NoReport {
		t.Errorf("closed port: %+v, want 3 connect failures, 100%% loss, no report", tr)
	}
}

func waitFor(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second) // failure bound for a busy machine
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunProxySources simulates clients from several addresses in one run,
// as the demo does: each round claims the next source, and each attempt is
// judged against its own source.
func TestRunProxySources(t *testing.T) {
	addr, _ := startListener(t, &origin.Config{
		Mode:    origin.Trusted,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")},
	})
	srcs := []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:5555"),
		netip.MustParseAddrPort("198.51.100.20:4000"),
		netip.MustParseAddrPort("[2001:db8::7]:6000"),
	}
	var got []string
	res, err := probe.Run(context.Background(), probe.Config{
		Target: addr, Count: 6, Concurrency: 3, ProxySources: srcs,
		Options: probe.Options{Bind: netip.MustParseAddr("127.0.0.5"), Proxy: &probe.ProxyHeader{Version: 2}},
		OnAttempt: func(a probe.Attempt) {
			if a.Saw != srcs[a.Seq%3] || a.Verdict != probe.Preserved {
				t.Errorf("round %d: saw %v (%v), want %v preserved (err %v)", a.Seq, a.Saw, a.Verdict, srcs[a.Seq%3], a.Err)
			}
			got = append(got, a.Saw.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Targets[0]
	if tr.Preserved != 6 || len(tr.Seen) != 3 || tr.Verdict != probe.Preserved {
		t.Errorf("result: %d preserved, seen %v, verdict %v; want 6, 3 addresses, preserved", tr.Preserved, tr.Seen, tr.Verdict)
	}
	if !strings.Contains(tr.Explain(), "3 distinct client addresses") {
		t.Errorf("Explain() = %q, want it to mention the 3 addresses", tr.Explain())
	}
	if _, err := probe.Run(context.Background(), probe.Config{Target: addr, ProxySources: srcs}); err == nil {
		t.Error("Run with proxy sources but no PROXY version succeeded, want an error")
	}
}

func BenchmarkOnce(b *testing.B) {
	addr, _ := startListener(b, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := probe.Once(ctx, addr, probe.Options{Echo: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecorder(b *testing.B) {
	r := probe.NewRecorder()
	b.ReportAllocs()
	d := time.Duration(0)
	for b.Loop() {
		d = (d + 7919*time.Microsecond) % time.Second
		r.Record(d)
	}
	_ = r.Summary()
}

func TestOnceIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- listener.New(listener.Config{}).Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	res, err := probe.Run(context.Background(), probe.Config{Target: ln.Addr().String(), Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Targets[0]
	if tr.Verdict != probe.Preserved || len(tr.Seen) != 1 || tr.Seen[0] != netip.IPv6Loopback() {
		t.Errorf("IPv6 probe: verdict %v, seen %v; want preserved ::1 (%s)", tr.Verdict, tr.Seen, tr.Explain())
	}
}

// TestOnceHostName: a name is resolved apart from the handshake (DNS
// timed separately) and every address is tried in turn.
func TestOnceHostName(t *testing.T) {
	addr, _ := startListener(t, nil)
	_, port, _ := net.SplitHostPort(addr)
	rep, tm, err := probe.Once(context.Background(), net.JoinHostPort("localhost", port), probe.Options{})
	if err != nil {
		t.Skipf("localhost does not resolve to 127.0.0.1 here: %v", err)
	}
	if tm.DNS <= 0 || tm.Connect <= 0 || rep[report.KeyClient] != tm.Local.String() {
		t.Errorf("Once(localhost:%s) = %v, %+v; want DNS and connect timed and the report of the probe's address", port, rep, tm)
	}
}

// TestOnceNameNotFound: a name that does not resolve fails the connect
// stage and is diagnosed unreachable. The lookup goes to a loopback stub
// DNS server that answers NXDOMAIN, never to the machine's resolver.
func TestOnceNameNotFound(t *testing.T) {
	stub, queries := startNXDomainStub(t)
	opts := probe.Options{Timeout: 5 * time.Second, Resolver: stub}
	_, _, err := probe.Once(context.Background(), "nosuch.invalid:80", opts)
	if probe.StageOf(err) != probe.StageConnect {
		t.Fatalf("Once(nosuch.invalid) = %v, want a connect-stage error", err)
	}
	if queries.Load() == 0 {
		t.Fatalf("the stub DNS server got no query: the name was resolved elsewhere (err %v)", err)
	}
	d, sentence := probe.Diagnose(probe.Attempt{Target: "nosuch.invalid:80", Err: err}, 0)
	if d != probe.DiagUnreachable || !strings.Contains(sentence, "does not resolve") {
		t.Errorf("Diagnose = %s, %q; want unreachable naming the name", d, sentence)
	}
	opts.Family = 6
	if _, _, err := probe.Once(context.Background(), "nosuch.invalid:80", opts); probe.StageOf(err) != probe.StageConnect {
		t.Errorf("Once(nosuch.invalid, IPv6) = %v, want a connect-stage error", err)
	}
}

// startNXDomainStub serves DNS on a loopback UDP port, answering NXDOMAIN
// to every query, and returns a resolver that asks only it and the count
// of queries.
func startNXDomainStub(tb testing.TB) (*net.Resolver, *atomic.Int64) {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() { // ends when pc is closed at cleanup
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:k]
			if len(q) < 12 {
				continue
			}
			// End of the first question: labels, a zero byte, type and class.
			end := 12
			for end < len(q) && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5
			if end > len(q) {
				continue
			}
			n.Add(1)
			resp := append([]byte{}, q[:2]...)            // id
			resp = append(resp, 0x80|(q[2]&0x01), 0x80|3) // QR, RD copied; RA, RCODE 3 (NXDOMAIN)
			resp = append(resp, 0, 1, 0, 0, 0, 0, 0, 0)   // one question, no records
			resp = append(resp, q[12:end]...)             // the question
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}, &n
}
