// Package probe is the client side of the app's line protocol, used to prove
// client IP preservation and to measure the path: it connects (optionally
// sending a PROXY protocol header first), speaks first with a probe line,
// reads the report line of what the server saw, times echo round trips, and
// judges whether the server saw the client's own address.
//
// [Once] runs one attempt; [Run] runs many, concurrently and interleaved
// over up to two targets, and summarises them with HDR histograms.
// cmd/nc-probe is a command line over this package; tests and the local demo
// call it directly.
package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/report"
)

// Defaults used when an [Options] field is zero.
const (
	DefaultTimeout = 5 * time.Second
	DefaultLine    = "nc-probe hello"
)

// MaxLine bounds every line the probe reads from a server (the report, the
// greeting and echoes), newline excluded.
const MaxLine = report.MaxLineLength

// Decisions a report can carry (report key decision).
const (
	DecisionServe    = "serve"
	DecisionRedirect = "redirect"
	DecisionDeny     = "deny"
)

// Options configures one attempt. The zero value is usable: no PROXY
// header, no echo, [DefaultTimeout] and [DefaultLine].
type Options struct {
	// Timeout bounds the whole attempt, from dial to the last echo.
	Timeout time.Duration
	// Echo is the number of lines sent after the greeting, each timed from
	// write to its echo. Only possible when the decision is serve.
	Echo int
	// Line is the probe line the client speaks first; the server consumes it.
	// It must not hold a newline and must not look like an HTTP request.
	Line string
	// Bind, when valid, is the local address the probe dials from.
	Bind netip.Addr
	// Proxy, when not nil, is a PROXY header written before the probe line.
	Proxy *ProxyHeader
	// Family restricts the target's addresses to IPv4 (4) or IPv6 (6); 0
	// dials what the name resolves to, in the resolver's order.
	Family int
	// Resolver looks the target's name up; nil: net.DefaultResolver.
	Resolver *net.Resolver
}

// ProxyHeader is a PROXY protocol header the probe sends, as a trusted proxy
// would, to claim a client address.
type ProxyHeader struct {
	Version byte           // 1 or 2
	Src     netip.AddrPort // the client address to claim
	Dst     netip.AddrPort // the address the client dialed; zero: the target's address
}

