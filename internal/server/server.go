// Package server is the app's TCP service: it accepts connections, learns
// each client's true address, locates it, applies the residency rules and
// per-source limits, answers the client (HTTP for curl and browsers, a line
// protocol for netcat) and publishes exactly one connection event per
// accepted connection when it ends.
//
// The client speaks first: nothing is written before the client's first
// bytes (and its PROXY header, when one is expected) have arrived.
//
// # Relay mode
//
// With Config.Relay set the server answers nothing itself: once a client
// is resolved, located and decided, a served or redirected connection is
// forwarded to the upstream (see package relay), bytes unchanged both ways,
// and a denied one is closed without contacting the upstream. The upstream
// is dialled right after the decision, before any payload byte: without a
// PROXY header to wait for (--proxy-protocol off) that is at accept, so a
// server that speaks first (SSH, SMTP) works. The event carries relay.*
// and, as reason, how it ended:
//
//	connection-closed   success  client-closed         the client's side ended first
//	connection-closed   success  upstream-closed       the upstream's side ended first
//	connection-closed   success  idle-timeout          no byte either way within --idle-timeout
//	connection-closed   failure  client-closed, ...    the same, ended by an error (reset)
//	connection-denied   failure  denied:<rule>         relay.end denied: the upstream was not contacted
//	connection-refused  failure  upstream-refused      nothing listens on the upstream port; closed at once
//	connection-refused  failure  upstream-unreachable  no answer or no route (or no transparent socket)
//
// # Events
//
// Each accepted connection ends with one event (event.action, outcome,
// reason):
//
//	connection-closed   success  served                answered; ended by EOF, quit or keep-alive end
//	connection-closed   success  redirect              report with decision=redirect, then closed
//	connection-closed   success  idle-timeout          line protocol: no line within --idle-timeout
//	connection-closed   success  health-check          PROXY v2 LOCAL / v1 UNKNOWN with no payload (load balancer check)
//	connection-closed   unknown  empty                 closed (or reset) before any payload byte
//	connection-closed   unknown  shutdown              still open at the end of the drain
//	connection-closed   failure  line-too-long         an echo line over --max-line
//	connection-closed   failure  bad-request           the first HTTP request was malformed (400/431)
//	connection-closed   failure  io-error              read or write failed after the first line
//	connection-denied   failure  denied:<rule>         report (HTTP 403) with decision=deny, then closed
//	connection-denied   failure  rate-limited          per-source limit; report with decision=deny, then close
//	connection-refused  failure  too-many-connections  over --max-conns; closed at accept
//	connection-refused  failure  proxy-header-<kind>   kind: spoof, missing, malformed, crc, timeout, io
//	connection-refused  failure  first-bytes-timeout   no complete first line within --first-bytes-timeout
//	connection-refused  failure  line-too-long         a first line over --max-line
//	connection-refused  failure  io-error              read failed before the first line
//
// Empty connections and health checks are logged at debug level only.
// Once the origin is resolved the client is located and decided before its
// first bytes are awaited, so residency fields are set even when it never
// sent them. Connections refused on a PROXY header error carry the socket
// peer as source (located, not decided); those refused at accept carry the
// socket peer only. Every connection the per-source limits counted carries
// its source prefix in clientip.limit_prefix; source.ip stays the address.
//
// A PROXY v2 LOCAL (v1 UNKNOWN) header says the proxy itself connected, to
// check that the server is up: accepting and closing cleanly is all such a
// check needs, and all it gets. It is the socket peer's connection, located,
// decided and counted by the per-source limits as the peer. If it sends
// payload anyway (an HTTP health check, or anyone in mode required), it is
// served as the peer's own direct connection: client and via are the
// peer's and direct, so it can never get more than the peer would.
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/relay"
	"github.com/prometheus/client_golang/prometheus"
)

// Resolver learns the true client address of a connection (see
// [origin.Resolver.Resolve]). It must be safe for concurrent use.
type Resolver interface {
	Resolve(conn net.Conn) (origin.Origin, net.Conn, error)
}

