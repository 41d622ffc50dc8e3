package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
)

// Reasons: event.reason values the server sets.
const (
	reasonServed        = "served"               // answered; the client or the keep-alive ended it
	reasonRedirect      = "redirect"             // answered with decision=redirect, then closed
	reasonDeniedPrefix  = "denied:"              // + the policy rule; answered with decision=deny, then closed
	reasonRateLimited   = "rate-limited"         // per-source limit; answered with decision=deny reason=rate-limited, then closed
	reasonTooManyConns  = "too-many-connections" // over --max-conns; closed at accept
	reasonEmpty         = "empty"                // closed by the client before any byte (TCP health check)
	reasonHealthCheck   = "health-check"         // PROXY v2 LOCAL or v1 UNKNOWN (NLB health check)
	reasonFirstBytes    = "first-bytes-timeout"  // no complete first line within --first-bytes-timeout
	reasonIdleTimeout   = "idle-timeout"         // line protocol: no line within --idle-timeout
	reasonLineTooLong   = "line-too-long"        // a line over --max-line
	reasonBadRequest    = "bad-request"          // the first HTTP request was malformed or too large
	reasonShutdown      = "shutdown"             // closed by the server at the end of the drain
	reasonIOError       = "io-error"             // read or write failed (reset...)
	reasonHeaderPrefix  = "proxy-header-"        // + origin.Kind: spoof, missing, malformed, crc, timeout, io
	reasonDeniedMetrics = "denied"               // metric label for every denied:<rule>
)

// ending is how a connection ended: its event.action, outcome and reason.
type ending struct {
	action, outcome, reason string
}

// handle is the life of one accepted connection, in the order of the data
// path: wait for the first byte, resolve the origin, locate, decide, read
// the first bytes, answer, publish. It owns raw and closes it; it
// publishes exactly one event, whatever happens. It returns true when the
// connection has ended, false when it was parked (see parkLot): before its
// first byte (awaitFirstByte; serve continues it), or by the line
// protocol's echo loop (resumeLine continues it). Then the connection is no
// longer handle's; the worker the lot hands it to ends it (finish: close
// and publish).
//
// The event and the report live in c, on the heap, not in handle's frame:
// the goroutine's stack stays small (a frame of kilobytes here made every
// connection grow its stack on its first deep call, and kept an idle one's
// stack large). c is the worker's, zero but for c.lot on entry, and reused
// for its next connection once handle has returned true (nothing keeps a
// reference to it: the event is published by value).
func (s *Server) handle(c *conn, raw net.Conn, start time.Time) (ended bool) {
	c.Conn = raw
	newEvent(&c.ev, start)
	s.track(c)

	// 0. Wait for the client's first byte (or EOF), parked without a
	// goroutine once that takes longer than parkAfter.
	if s.awaitFirstByte(c) {
		return false
	}
	return s.serve(c)
}

// serve is the data path from the first byte on (steps 1 to 6): handle's
// rest, or a connection parked before its first byte, continued by the
// worker the lot hands it to. It returns what handle returns.
func (s *Server) serve(c *conn) (ended bool) {
	raw := c.Conn
	start := c.ev.Event.Start
	ev := &c.ev
	var end ending
	parked := false
	defer func() {
		if !parked {
			s.finish(c, end)
		}
	}()

	// 1. Who is the client: the socket peer, or a PROXY header from a peer
	// the mode trusts.
	o := &c.o
	var rc net.Conn
	var err error
	*o, rc, err = s.resolve(c)
	if err != nil {
		peer, local := sockAddrs(raw)
		*o = origin.Origin{Client: peer, Peer: peer, Server: local, Via: event.ViaDirect}
	}
	setAddrs(ev, *o)
	client := o.Client.Addr()

	// 2. Where is it.
	loc := s.cfg.Locator.Lookup(client)
	setGeo(ev, &loc)
	if err != nil {
		end = s.originFailed(err)
		refuse(c, raw, o.Peer.String(), err)
		return true
	}

	// 3. May it connect now, and what do the rules say. Over a per-source
	// limit the client is denied like a deny rule: the report says so
	// (reason=rate-limited), no greeting, then close. A LOCAL connection
	// (health check) counts as the socket peer's: Client is the peer.
	d := s.cfg.Decider.Decide(client, loc)
	key, release, err := s.cfg.Limiter.Acquire(client, start)
	ev.ClientIP.LimitPrefix = key
	if err != nil {
		d = rateLimited(d)
	} else {
		c.release = release // finish calls it
	}
	setDecision(ev, &d)

	// Relay mode: forward to the upstream instead of answering.
	if s.cfg.Relay != nil {
		end = s.relay(c, rc, o, &loc, &d)
		return true
	}

	// 4. What does it speak: wait for the first bytes (the client speaks
	// first) and sniff HTTP from the first line. finish gives c.br back.
	br := s.readers.Get().(*bufio.Reader)
	c.lr = limitedReader{r: rc, n: noLimit64}
	br.Reset(&c.lr)
	c.br = br
	raw.SetDeadline(s.firstBytesDeadline(c))
	proto, err := sniff(br)
	if o.Local && br.Buffered() > 0 {
		// Payload after a LOCAL header: not a health check of the proxy
		// but the peer's own connection (client, decision and limit are
		// the peer's already).
		o.Local, o.Via = false, event.ViaDirect
		ev.ClientIP.Via = o.Via
	}
	if err != nil {
		switch {
		case o.Local:
			end = ending{event.ActionClosed, event.OutcomeSuccess, reasonHealthCheck}
		case !s.hardStop.Load() && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
			// Closed (or reset, as many health checkers do) before any
			// payload byte.
			end = ending{event.ActionClosed, event.OutcomeUnknown, reasonEmpty}
		default:
			end = s.readFailed(err, true)
		}
		return true
	}
	ev.Network.Protocol = proto

	// 5. Answer. The line protocol may park the connection while it waits
	// for the client's next line.
	setReport(&c.rep, ev, o, &loc, &d)
	markIgnoredHeader(&c.rep, br)
	if proto == event.ProtocolHTTP {
		end = s.serveHTTP(c, br, httpReport(&c.rep), d)
	} else {
		end, parked = s.serveLine(c, &c.rep, d)
	}
	return !parked
}

