// Package udp is the app's UDP service: every datagram gets one reply
// datagram holding the same report line as the TCP line protocol (same
// keys, via, rules and decision), then the greeting unless the client is
// denied or redirected; the datagrams between one client address and port
// and one server address and port (on one path: direct, or through one
// trusted proxy) form a flow, published as one event when
// it has been idle for the idle timeout, when the flow table is full and
// it is evicted, or at shutdown.
//
// # Datagrams
//
// The first line of a datagram's payload is the probe line: it is echoed
// in the reply (key probe, at most [MaxProbeEcho] bytes); the rest of the
// payload is ignored, so that a client can pad its datagram. A PROXY
// protocol v2 header in front of the payload is honoured from the sources
// the --proxy-protocol mode trusts (see [origin.Resolver.ResolveDatagram]);
// a datagram the mode refuses (a header from an untrusted source, none in
// required mode, a malformed one) is dropped and counted, without reply.
//
// # Not an amplifier
//
// A reply is never longer than 3 times the payload of the datagram that
// caused it (QUIC's rule before address validation, RFC 9000 section 8),
// unless the flow has proven that its source receives replies: every reply
// carries the flow's random token (key token) and a later datagram of the
// same flow whose probe line holds token=<that value> proves it. A reply
// over the bound is cut at a key boundary, the greeting dropped, and ends
// in truncated=1; a datagram too short for even that gets no reply.
// Replies are also
// limited per source address (an IPv6 source counts as its /64) by the
// Limiter's token bucket: a datagram over the limit gets no reply, counted
// in the metrics and in its flow's event (flow.rate_limited).
//
// # Flows per source
//
// A flow is cheap to open: a new source port makes one. So a source (an
// address, or an IPv6 /64: the prefix the reply limit counts) holds at most
// MaxFlowsPerSource flows; a datagram that would open one more gets no reply
// and opens no flow, counted (flow-limit), as conntrack's connlimit or an
// nftables meter drop a connection over a per-source count. The datagram is
// not folded into one of the source's flows: that flow's report would name
// another port, its address proof would cover other addresses of the
// prefix, and the event would need a field for the folded ports. A
// datagram over the reply limit opens no flow either, so new flows (and
// with them evictions and events) come no faster than the limit's rate. A
// full table makes room by evicting the least recently seen flow of the
// source holding the most flows, or the new flow's own source's when it
// holds as many as any: a source takes flows only from sources holding
// more, a churning source loses its own flows first. Among sources of one
// flow each, the oldest flow that has seen one datagram and not proven its
// source goes first (conntrack's early drop: a spoofed flood replaces its
// own flows), then the least recently seen. Sources sit in buckets by
// their number of flows and one-datagram flows in a list of their own, so
// each of these steps takes constant time.
//
// # No reply loops
//
// A server that answers every datagram can be made to answer another one
// forever: a single datagram spoofed from one to the other, and each answers
// the other's replies (the Loop DoS of CVE-2024-2169). So no reply is ever
// empty, a datagram that begins like a reply (client= or truncated=) is not
// answered, nor one from a port below 1024 (chargen, daytime, echo: services
// that answer anything) of a direct peer; all counted.
//
// # Addresses
//
// A reply leaves from the address the client sent to (IP_PKTINFO and
// IPV6_PKTINFO, read from and written to the control messages), so that a
// host with several addresses bound to 0.0.0.0 answers from the right one
// and NAT on the way back recognises the reply.
package udp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Resolver learns a datagram's origin and payload (see
// [origin.Resolver.ResolveDatagram]). It must be safe for concurrent use.
type Resolver interface {
	ResolveDatagram(peer, local netip.AddrPort, d []byte) (origin.Origin, []byte, error)
}

// Defaults for the zero values of [Config].
const (
	DefaultIdleTimeout = 30 * time.Second // Global Accelerator's UDP idle timeout
	// DefaultMaxFlows bounds the flow table: a flow costs about 1.7 KiB
	// (its event, report line and counters), so about 27 MiB at the bound.
	DefaultMaxFlows = 16384
	// DefaultMaxFlowsPerSource bounds the flows of one source (one
	// address, or one IPv6 /64): a game or voice client holds a few, a
	// NAT gateway or an nc-probe -c 32 run a few dozen.
	DefaultMaxFlowsPerSource = 64
	// Amplification is the reply-to-request byte ratio allowed before a
	// flow has proven that its source receives replies.
	Amplification = 3
	// MaxProbeEcho bounds the probe line echoed in a reply.
	MaxProbeEcho = 256
	// maxDatagram is the largest UDP payload over IPv4 or IPv6 without
	// jumbograms.
	maxDatagram = 65535
)