// Locator places an unmapped client address (see [geo.DB.Lookup]). It must
// be safe for concurrent use and must not block for long.
type Locator interface {
	Lookup(addr netip.Addr) geo.Location
}

// Decider applies the residency and business rules (see
// [policy.Policy.Decide]). It must be safe for concurrent use.
type Decider interface {
	Decide(addr netip.Addr, loc geo.Location) policy.Decision
}

// Limiter admits connections per source (see [limit.Limiter.Acquire]):
// key is the source addr was counted as (a prefix of it; the zero Prefix
// when no limit applies), recorded in the event. It must be safe for
// concurrent use.
type Limiter interface {
	Acquire(addr netip.Addr, now time.Time) (key netip.Prefix, release func(), err error)
}

// Publisher takes the connection events. Publish must be safe for
// concurrent use and should not block for long: it is called from the
// connection goroutines and, for connections over the limit, from the
// accept loop.
type Publisher interface {
	Publish(ev event.Event)
}

// Defaults for the zero values of [Config].
const (
	DefaultMaxConns          = 10000
	DefaultFirstBytesTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxLine           = 4096
	DefaultDrainTimeout      = 15 * time.Second
	// MaxHeaderBytes bounds an HTTP request's header: the request line,
	// the header fields and the empty line that ends them, line endings
	// included. A header of exactly this many bytes is read; one byte
	// more is answered 431.
	MaxHeaderBytes = 16 << 10
)

// Config configures a [Server]. Resolver and Publisher are required; a nil
// Locator classifies nothing, a nil Decider serves everyone, a nil Limiter
// admits everyone.
type Config struct {
	Resolver  Resolver
	Locator   Locator
	Decider   Decider
	Limiter   Limiter
	Publisher Publisher
	// Relay, when set, turns the server into a relay: served and
	// redirected clients are forwarded to its upstream instead of answered.
	Relay *relay.Dialer

	MaxConns          int           // open connections; more are refused at accept
	FirstBytesTimeout time.Duration // from the end of the PROXY header to the end of the first line
	IdleTimeout       time.Duration // between lines and between HTTP requests
	MaxLine           int           // line protocol line length, newline excluded
	DrainTimeout      time.Duration // how long Serve lets open connections finish at shutdown

	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
}

// Server serves connections. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	readers sync.Pool // *bufio.Reader of MaxLine+2 bytes (or 4 KiB if larger)

	open     atomic.Int64 // admitted connections still open
	workers  atomic.Int64 // connection goroutines running (busy or idle)
	started  atomic.Int64 // connection goroutines ever started
	draining atomic.Bool  // Serve's ctx is done: stop accepting, close idle HTTP
	hardStop atomic.Bool  // the drain timeout passed: open connections were closed
	serving  atomic.Bool  // Serve was called: it runs once per Server
	parked   atomic.Int64 // connections parked now (waiting for bytes without a goroutine)
	// graceWaits counts the echo loops waiting out parkAfter on their
	// goroutine (see maxGraceWaits).
	graceWaits atomic.Int64

	// The constants parkAfter and workerIdle, in nanoseconds; tests
	// shorten them.
	parkAfter, workerIdle atomic.Int64

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// New checks cfg, fills in defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("server: Config.Resolver is required")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("server: Config.Publisher is required")
	}
	if cfg.Locator == nil {
		cfg.Locator = classOnly{}
	}
	if cfg.Decider == nil {
		cfg.Decider = serveAll{}
	}
	if cfg.Limiter == nil {
		cfg.Limiter = noLimit{}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"FirstBytesTimeout", &cfg.FirstBytesTimeout, DefaultFirstBytesTimeout},
		{"IdleTimeout", &cfg.IdleTimeout, DefaultIdleTimeout},
		{"DrainTimeout", &cfg.DrainTimeout, DefaultDrainTimeout},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("server: %s must not be negative, got %v", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MaxConns < 0 || cfg.MaxLine < 0 {
		return nil, fmt.Errorf("server: MaxConns and MaxLine must not be negative, got %d and %d", cfg.MaxConns, cfg.MaxLine)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxLine == 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: m, conns: make(map[*conn]struct{})}
	if err := registerParked(cfg.Registerer, &s.parked); err != nil {
		return nil, err
	}
	s.parkAfter.Store(int64(parkAfter))
	s.workerIdle.Store(int64(workerIdle))
	size := max(cfg.MaxLine+2, 4096)
	s.readers.New = func() any { return bufio.NewReaderSize(nil, size) }
	return s, nil
}

