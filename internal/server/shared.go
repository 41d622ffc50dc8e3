package server

import (
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
)

// The TCP data path's event and report builders, for the UDP server
// (internal/udp), so that a datagram's report and a flow's event say what a
// connection's would, key for key and field for field.

// FillEvent sets ev's addresses (o), location (loc) and decision (d) as the
// TCP data path does.
func FillEvent(ev *event.Event, o origin.Origin, loc *geo.Location, d *policy.Decision) {
	setAddrs(ev, o)
	setGeo(ev, loc)
	setDecision(ev, d)
}

// FillReport sets r to what the server tells the client it saw (see
// setReport); ev supplies the conn key (event.id).
func FillReport(r *report.Fields, ev *event.Event, o *origin.Origin, loc *geo.Location, d *policy.Decision) {
	setReport(r, ev, o, loc, d)
}

// Ending returns event.action, outcome and reason of an answered client by
// decision (served, redirect, denied:<rule>).
func Ending(d policy.Decision) (action, outcome, reason string) {
	e := decided(d)
	return e.action, e.outcome, e.reason
}

// NoLocation is the Locator a nil Config.Locator stands for: it places
// nothing.
func NoLocation() Locator { return classOnly{} }

// ServeAll is the Decider a nil Config.Decider stands for: everyone is
// served with the default greeting.
func ServeAll() Decider { return serveAll{} }
