// Package listener is the server side of nc-probe: the tcpdump half of the
// blog's netcat test without tcpdump. For every connection it prints the
// source address (and the PROXY header, when one arrives and the trust mode
// of internal/origin accepts it), answers the client's first line with a
// report line in the app's format (decision=serve) and a greeting, then
// echoes lines until EOF, "quit" or the idle timeout. An HTTP request gets
// the report as a JSON object instead, as the app does. As the app, it
// answers a connection refused for its PROXY header with one refusal line
// (error=proxy-header-required, -untrusted or -malformed) and reports
// proxy=ignored when the payload starts with a PROXY signature it reads as
// data (docs/protocol.md).
package listener

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/report"
)

// Defaults used when a [Config] field is zero.
const (
	DefaultFirstLineTimeout = 10 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultMaxConns         = 1024
	DefaultGreeting         = "hello from nc-probe listen: type a line, it comes back; quit ends"
)

// Config configures a [Server].
type Config struct {
	// Resolver learns the client address (socket or PROXY header) under the
	// trust rules of the app. Nil: the socket's peer, PROXY bytes are data.
	Resolver *origin.Resolver
	// Out receives one line per connection and per refusal. Nil: discarded.
	// Writes to it are serialised.
	Out io.Writer
	// FirstLineTimeout bounds the wait for the client's first line.
	FirstLineTimeout time.Duration
	// IdleTimeout closes a connection idle this long while echoing.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once; more wait in the
	// kernel's accept queue.
	MaxConns int
	// Greeting is the line sent after the report.
	Greeting string
}

// Server answers probes. Create it with [New]; it is safe for concurrent
// use, and one Server may serve several listeners.
type Server struct {
	cfg Config
	mu  sync.Mutex // serialises writes to cfg.Out
}

// New returns a Server with cfg's zero fields set to their defaults.
func New(cfg Config) *Server {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.FirstLineTimeout <= 0 {
		cfg.FirstLineTimeout = DefaultFirstLineTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Greeting == "" {
		cfg.Greeting = DefaultGreeting
	}
	return &Server{cfg: cfg}
}

// Serve accepts connections on ln until ctx is done, then closes ln, closes
// every open connection and waits for their goroutines. It blocks until
// then and returns nil after a cancellation, or an error when ln was closed
// by someone else. Other accept errors (out of file descriptors) are
// printed and retried with a backoff of up to a second.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.cfg.MaxConns)
	var backoff time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-sem
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, net.ErrClosed):
				return fmt.Errorf("accept: %w", err)
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.printf("%s accept: %v (retrying in %v)", stamp(), err, backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		wg.Go(func() {
			defer func() { <-sem }()
			defer conn.Close()
			cstop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer cstop()
			s.handle(conn)
		})
	}
}

func (s *Server) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.cfg.Out, format+"\n", args...)
}

func (s *Server) handle(conn net.Conn) {
	id := uuid.NewString()
	o := origin.Origin{Via: event.ViaDirect}
	c := conn
	if s.cfg.Resolver != nil {
		var err error
		o, c, err = s.cfg.Resolver.Resolve(conn)
		if err != nil {
			s.printf("%s conn=%s refused: %v (%s)", stamp(), id, err, origin.Kind(err))
			refuse(conn, addrPort(conn.RemoteAddr()).String(), err)
			return
		}
	} else {
		o.Peer, o.Server = addrPort(conn.RemoteAddr()), addrPort(conn.LocalAddr())
		o.Client = o.Peer
	}
	switch {
	case o.Local:
		s.printf("%s conn=%s from %s: %s header with LOCAL command (health check), closing", stamp(), id, o.Peer, o.Via)
		return
	case o.Via == event.ViaDirect:
		s.printf("%s conn=%s from %s to %s (direct)", stamp(), id, o.Client, o.Server)
	default:
		extra := ""
		if o.VPCEID != "" {
			extra = " vpce=" + o.VPCEID
		}
		s.printf("%s conn=%s from %s to %s (%s header from peer %s%s)", stamp(), id, o.Client, o.Server, o.Via, o.Peer, extra)
	}

	br := bufio.NewReaderSize(c, 1024)
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.FirstLineTimeout))
	_, _ = br.Peek(1) // the first bytes, to look for a PROXY signature in the payload
	head, _ := br.Peek(min(br.Buffered(), 12))
	ignored := report.HasProxySignature(head)
	first, err := probe.ReadLine(br, report.MaxLineLength)
	if err != nil {
		s.printf("%s conn=%s closed before its first line: %v", stamp(), id, err)
		return
	}
	rep := report.Report{
		report.KeyClient:   o.Client.String(),
		report.KeyVia:      o.Via,
		report.KeyPeer:     o.Peer.String(),
		report.KeyServer:   o.Server.String(),
		report.KeyConn:     id,
		report.KeyClass:    Class(o.Client.Addr()),
		report.KeyDecision: probe.DecisionServe,
		report.KeyLang:     "en",
	}
	if ignored {
		rep[report.KeyProxy] = report.ProxyIgnored
		s.printf("%s conn=%s payload starts with a PROXY signature: read as data (proxy=ignored)", stamp(), id)
	}
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if isHTTP(first) {
		s.serveHTTP(c, br, rep)
		return
	}
	if _, err := io.WriteString(c, rep.Line()+"\n"+s.cfg.Greeting+"\n"); err != nil {
		return
	}
	for {
		_ = c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := probe.ReadLine(br, report.MaxLineLength)
		if err != nil || strings.TrimSpace(line) == "quit" {
			return
		}
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			return
		}
	}
}

// refuse writes the refusal line the app writes for a Resolve error (see
// docs/protocol.md), half-closes and drains the client's bytes for at most
// half a second, so that the close is a FIN, not a reset that could drop
// the line.
func refuse(conn net.Conn, peer string, err error) {
	code := report.RefusalFor(origin.Kind(err))
	if code == "" {
		return
	}
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write(append(report.AppendRefusal(nil, code, peer), '\n')); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}

// isHTTP reports whether a first line is an HTTP/1.x request line.
func isHTTP(line string) bool {
	f := strings.Fields(line)
	return len(f) == 3 && strings.HasPrefix(f[2], "HTTP/1.")
}

// serveHTTP skips the request headers (at most 100 lines) and answers the
// report as JSON.
func (s *Server) serveHTTP(c net.Conn, br *bufio.Reader, rep report.Report) {
	for range 100 {
		line, err := probe.ReadLine(br, report.MaxLineLength)
		if err != nil {
			return
		}
		if line == "" {
			body, _ := rep.MarshalJSON()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n", len(body)+1, body)
			return
		}
	}
	_, _ = io.WriteString(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
}

func stamp() string { return time.Now().Format("15:04:05.000") }

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

var (
	documentation = []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("2001:db8::/32"),
	}
	shared = netip.MustParsePrefix("100.64.0.0/10")
)

// Class names the kind of address a is: loopback, private, shared (CGNAT),
// link-local, documentation, unspecified, multicast or public.
func Class(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid() || a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case shared.Contains(a):
		return "shared"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	for _, p := range documentation {
		if p.Contains(a) {
			return "documentation"
		}
	}
	return "public"
}