// Open returns the number of connections currently open.
func (s *Server) Open() int64 { return s.open.Load() }

// Serve accepts connections on ln until ctx is done or accepting fails for
// good, then drains: it stops accepting (closing ln), closes idle HTTP
// keep-alive connections, lets the other open connections finish for up to
// DrainTimeout, closes those still open, and returns once every connection's
// event has been published. Serve blocks; it returns nil after a drain that
// ctx started, otherwise the accept error. Serve closes ln.
//
// Serve runs once per Server: the drain and the connections it closes are
// the Server's, so a second Serve's drain would end the first's
// connections (and close parked sockets its lot does not own). A second
// call closes ln and returns an error at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		ln.Close()
		return errors.New("server: Serve called twice: a Server serves one listener, once")
	}
	stop := context.AfterFunc(ctx, func() {
		s.draining.Store(true)
		ln.Close()
	})
	defer stop()

	p := &pool{
		work: make(chan job), // unbuffered: only a worker waiting in select takes one
		stop: make(chan struct{}),
	}
	lot, err := newParkLot(&p.wg, &s.parked, func(c *conn) { s.run(p, job{resume: c}) })
	if err != nil {
		s.log.Debug("idle line connections keep their goroutine", "err", err)
	} else {
		p.lot = lot
		defer lot.close() // after the drain: the lot is empty
	}

	var acceptErr error
	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isRetryableAccept(err) {
				// Out of file descriptors or a transient error: back off like
				// net/http does instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			acceptErr = fmt.Errorf("server: accepting: %w", err)
			s.draining.Store(true)
			ln.Close()
			break
		}
		backoff = 0
		start := time.Now()
		if s.open.Add(1) > int64(s.cfg.MaxConns) {
			s.open.Add(-1)
			s.refuseAtAccept(raw, start)
			continue
		}
		s.metrics.open.Inc()
		s.run(p, job{raw: raw, start: start})
	}
	close(p.stop)
	s.drain(p)
	return acceptErr
}

// pool is one Serve's connection goroutines (workers) and its parking lot.
type pool struct {
	// wg counts the workers and the parked connections (each from its
	// park until the lot hands it back), so that the drain waits for both.
	wg   sync.WaitGroup
	work chan job      // to a worker waiting for its next job
	stop chan struct{} // closed when Serve stops accepting: idle workers exit
	lot  *parkLot      // nil when parking is unavailable (not Linux, epoll failed)
	idle atomic.Int64  // workers waiting on work (see maxIdleWorkers)
}

// job is a worker's next connection: a newly accepted one (raw, start) or
// a parked line connection the lot hands back (resume).
type job struct {
	raw    net.Conn
	start  time.Time
	resume *conn
}

// run gives j to an idle worker, or to a new one. It does not block: it is
// called from the accept loop, the lot's goroutine and the drain.
func (s *Server) run(p *pool, j job) {
	select {
	case p.work <- j: // an idle worker takes it
	default:
		p.wg.Go(func() { s.worker(p, j) })
	}
}

// workerIdle is how long a connection goroutine that finished its
// connection waits for the next one before it exits.
const workerIdle = 10 * time.Second