// Validate checks the version and the source address.
func (p *ProxyHeader) Validate() error {
	if p.Version != 1 && p.Version != 2 {
		return fmt.Errorf("probe: PROXY protocol version must be 1 or 2, not %d", p.Version)
	}
	if !p.Src.IsValid() {
		return errors.New("probe: a PROXY header needs a source address ip:port")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Line == "" {
		o.Line = DefaultLine
	}
	return o
}

// Validate reports a bad option before anything is dialed.
func (o Options) Validate() error {
	if o.Echo < 0 {
		return fmt.Errorf("probe: echo count must not be negative, got %d", o.Echo)
	}
	if bytes.ContainsAny([]byte(o.Line), "\r\n") {
		return errors.New("probe: the probe line must not contain a newline")
	}
	if f := strings.Fields(o.Line); len(f) == 3 && strings.HasPrefix(f[2], "HTTP/") {
		return errors.New("probe: the probe line must not look like an HTTP request line (the server would answer HTTP)")
	}
	if len(o.Line) > MaxLine {
		return fmt.Errorf("probe: the probe line is longer than %d bytes", MaxLine)
	}
	if o.Family != 0 && o.Family != 4 && o.Family != 6 {
		return fmt.Errorf("probe: address family must be 4 or 6, not %d", o.Family)
	}
	if o.Proxy != nil {
		return o.Proxy.Validate()
	}
	return nil
}

// Timings are the measurements of one attempt. Durations that were not
// measured are zero.
type Timings struct {
	// DNS is the name lookup of the target's host (zero for an IP literal),
	// kept out of Connect.
	DNS time.Duration
	// Connect is the TCP handshake with the first box that answers. Through
	// Global Accelerator that is the edge, which terminates TCP: it says
	// nothing of the path to the server.
	Connect time.Duration
	// Report is from writing the probe line (and PROXY header) to reading the
	// server's report line: the end-to-end number.
	Report time.Duration
	// Echo holds one round trip per echoed line.
	Echo []time.Duration
	// Local and Remote are the probe socket's addresses, unmapped.
	Local, Remote netip.AddrPort
	// Greeting is the line the server sent after its report (serve only,
	// read only when echo lines were asked for).
	Greeting string
	// EchoSkipped says why echo lines were asked for but not measured
	// (the decision was not serve). It is not a failure.
	EchoSkipped string
}

// Stage names the step of an attempt that failed.
type Stage string

// Stages of an attempt, in order.
const (
	StageConnect  Stage = "connect"
	StageSend     Stage = "send"
	StageReport   Stage = "report"
	StageGreeting Stage = "greeting"
	StageEcho     Stage = "echo"
)

// Error is an attempt's failure: the stage and the cause.
type Error struct {
	Stage Stage
	Err   error
}

func (e *Error) Error() string { return string(e.Stage) + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Sentinel causes wrapped in an [Error].
var (
	// ErrClosed: the server closed the connection before the expected line,
	// e.g. the app refused the connection (PROXY header missing or spoofed).
	ErrClosed = errors.New("server closed the connection")
	// ErrEchoMismatch: an echo line came back different.
	ErrEchoMismatch = errors.New("echo differs from the line sent")
	// ErrNoAddress: the name has no address of the asked family.
	ErrNoAddress = errors.New("no address of that family")
)

// RefusedError is the cause of a report-stage [Error] when the server
// answered a refusal line (error=..., see docs/protocol.md) instead of a
// report.
type RefusedError struct {
	Code string // report.ErrorHeaderRequired, ErrorHeaderUntrusted, ErrorHeaderMalformed or another
	Peer string // the peer address the server saw, when it said
}

// Unwrap returns [ErrClosed]: a refusal is the server closing the
// connection before a report, with its reason.
func (e *RefusedError) Unwrap() error { return ErrClosed }

func (e *RefusedError) Error() string {
	s := "server refused the connection: error=" + e.Code
	if e.Peer != "" {
		s += " (it saw the peer " + e.Peer + ")"
	}
	return s
}

// NotReportError is the cause of a report-stage [Error] when the server's
// first line is neither a report nor a refusal: not an originlens server.
type NotReportError struct {
	Line string // the line, clipped
	Err  error  // why it is not a report
}

func (e *NotReportError) Error() string {
	return fmt.Sprintf("%v (got %q)", e.Err, e.Line)
}

func (e *NotReportError) Unwrap() error { return e.Err }

// StageOf returns the stage of an attempt error, or "" when err is not an
// [*Error].
func StageOf(err error) Stage {
	var e *Error
	if errors.As(err, &e) {
		return e.Stage
	}
	return ""
}

// Once runs one attempt against target (host:port): dial, PROXY header when
// opts.Proxy is set, probe line, report line, then when the decision is
// serve and opts.Echo > 0 the greeting and opts.Echo timed echo lines.
//
// It blocks for at most opts.Timeout; cancelling ctx aborts it at once. On
// failure the error is an [*Error] naming the stage; the report is returned
// whenever it was received, even when a later stage failed. Once is safe to
// call from many goroutines at once.
func Once(ctx context.Context, target string, opts Options) (report.Report, Timings, error) {
	var tm Timings
	if err := opts.Validate(); err != nil {
		return nil, tm, err
	}
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	d := net.Dialer{}
	if opts.Bind.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(opts.Bind, 0))
	}
	addrs, err := resolve(ctx, opts.Resolver, target, opts.Family, &tm)
	if err != nil {
		return nil, tm, &Error{StageConnect, ctxCause(ctx, err)}
	}
	var conn net.Conn
	for _, a := range addrs { // in the resolver's order, first that answers
		start := time.Now()
		conn, err = d.DialContext(ctx, "tcp", a.String())
		if err == nil {
			tm.Connect = time.Since(start)
			break
		}
	}
	if err != nil {
		return nil, tm, &Error{StageConnect, ctxCause(ctx, err)}
	}
	defer conn.Close()
	tm.Local = addrPort(conn.LocalAddr())
	tm.Remote = addrPort(conn.RemoteAddr())
	// Deadlines from ctx: the attempt's timeout, and at once on cancellation.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var out bytes.Buffer
	if p := opts.Proxy; p != nil {
		dst := p.Dst
		if !dst.IsValid() {
			dst = tm.Remote
		}
		h := proxyproto.HeaderProxyFromAddrs(p.Version, net.TCPAddrFromAddrPort(p.Src), net.TCPAddrFromAddrPort(dst))
		if _, err := h.WriteTo(&out); err != nil {
			return nil, tm, &Error{StageSend, fmt.Errorf("writing PROXY header: %w", err)}
		}
	}
	out.WriteString(opts.Line)
	out.WriteByte('\n')

	br := bufio.NewReaderSize(conn, 1024)
	sent := time.Now()
	if _, err := conn.Write(out.Bytes()); err != nil {
		return nil, tm, &Error{StageSend, ctxCause(ctx, err)}
	}
	line, err := ReadLine(br, MaxLine)
	if err != nil {
		return nil, tm, &Error{StageReport, ctxCause(ctx, err)}
	}
	tm.Report = time.Since(sent)
	if r, ok := report.ParseRefusal(line); ok {
		return nil, tm, &Error{StageReport, &RefusedError{Code: r[report.KeyError], Peer: r[report.KeyPeer]}}
	}
	rep, err := report.ParseLine(line)
	if err != nil {
		return nil, tm, &Error{StageReport, &NotReportError{Line: clip(line), Err: err}}
	}
	if opts.Echo == 0 {
		return rep, tm, nil
	}
	if dec := rep[report.KeyDecision]; dec != DecisionServe {
		tm.EchoSkipped = fmt.Sprintf("decision=%s: the server closes after its report, so no echo round trips", dec)
		return rep, tm, nil
	}
	if tm.Greeting, err = ReadLine(br, MaxLine); err != nil {
		return rep, tm, &Error{StageGreeting, ctxCause(ctx, err)}
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	for i := range opts.Echo {
		want := fmt.Sprintf("nc-probe echo %d %s", i+1, hex.EncodeToString(nonce))
		t := time.Now()
		if _, err := io.WriteString(conn, want+"\n"); err != nil {
			return rep, tm, &Error{StageEcho, ctxCause(ctx, err)}
		}
		got, err := ReadLine(br, MaxLine)
		if err != nil {
			return rep, tm, &Error{StageEcho, ctxCause(ctx, err)}
		}
		if got != want {
			return rep, tm, &Error{StageEcho, fmt.Errorf("%w: sent %q, got %q", ErrEchoMismatch, want, clip(got))}
		}
		tm.Echo = append(tm.Echo, time.Since(t))
	}
	return rep, tm, nil
}

// resolve turns target (host:port) into addresses of family (4, 6, or 0
// for any), timing the DNS lookup in tm.DNS when host is a name, so that
// Connect times only the handshake.
func resolve(ctx context.Context, r *net.Resolver, target string, family int, tm *Timings) ([]netip.AddrPort, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := r.LookupPort(ctx, "tcp", portStr)
		if lerr != nil {
			return nil, fmt.Errorf("target %q: port: %w", target, lerr)
		}
		port = uint64(p)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if family != 0 && familyOf(ip) != family {
			return nil, fmt.Errorf("target %s is not IPv%d: %w", ip, family, ErrNoAddress)
		}
		return []netip.AddrPort{netip.AddrPortFrom(ip, uint16(port))}, nil
	}
	network := "ip"
	if family != 0 {
		network = fmt.Sprintf("ip%d", family)
	}
	start := time.Now()
	ips, err := r.LookupNetIP(ctx, network, host)
	tm.DNS = time.Since(start)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound && family != 0 {
		return nil, fmt.Errorf("resolving %s: no IPv%d address: %w", host, family, ErrNoAddress)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("resolving %s: no addresses", host)
	}
	return out, nil
}

// ctxCause prefers the context's reason (timeout, cancellation) over the
// I/O error it provoked, and names a bare EOF.
func ctxCause(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("timed out: %w", context.DeadlineExceeded)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}

// familyOf returns 4 or 6.
func familyOf(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