// finish ends c (step 6 of the data path): it gives back the reader and
// the per-source slot, closes the socket, stops tracking c, publishes its
// event and counts it closed. It runs once per connection, on the goroutine
// that ended it: handle's, or the one that continued it after a park
// (resumeLine).
func (s *Server) finish(c *conn, end ending) {
	if c.br != nil {
		c.br.Reset(nil)
		s.readers.Put(c.br)
		c.br = nil
	}
	if c.release != nil {
		c.release()
		c.release = nil
	}
	c.Conn.Close()
	s.untrack(c)
	s.publish(&c.ev, c, c.o, end)
	s.open.Add(-1)
	s.metrics.open.Dec()
}

// newEvent sets *ev to a new event. It is not inlined so that the Event
// value event.New returns is built in this short-lived frame, not in
// handle's.
//
//go:noinline
func newEvent(ev *event.Event, start time.Time) { *ev = event.New(start) }

// publish completes ev with how the connection ended and hands it to the
// publisher (step 6 of the data path).
func (s *Server) publish(ev *event.Event, c *conn, o origin.Origin, end ending) {
	if o.Local {
		// A load balancer health check, however it ended: not a client.
		end = ending{event.ActionClosed, event.OutcomeSuccess, reasonHealthCheck}
	}
	ev.Event.Action, ev.Event.Outcome, ev.Event.Reason = end.action, end.outcome, end.reason
	ev.Source.Bytes, ev.Destination.Bytes = c.in, c.out
	ev.Finish(time.Now())
	label := end.reason
	if len(label) > len(reasonDeniedPrefix) && label[:len(reasonDeniedPrefix)] == reasonDeniedPrefix {
		label = reasonDeniedMetrics
	}
	s.metrics.conn(end.action, label, ev.ClientIP.Via)
	level := slog.LevelDebug
	if end.action == event.ActionRefused && end.reason != reasonFirstBytes && end.reason != reasonTooManyConns {
		// Header errors and spoof attempts are worth an operator's eye;
		// timeouts and the limit are counted, not logged above debug.
		level = slog.LevelInfo
	}
	if s.log.Enabled(context.Background(), level) {
		s.logConn(level, ev, c, &o, end)
	}
	s.cfg.Publisher.Publish(*ev)
}

// logConn logs an ended connection. Not inlined: its arguments for slog
// would take a kilobyte of publish's frame, on the stack under every
// Publish, for a line that is usually disabled.
//
//go:noinline
func (s *Server) logConn(level slog.Level, ev *event.Event, c *conn, o *origin.Origin, end ending) {
	s.log.Log(context.Background(), level, "connection", "event.id", ev.Event.ID,
		"action", end.action, "reason", end.reason, "client", o.Client, "peer", o.Peer, "via", o.Via,
		"bytes_in", c.in, "bytes_out", c.out, "duration", time.Duration(ev.Event.Duration))
}

// originFailed maps a Resolve error to the connection's ending.
func (s *Server) originFailed(err error) ending {
	kind := origin.Kind(err)
	s.metrics.headerError(kind)
	if kind == "empty" {
		return ending{event.ActionClosed, event.OutcomeUnknown, reasonEmpty}
	}
	return ending{event.ActionRefused, event.OutcomeFailure, reasonHeaderPrefix + kind}
}

