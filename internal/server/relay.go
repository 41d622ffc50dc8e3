package server

import (
	"context"
	"io"
	"net"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/relay"
)

// Reasons of relayed connections (event.reason); relay.end says the same
// in the relay group.
const (
	reasonUpstreamRefused     = relay.EndUpstreamRefused     // nothing listens on the upstream port
	reasonUpstreamUnreachable = relay.EndUpstreamUnreachable // no answer, no route, no transparent socket
)

// relay is step 5 of the data path in relay mode (--upstream): instead of
// answering, forward the connection to the upstream, bytes unchanged both
// ways (the PROXY header, already read by Resolve, is not forwarded). A
// denied client is closed without contacting the upstream. The upstream is
// dialled as soon as the client is decided: with no PROXY header expected
// that is at accept, so protocols where the server speaks first work. It
// blocks until both directions have ended, and returns the ending; the
// caller closes the client's connection.
func (s *Server) relay(c *conn, rc net.Conn, o *origin.Origin, loc *geo.Location, d *policy.Decision) ending {
	ev := &c.ev
	up := s.cfg.Relay.Upstream(o.Client.Addr())
	ev.Relay = event.Relay{Upstream: event.Peer{IP: up.Addr(), Port: up.Port()}, Mode: s.cfg.Relay.Mode().String()}
	if o.Local {
		return ending{event.ActionClosed, event.OutcomeSuccess, reasonHealthCheck}
	}
	if d.Decision == policy.Deny {
		ev.Relay.End = relay.EndDenied
		return decided(*d)
	}
	client, ok := c.Conn.(*net.TCPConn)
	if !ok {
		// Only a TCP listener can be relayed (the splice path and CloseWrite
		// need the socket itself).
		return ending{event.ActionRefused, event.OutcomeFailure, reasonIOError}
	}
	// Bytes Resolve read past the PROXY header go first; then the socket
	// itself is copied, so that io.Copy splices.
	var pending []byte
	if oc, ok := rc.(*origin.Conn); ok && oc.Buffered() > 0 {
		pending = make([]byte, oc.Buffered())
		io.ReadFull(oc, pending) // returns the buffered bytes without blocking
	}
	uc, err := s.cfg.Relay.Dial(context.Background(), o.Client, o.Server,
		relay.Meta{Country: loc.CountryISO, Region: d.Region, Decision: d.Decision, ASN: loc.ASN})
	if err != nil {
		ev.Relay.End = relay.DialEnd(err)
		s.metrics.upstreamError(ev.Relay.End)
		// publish logs the refusal (with the reason) at info; the cause,
		// once per connection, only at debug: an upstream that is down
		// must not flood the log (the metric counts it).
		s.log.Debug("upstream dial failed", "event.id", ev.Event.ID, "upstream", up, "client", o.Client, "err", err)
		return ending{event.ActionRefused, event.OutcomeFailure, ev.Relay.End}
	}
	defer uc.Close()
	res := relay.Forward(client, pending, uc, s.cfg.IdleTimeout)
	// c counted the header and the pending bytes when Resolve read them.
	c.in += res.FromClient - int64(len(pending))
	c.out += res.ToClient
	ev.Relay.End = res.End
	switch {
	case s.hardStop.Load():
		// The drain closed the client: that ended both directions, not
		// the client or the upstream.
		ev.Relay.End = relay.EndShutdown
		return ending{event.ActionClosed, event.OutcomeUnknown, reasonShutdown}
	case res.Err != nil && res.End != relay.EndIdleTimeout:
		return ending{event.ActionClosed, event.OutcomeFailure, res.End}
	}
	return ending{event.ActionClosed, event.OutcomeSuccess, res.End}
}