// Config configures a [Server]. Resolver and Publisher are required; a nil
// Locator places nothing, a nil Decider serves everyone, a nil Limiter does
// not limit replies. The interfaces are internal/server's: the same
// components serve TCP and UDP.
type Config struct {
	Resolver  Resolver
	Locator   server.Locator
	Decider   server.Decider
	Limiter   server.Limiter // per-source replies: one Acquire per reply, released at once
	Publisher server.Publisher

	IdleTimeout time.Duration // a flow idle this long is published; default 30s
	MaxFlows    int           // flows tracked at once; default DefaultMaxFlows
	// MaxFlowsPerSource bounds the flows of one source (a client prefix of
	// PrefixV4 or PrefixV6 bits, as internal/limit counts sources); a
	// datagram that would open one more gets no reply, counted
	// (flow-limit). Default DefaultMaxFlowsPerSource; one of MaxFlows or
	// more caps nothing (a full table evicts the source's oldest flow).
	MaxFlowsPerSource int
	PrefixV4          int // default 32 (limit.DefaultPrefixV4)
	PrefixV6          int // default 64 (limit.DefaultPrefixV6)
	Readers           int // goroutines reading the socket; default min(GOMAXPROCS, 4)

	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
}

// Server answers datagrams and tracks flows. Its methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	flows   flowTable
}

// New checks cfg, fills in defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("udp: Config.Resolver is required")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("udp: Config.Publisher is required")
	}
	if cfg.Locator == nil {
		cfg.Locator = server.NoLocation()
	}
	if cfg.Decider == nil {
		cfg.Decider = server.ServeAll()
	}
	if cfg.IdleTimeout < 0 || cfg.MaxFlows < 0 || cfg.MaxFlowsPerSource < 0 || cfg.Readers < 0 {
		return nil, fmt.Errorf("udp: IdleTimeout, MaxFlows, MaxFlowsPerSource and Readers must not be negative, got %v, %d, %d, %d",
			cfg.IdleTimeout, cfg.MaxFlows, cfg.MaxFlowsPerSource, cfg.Readers)
	}
	if cfg.PrefixV4 < 0 || cfg.PrefixV4 > 32 || cfg.PrefixV6 < 0 || cfg.PrefixV6 > 128 {
		return nil, fmt.Errorf("udp: PrefixV4 must be 1-32 and PrefixV6 1-128 (0: the default), got %d and %d", cfg.PrefixV4, cfg.PrefixV6)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.MaxFlowsPerSource == 0 {
		cfg.MaxFlowsPerSource = DefaultMaxFlowsPerSource
	}
	if cfg.PrefixV4 == 0 {
		cfg.PrefixV4 = limit.DefaultPrefixV4
	}
	if cfg.PrefixV6 == 0 {
		cfg.PrefixV6 = limit.DefaultPrefixV6
	}
	if cfg.Readers == 0 {
		cfg.Readers = min(runtime.GOMAXPROCS(0), 4)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: m}
	s.flows.init(cfg.MaxFlows, cfg.MaxFlowsPerSource, cfg.PrefixV4, cfg.PrefixV6)
	return s, nil
}

// Listen opens a UDP socket on addr ("host:port"; an empty or wildcard
// host listens on every address, IPv4 and IPv6) with the destination
// address of every datagram reported, as [Server.Serve] needs.
func Listen(ctx context.Context, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: controlPktinfo}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp: listening: %w", err)
	}
	return pc.(*net.UDPConn), nil
}

// Flows returns the number of flows tracked now.
func (s *Server) Flows() int { return s.flows.len() }