// readFailed maps a read error to the connection's ending. first is true
// before the client's first line has been answered.
func (s *Server) readFailed(err error, first bool) ending {
	switch {
	case s.hardStop.Load():
		return ending{event.ActionClosed, event.OutcomeUnknown, reasonShutdown}
	case errors.Is(err, errLineTooLong) && first:
		return ending{event.ActionRefused, event.OutcomeFailure, reasonLineTooLong}
	case errors.Is(err, errLineTooLong):
		return ending{event.ActionClosed, event.OutcomeFailure, reasonLineTooLong}
	case errors.Is(err, os.ErrDeadlineExceeded) && first:
		return ending{event.ActionRefused, event.OutcomeFailure, reasonFirstBytes}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ending{event.ActionClosed, event.OutcomeSuccess, reasonIdleTimeout}
	case errors.Is(err, io.EOF) && first:
		return ending{event.ActionClosed, event.OutcomeUnknown, reasonEmpty}
	case errors.Is(err, io.EOF):
		return ending{event.ActionClosed, event.OutcomeSuccess, reasonServed}
	case first:
		return ending{event.ActionRefused, event.OutcomeFailure, reasonIOError}
	}
	return ending{event.ActionClosed, event.OutcomeFailure, reasonIOError}
}

// ruleRateLimited is the rule a per-source limit denial reports.
const ruleRateLimited = "per-source-limit"

// rateLimited turns the rules' decision into a denial by the per-source
// limit, keeping what the rules found of the client (jurisdiction, region,
// language).
func rateLimited(d policy.Decision) policy.Decision {
	d.Decision, d.Rule, d.Reason, d.Greeting = policy.Deny, ruleRateLimited, reasonRateLimited, ""
	return d
}

// decided is the ending of an answered connection, by decision.
func decided(d policy.Decision) ending {
	if d.Decision == policy.Deny && d.Rule == ruleRateLimited {
		return ending{event.ActionDenied, event.OutcomeFailure, reasonRateLimited}
	}
	switch d.Decision {
	case policy.Deny:
		return ending{event.ActionDenied, event.OutcomeFailure, reasonDeniedPrefix + d.Rule}
	case policy.Redirect:
		return ending{event.ActionClosed, event.OutcomeSuccess, reasonRedirect}
	}
	return ending{event.ActionClosed, event.OutcomeSuccess, reasonServed}
}

func setAddrs(ev *event.Event, o origin.Origin) {
	ev.Source.IP, ev.Source.Port = o.Client.Addr(), o.Client.Port()
	ev.Destination.IP, ev.Destination.Port = o.Server.Addr(), o.Server.Port()
	ev.ClientIP.Via = o.Via
	ev.ClientIP.Peer = event.Peer{IP: o.Peer.Addr(), Port: o.Peer.Port()}
	ev.ClientIP.VPCEID = o.VPCEID
	if o.Client.Addr().Is4() {
		ev.Network.Type = "ipv4"
	} else {
		ev.Network.Type = "ipv6"
	}
}

// setGeo and setDecision assign field by field: a composite literal here
// would be a temporary in handle's frame.
func setGeo(ev *event.Event, loc *geo.Location) {
	g := &ev.Source.Geo
	g.CountryISOCode, g.CountryName, g.ContinentCode = loc.CountryISO, loc.CountryName, loc.ContinentCode
	g.RegionISOCode, g.RegionName, g.CityName = loc.RegionISO, loc.RegionName, loc.City
	g.Timezone, g.Class, g.Location = loc.TimeZone, loc.Class, nil
	g.Error, g.LocationInvalid = loc.Error, loc.LocationInvalid
	if loc.HasLocation {
		g.Location = &event.Location{Lat: loc.Lat, Lon: loc.Lon}
	}
	ev.Source.AS.Number = loc.ASN
	ev.Source.AS.Organization.Name = loc.ASOrg
}

func setDecision(ev *event.Event, d *policy.Decision) {
	r := &ev.Residency
	r.Jurisdiction, r.Decision, r.Region, r.Rule = d.Jurisdiction, d.Decision, d.Region, d.Rule
	ev.App.Lang = d.Lang
}

// httpReport is r as a map for the HTTP answer; not inlined, so that its
// temporaries stay out of handle's frame.
//
//go:noinline
func httpReport(r *report.Fields) report.Report { return r.Report() }

// setReport sets r to what the server tells the client it saw. It is built
// as report.Fields, not a report.Report map: the line protocol writes it
// with no allocation beyond its strings; HTTP takes its map. (Pointers, not
// values: handle's frame would hold copies of all four.)
func setReport(r *report.Fields, ev *event.Event, o *origin.Origin, loc *geo.Location, d *policy.Decision) {
	*r = report.Fields{
		Client:       o.Client.String(),
		Via:          o.Via,
		Peer:         o.Peer.String(),
		Server:       o.Server.String(),
		Conn:         ev.Event.ID,
		Country:      loc.CountryISO,
		City:         loc.City,
		Class:        loc.Class,
		Jurisdiction: d.Jurisdiction,
		Decision:     d.Decision,
		Region:       d.Region,
		Rule:         d.Rule,
		Lang:         d.Lang,
		Reason:       d.Reason,
	}
	if loc.HasLocation {
		r.Lat = strconv.FormatFloat(loc.Lat, 'f', -1, 64)
		r.Lon = strconv.FormatFloat(loc.Lon, 'f', -1, 64)
	}
	if loc.ASN != 0 {
		r.ASN = strconv.FormatUint(uint64(loc.ASN), 10)
	}
	if loc.Error != "" {
		r.Geo = report.GeoError
	}
}