// worker runs j, then the jobs run hands it on p.work, until it has waited
// workerIdle for one or p.stop is closed. Reusing the goroutine reuses its
// stack: a fresh goroutine's stack grows from 2 to 8 KiB during every
// connection's first deep calls, which cost about 7% of the CPU per
// connection by profile (runtime.newstack, copystack). At most
// maxIdleWorkers wait at once; a worker past it ends with its connection.
func (s *Server) worker(p *pool, j job) {
	s.workers.Add(1)
	s.started.Add(1)
	defer s.workers.Add(-1)
	var idle *time.Timer
	// The worker's connection state (~1.5 KiB with pointers), allocated
	// once and reused, unless a connection keeps it while parked.
	var c *conn
	for {
		if j.resume != nil {
			if ended := s.resume(j.resume); ended && c == nil {
				c = j.resume // its state is free now: keep it for the next
				*c = conn{}
			}
		} else {
			if c == nil {
				c = new(conn)
			}
			c.lot = p.lot
			if ended := s.handle(c, j.raw, j.start); ended {
				*c = conn{}
			} else {
				c = nil // parked: the lot has it
			}
		}
		if p.idle.Add(1) > maxIdleWorkers {
			p.idle.Add(-1)
			return // enough wait already: a burst's workers end with it
		}
		wait := time.Duration(s.workerIdle.Load())
		if idle == nil {
			idle = time.NewTimer(wait)
		} else {
			idle.Reset(wait)
		}
		select {
		case j = <-p.work:
			p.idle.Add(-1)
		case <-idle.C:
			p.idle.Add(-1)
			return
		case <-p.stop:
			p.idle.Add(-1)
			idle.Stop()
			return
		}
	}
}

// maxIdleWorkers bounds the workers waiting for a next job. A burst of
// clients that each held a worker (waiting for a first line) would
// otherwise leave one idle worker per client for workerIdle after they
// parked; past the bound a worker ends with its connection.
const maxIdleWorkers = maxGraceWaits

// drain closes idle HTTP connections, waits up to DrainTimeout for the
// other connections (parked line connections are open ones: the lot keeps
// serving them), then closes what is left and waits for their handlers.
func (s *Server) drain(p *pool) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	s.closeConns(p.lot, func(c *conn) bool { return c.state.CompareAndSwap(stateIdle, stateClosed) })
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	s.hardStop.Store(true)
	n := s.closeConns(p.lot, func(c *conn) bool { c.state.Store(stateClosed); return true })
	s.log.Warn("drain timeout: closed open connections", "count", n, "drain_timeout", s.cfg.DrainTimeout)
	<-done
}

// closeConns closes the tracked connections for which pick returns true.
// A parked one is taken out of lot first (pick has marked it closed, so it
// cannot park again), then closed and handed back to a worker, which ends
// it as its own goroutine would have: its read fails, and it publishes.
func (s *Server) closeConns(lot *parkLot, pick func(*conn) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if pick(c) {
			parked := lot != nil && lot.unpark(c)
			c.Conn.Close()
			if parked {
				lot.handBack(c)
			}
			n++
		}
	}
	return n
}

// refuseAtAccept closes a connection over MaxConns at once and publishes its
// event. It runs on the accept loop, so it does no I/O but the close.
func (s *Server) refuseAtAccept(raw net.Conn, start time.Time) {
	raw.Close()
	ev := event.New(start)
	peer, local := sockAddrs(raw)
	setAddrs(&ev, origin.Origin{Client: peer, Peer: peer, Server: local, Via: event.ViaDirect})
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason = event.ActionRefused, event.OutcomeFailure, reasonTooManyConns
	ev.Finish(time.Now())
	s.metrics.conn(ev.Event.Action, reasonTooManyConns, event.ViaDirect)
	s.log.Debug("connection refused", "reason", reasonTooManyConns, "peer", peer)
	s.cfg.Publisher.Publish(ev)
}

// track registers c so that the drain can close it.
func (s *Server) track(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// sockAddrs returns the socket's unmapped peer and local addresses.
func sockAddrs(c net.Conn) (peer, local netip.AddrPort) {
	return addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
}

func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

type classOnly struct{}

func (classOnly) Lookup(netip.Addr) geo.Location { return geo.Location{} }

type serveAll struct{}

func (serveAll) Decide(netip.Addr, geo.Location) policy.Decision {
	return policy.Decision{Decision: policy.Serve, Rule: "default", Lang: "en", Greeting: "Hello!"}
}

type noLimit struct{}

func (noLimit) Acquire(netip.Addr, time.Time) (netip.Prefix, func(), error) {
	return netip.Prefix{}, func() {}, nil
}