// Serve answers the datagrams arriving on conn until ctx is done or reading
// fails for good, then stops: it stops reading, publishes every open flow
// (flow.end "shutdown") and closes conn. Serve blocks; it returns nil after
// a stop that ctx started, otherwise the read error. Flows idle for
// IdleTimeout are published while it runs. conn should come from [Listen];
// Serve enables the destination address reports on it too.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	defer conn.Close()
	sock, err := newSocket(conn)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		// Wake the readers; they see ctx done and return.
		conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()

	var wg sync.WaitGroup
	errs := make(chan error, s.cfg.Readers)
	for range s.cfg.Readers {
		wg.Go(func() {
			if err := s.read(ctx, sock); err != nil {
				errs <- err
				conn.SetReadDeadline(time.Unix(1, 0)) // stop the other readers
			}
		})
	}
	sweepDone := make(chan struct{})
	sweepStop := make(chan struct{})
	go func() {
		defer close(sweepDone)
		s.sweep(sweepStop)
	}()
	wg.Wait()
	close(sweepStop)
	<-sweepDone
	close(errs)
	n := s.publishAll(endShutdown)
	s.log.Info("udp stopped", "flows_published", n)
	return <-errs // nil when no reader failed
}

// read is one reader: it answers datagrams until ctx is done (nil) or the
// socket fails (the error).
func (s *Server) read(ctx context.Context, sock *socket) error {
	buf := make([]byte, maxDatagram)
	oob := make([]byte, oobSize)
	reply := make([]byte, 0, 2048)
	var backoff time.Duration
	for {
		n, oobn, _, peer, err := sock.conn.ReadMsgUDPAddrPort(buf, oob)
		if err == nil {
			backoff = 0
		} else {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil // another reader failed and stopped us
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("udp: reading: %w", err)
			}
			// A transient error (an ICMP error reported on the socket,
			// ENOBUFS): count it and go on; back off when it repeats,
			// rather than spin.
			s.metrics.datagram(resultReadError)
			if backoff > 0 {
				time.Sleep(backoff)
			}
			backoff = min(max(2*backoff, time.Millisecond), time.Second)
			continue
		}
		reply = s.handle(sock, buf[:n], oob[:oobn], peer, reply[:0])
	}
}

// handle answers one datagram d from peer, with control messages oob, and
// returns the reply buffer for reuse.
func (s *Server) handle(sock *socket, d, oob []byte, peer netip.AddrPort, reply []byte) []byte {
	reply, f := s.answer(sock, d, oob, peer, time.Now(), reply)
	if f == nil {
		return reply
	}
	defer s.flows.done(s, f)
	if _, _, err := sock.conn.WriteMsgUDPAddrPort(reply, f.oob, peer); err != nil {
		s.metrics.datagram(resultWriteError)
		s.log.Debug("udp reply failed", "peer", peer, "err", err)
		return reply
	}
	f.outPackets.Add(1)
	f.outBytes.Add(int64(len(reply)))
	s.metrics.bytesOut.Add(float64(len(reply)))
	s.metrics.datagram(resultAnswered)
	return reply
}

// answer is the datagram path up to the write: resolve the origin, find
// or start the flow, apply the per-source limit, build the reply in
// reply[:0] within the amplification bound. It returns the reply and its
// flow, or a nil flow when the datagram gets no reply (dropped, counted).
// It does no I/O. The caller must call s.flows.done with a flow returned
// once it has accounted for the reply.
func (s *Server) answer(sock *socket, d, oob []byte, peer netip.AddrPort, now time.Time, reply []byte) ([]byte, *flow) {
	s.metrics.bytesIn.Add(float64(len(d)))
	dst := sock.destination(oob)
	o, payload, err := s.cfg.Resolver.ResolveDatagram(peer, dst, d)
	if err != nil {
		s.metrics.datagram(resultProxyPrefix + origin.Kind(err))
		s.log.Debug("udp datagram dropped", "peer", peer, "err", err)
		return reply, nil
	}
	if o.Local {
		s.metrics.datagram(resultHealthCheck)
		return reply, nil
	}
	if loopPartner(o, payload) {
		s.metrics.datagram(resultLoop)
		return reply, nil
	}
	line := firstLine(payload)
	f, acquired, result := s.flows.touch(s, sock, o, dst, now, len(d), line)
	if f == nil {
		s.metrics.datagram(result)
		return reply, nil
	}
	if !acquired && !s.acquire(o.Client.Addr(), now) {
		f.rateLimited.Add(1)
		s.metrics.datagram(resultRateLimited)
		s.flows.done(s, f)
		return reply, nil
	}

	reply = append(reply, f.line...)
	if report.HasProxySignature(payload) {
		// A PROXY header read as data (mode off, or a second header): the
		// TCP report's key says so.
		reply = report.AppendPair(reply, report.KeyProxy, report.ProxyIgnored)
	}
	if len(line) > 0 {
		reply = report.AppendPair(reply, report.KeyProbe, string(line[:min(len(line), MaxProbeEcho)]))
	}
	lineLen := len(reply)
	reply = append(reply, '\n')
	if f.d.Decision == policy.Serve || f.d.Decision == "" {
		reply = append(reply, f.d.Greeting...)
		reply = append(reply, '\n')
	}
	if budget := Amplification * len(payload); !f.proven.Load() && len(reply) > budget {
		reply = report.Cut(reply[:lineLen], budget)
		f.truncated.Add(1)
		s.metrics.truncated.Inc()
		if len(reply) == 0 {
			s.metrics.datagram(resultTooShort)
			s.flows.done(s, f)
			return reply, nil
		}
		reply = append(reply, '\n')
	}
	return reply, f
}

