package server

import (
	"net"
	"time"

	"github.com/originlens/originlens/internal/origin"
)

// firstReader is what a Resolver may tell of its first read (see
// [origin.Resolver.FirstRead] and ResolveBy), so that the server can wait
// for a client's first byte before Resolve starts, with no goroutine, and
// keep the header deadline the read would have had. A Resolver without
// these methods is called at once, on the connection's goroutine.
type firstReader interface {
	FirstRead() (timeout time.Duration, reads bool)
	ResolveBy(conn net.Conn, deadline time.Time) (origin.Origin, net.Conn, error)
}

// awaitFirstByte is step 0 of the data path: it returns false once c's
// first byte (or EOF, a reset) is readable, without reading it, or when c
// must not wait here, and true when it parked c (c is then the lot's:
// serve continues it on the worker the lot hands it to).
//
// It fixes the deadline of c's first read (c.firstBy): the PROXY header's
// when the Resolver reads one, else the first bytes'. A silent client
// waits on this goroutine for parkAfter at most (not at all when
// maxGraceWaits goroutines already wait), then parks with that deadline:
// the lot hands it back when a byte or EOF arrives, at the deadline (the
// read then fails at once, with today's timeout reason) or at the drain
// (closed: the read fails as today's would).
//
// It does not wait when there is no lot, when the Resolver cannot say what
// it reads, or in relay mode without a PROXY header to read: the upstream
// is dialled at accept there, for protocols where the server speaks first.
func (s *Server) awaitFirstByte(c *conn) (parked bool) {
	if c.lot == nil {
		return false
	}
	fr, ok := s.cfg.Resolver.(firstReader)
	if !ok {
		return false
	}
	timeout, header := fr.FirstRead()
	if !header {
		if s.cfg.Relay != nil {
			return false
		}
		timeout = s.cfg.FirstBytesTimeout
	}
	now := time.Now()
	c.firstBy, c.headerFirst = now.Add(timeout), header
	grace := now.Add(time.Duration(s.parkAfter.Load()))
	if !grace.Before(c.firstBy) {
		return false
	}
	if s.graceWaits.Add(1) <= maxGraceWaits {
		// Usually the bytes are there, or come within the grace.
		if readable(c, grace) {
			s.graceWaits.Add(-1)
			return false
		}
	}
	s.graceWaits.Add(-1)
	c.deadline, c.silent = c.firstBy, true
	if c.lot.park(c) {
		return true
	}
	c.silent = false
	return false
}

// resolve is step 1's read: Resolve, with the deadline awaitFirstByte
// fixed when it did.
func (s *Server) resolve(c *conn) (origin.Origin, net.Conn, error) {
	if c.headerFirst {
		return s.cfg.Resolver.(firstReader).ResolveBy(c, c.firstBy)
	}
	return s.cfg.Resolver.Resolve(c)
}

// firstBytesDeadline is the deadline of the wait for the first line:
// FirstBytesTimeout from now, or the one awaitFirstByte fixed when the
// first bytes were the first read.
func (s *Server) firstBytesDeadline(c *conn) time.Time {
	if !c.firstBy.IsZero() && !c.headerFirst {
		return c.firstBy
	}
	return time.Now().Add(s.cfg.FirstBytesTimeout)
}

// resume continues a connection the lot (or the drain) handed back, on
// the worker it was handed to: from step 1 when it parked before its first
// byte, else the echo loop where it parked. It returns true when the
// connection has ended, false when it parked again.
func (s *Server) resume(c *conn) (ended bool) {
	if c.silent {
		c.silent, c.woken = false, false
		return s.serve(c)
	}
	return s.resumeLine(c)
}