// acquire reports whether the per-source reply limit admits a reply to
// client at now.
func (s *Server) acquire(client netip.Addr, now time.Time) bool {
	if s.cfg.Limiter == nil {
		return true
	}
	_, release, err := s.cfg.Limiter.Acquire(client, now)
	if err != nil {
		return false
	}
	release()
	return true
}

// minClientPort is the lowest source port answered from a direct peer:
// clients send from ephemeral ports, services that answer any datagram
// (echo 7, daytime 13, chargen 19, time 37) from well-known ones.
const minClientPort = 1024

// loopPartner reports whether the datagram with origin o and payload is to
// go unanswered so that no reply loop can start: a reply of a server like
// this one (a report line, or a cut one), or a direct peer's datagram from
// a port below minClientPort.
func loopPartner(o origin.Origin, payload []byte) bool {
	if o.Via == event.ViaDirect && o.Peer.Port() < minClientPort {
		return true
	}
	return bytes.HasPrefix(payload, []byte(report.KeyClient+"=")) || bytes.HasPrefix(payload, []byte(report.KeyTruncated+"="))
}

// firstLine returns payload's first line without its line ending.
func firstLine(payload []byte) []byte {
	if i := bytes.IndexByte(payload, '\n'); i >= 0 {
		payload = payload[:i]
	}
	return bytes.TrimSuffix(payload, []byte{'\r'})
}

// newToken returns a flow's address-validation token: 8 random bytes in
// hex.
func newToken() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// buildFlow makes a new flow for origin o, locating and deciding its
// client once for the flow's life: a rules reload (SIGHUP) applies to
// flows that start after it.
func (s *Server) buildFlow(sock *socket, o origin.Origin, dst netip.AddrPort, now time.Time) *flow {
	f := &flow{key: keyOf(o), first: now, last: now, token: newToken()}
	f.ev = event.New(now)
	loc := s.cfg.Locator.Lookup(o.Client.Addr())
	f.d = s.cfg.Decider.Decide(o.Client.Addr(), loc)
	server.FillEvent(&f.ev, o, &loc, &f.d)
	f.ev.Network.Transport, f.ev.Network.Protocol = event.TransportUDP, event.ProtocolLine
	var rep report.Fields
	server.FillReport(&rep, &f.ev, &o, &loc, &f.d)
	f.line = rep.AppendLine(make([]byte, 0, 320))
	f.line = report.AppendPair(f.line, report.KeyToken, f.token)
	f.proof = []byte(report.KeyToken + "=" + f.token)
	f.oob = sock.pktinfo(dst.Addr())
	return f
}

// publish completes f's event and hands it to the publisher.
func (s *Server) publish(f *flow, end string) {
	ev := &f.ev
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason = server.Ending(f.d)
	ev.Source.Bytes, ev.Source.Packets = f.inBytes, f.inPackets
	ev.Destination.Bytes, ev.Destination.Packets = f.outBytes.Load(), f.outPackets.Load()
	ev.Flow = event.Flow{FirstSeen: f.first, LastSeen: f.last, End: end, RateLimited: f.rateLimited.Load(), Truncated: f.truncated.Load()}
	ev.Finish(f.last)
	s.metrics.flowEnded(end)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("udp flow", "event.id", ev.Event.ID, "client", f.key.client, "server", f.key.server,
			"end", end, "packets_in", ev.Source.Packets, "packets_out", ev.Destination.Packets)
	}
	s.cfg.Publisher.Publish(*ev)
}
