// Package event defines the connection event: the one record that cmd/app
// publishes per connection, Kafka carries, cmd/ingest indexes and the
// OpenSearch index template maps. Field names follow the Elastic Common
// Schema (ECS) and are encoded as nested JSON objects ("source": {"ip": ...}).
//
// The event is the contract between every part of originlens: a field added
// here must be added to the index template (deploy/opensearch) in the same
// change, because the template is dynamic: strict.
package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// SchemaVersion is the version of the event's JSON shape. It travels in the
// Kafka header "schema-version" so that consumers can refuse shapes they do
// not know.
const SchemaVersion = "1"

// HeaderSchemaVersion is the Kafka record header that carries [SchemaVersion].
const HeaderSchemaVersion = "schema-version"

// Actions: event.action values. Every accepted connection ends with exactly
// one of them.
const (
	// ActionClosed: the connection was served (or redirected) and closed.
	ActionClosed = "connection-closed"
	// ActionDenied: the residency rules or a per-source limit denied the client.
	ActionDenied = "connection-denied"
	// ActionRefused: the connection was closed before it was served: a PROXY
	// header error, a spoof attempt, a missing header in required mode, a
	// timeout before the first bytes, or the connection limit.
	ActionRefused = "connection-refused"
)

// Outcomes: event.outcome values (ECS).
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeUnknown = "unknown"
)

// Via values: how the client address was learnt (clientip.via and the
// report's via key).
const (
	ViaDirect  = "direct"   // the socket peer is the client
	ViaProxyV1 = "proxy-v1" // from a PROXY protocol v1 header
	ViaProxyV2 = "proxy-v2" // from a PROXY protocol v2 header
)

// Protocol values: network.protocol.
const (
	ProtocolHTTP = "http"
	ProtocolLine = "line"
)

// Event is one connection, from accept to close. The zero value is not a
// valid event: use [New] to get an id and timestamps.
//
// An Event is a plain value; it is not safe for concurrent mutation but may
// be copied and read from many goroutines once built.
type Event struct {
	// Timestamp is when the connection ended (ECS @timestamp). The ingest
	// service picks the daily index from it.
	Timestamp   time.Time   `json:"@timestamp"`
	ECS         ECS         `json:"ecs"`
	Event       Meta        `json:"event"`
	Source      Source      `json:"source"`
	Destination Destination `json:"destination"`
	Network     Network     `json:"network"`
	ClientIP    ClientIP    `json:"clientip"`
	Residency   Residency   `json:"residency,omitzero"`
	App         App         `json:"app,omitzero"`
	Flow        Flow        `json:"flow,omitzero"`  // UDP flows only
	Relay       Relay       `json:"relay,omitzero"` // set only when the app relays to an upstream (--upstream)
}

// ECS names the schema version the field names follow.
type ECS struct {
	Version string `json:"version"`
}

// ECSVersion is the ECS version the field names follow.
const ECSVersion = "8.11.0"

// Meta is the ECS event.* group.
type Meta struct {
	ID       string    `json:"id"`                // UUIDv7, unique per connection; the ingest's document _id
	Kind     string    `json:"kind"`              // always "event"
	Category []string  `json:"category"`          // always ["network"]
	Action   string    `json:"action"`            // one of the Action* constants
	Outcome  string    `json:"outcome"`           // one of the Outcome* constants
	Reason   string    `json:"reason,omitempty"`  // why it was denied or refused, or how it ended
	Start    time.Time `json:"start"`             // accept time
	End      time.Time `json:"end"`               // close time
	Duration int64     `json:"duration"`          // nanoseconds from Start to End
	Dataset  string    `json:"dataset,omitempty"` // "originlens.connection"
}

// Source is the client: the true client address (from the socket or the
// PROXY header), the bytes it sent, and where it is.
type Source struct {
	IP    netip.Addr `json:"ip"`
	Port  uint16     `json:"port"`
	Bytes int64      `json:"bytes"`        // bytes received from the client, PROXY header included
	Geo   Geo        `json:"geo,omitzero"` // empty when no database is configured
	AS    AS         `json:"as,omitzero"`  // empty without an ASN database

	// Packets is the number of datagrams received from the client (UDP
	// flows only; zero and left out for TCP).
	Packets int64 `json:"packets,omitempty"`
}

// Destination is the address the client dialed: from the PROXY header when
// there is one, else the socket's local address.
type Destination struct {
	IP    netip.Addr `json:"ip"`
	Port  uint16     `json:"port"`
	Bytes int64      `json:"bytes"` // bytes sent to the client

	// Packets is the number of datagrams sent to the client (UDP flows
	// only).
	Packets int64 `json:"packets,omitempty"`
}

// Geo is the ECS source.geo.* group, plus Class for addresses that no
// database can place (loopback, private, documentation...).
type Geo struct {
	CountryISOCode string    `json:"country_iso_code,omitempty"`
	CountryName    string    `json:"country_name,omitempty"`
	ContinentCode  string    `json:"continent_code,omitempty"`
	RegionISOCode  string    `json:"region_iso_code,omitempty"`
	RegionName     string    `json:"region_name,omitempty"`
	CityName       string    `json:"city_name,omitempty"`
	Location       *Location `json:"location,omitempty"`
	Timezone       string    `json:"timezone,omitempty"`
	// Class is set instead of a country for addresses that are not
	// globally routable: "loopback", "private", "shared", "link-local",
	// "documentation", "multicast", "unspecified", "reserved"; "public" for
	// the rest.
	Class string `json:"class,omitempty"`
	// Error is set when the client's GeoIP record exists but did not
	// decode: which database and why (at most 200 bytes, e.g. "city
	// record: decoding field location: ..."). The other fields then hold
	// only what could be decoded, and the residency rules decided on that
	// lookup error (the default rules deny it).
	Error string `json:"error,omitempty"`
	// LocationInvalid is true when the record's coordinates were not a
	// place (not finite, or latitude outside [-90, 90] or longitude
	// outside [-180, 180]) and were dropped: Location is then absent.
	LocationInvalid bool `json:"location_invalid,omitempty"`
}

// ValidLocation reports whether lat and lon are a place that OpenSearch's
// geo_point accepts: finite, lat in [-90, 90] and lon in [-180, 180].
func ValidLocation(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 // false for NaN
}

// Location is a geo_point in OpenSearch's object form.
type Location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// AS is the ECS source.as.* group.
type AS struct {
	Number       uint32 `json:"number,omitempty"`
	Organization struct {
		Name string `json:"name,omitempty"`
	} `json:"organization,omitzero"`
}

// Network is the ECS network.* group.
type Network struct {
	Transport string `json:"transport"`          // "tcp" or "udp"
	Type      string `json:"type"`               // "ipv4" or "ipv6", of the client address
	Protocol  string `json:"protocol,omitempty"` // "http" or "line"; empty when refused before the first bytes
}

// ClientIP records how the client address was learnt.
type ClientIP struct {
	Via    string `json:"via"` // one of the Via* constants
	Peer   Peer   `json:"peer"`
	VPCEID string `json:"vpce_id,omitempty"` // AWS TLV 0xEA subtype 0x01
	// LimitPrefix is the source the per-source limits counted the
	// connection as (the client address's /32 or /64 by default); absent
	// when no limit applied.
	LimitPrefix netip.Prefix `json:"limit_prefix,omitzero"`
}

// Peer is the immediate TCP peer of the socket (the load balancer when a
// PROXY header carried the client address).
type Peer struct {
	IP   netip.Addr `json:"ip"`
	Port uint16     `json:"port"`
}

// Residency is the decision of the residency and business rules.
type Residency struct {
	Jurisdiction string `json:"jurisdiction,omitempty"`
	Decision     string `json:"decision,omitempty"` // serve, redirect, deny
	Region       string `json:"region,omitempty"`
	Rule         string `json:"rule,omitempty"`
}

// App carries what the application chose for the client.
type App struct {
	Lang string `json:"lang,omitempty"`
}

// Transport values: network.transport.
const (
	TransportTCP = "tcp"
	TransportUDP = "udp"
)

// Flow is a UDP flow: the datagrams between one client address and port
// and one server address and port, from the first datagram until the flow
// was idle for the idle timeout (or the server stopped, or the flow table
// was full). Event.Start and End are its first and last datagram too; the
// counts of datagrams and bytes are Source and Destination's.
type Flow struct {
	FirstSeen time.Time `json:"first_seen"` // the first datagram from the client
	LastSeen  time.Time `json:"last_seen"`  // the last datagram either way
	// End is why the flow was published: "idle-timeout", "shutdown" or
	// "evicted" (the flow table was full).
	End string `json:"end"`
	// RateLimited counts the client's datagrams left unanswered by the
	// per-source reply rate limit.
	RateLimited int64 `json:"rate_limited,omitempty"`
	// Truncated counts the replies cut to the amplification bound.
	Truncated int64 `json:"truncated,omitempty"`
}

// Relay describes a connection the app relayed to an upstream service.
// Source.Bytes and Destination.Bytes then count what the client sent
// (PROXY header included) and what it received from the upstream.
type Relay struct {
	Upstream Peer   `json:"upstream"` // the upstream address dialed (or that would have been)
	Mode     string `json:"mode"`     // transparent, proxy-v2, proxy-v1 or plain
	// End is how it ended: client-closed, upstream-closed, upstream-refused,
	// upstream-unreachable, idle-timeout, denied (never dialed) or shutdown
	// (closed at the end of the server's drain).
	End string `json:"end"`
}

// New returns an event for a connection accepted at start, with a fresh
// id and the constant fields set.
//
// The id is a UUIDv7 (RFC 9562): the current time in milliseconds, the
// sub-millisecond time in 256 ns steps, and 62 random bits from
// crypto/rand (read in blocks of 4 KiB, one read per 512 ids). The ids of
// one process are unique and strictly increasing in the order of the
// calls, even when the clock does not move. New is safe for concurrent
// use; it blocks only briefly on the id generator's mutex.
func New(start time.Time) Event {
	id := newID()
	return Event{
		ECS: ECS{Version: ECSVersion},
		Event: Meta{
			ID:       id,
			Kind:     "event",
			Category: []string{"network"},
			Start:    start,
			Dataset:  "originlens.connection",
		},
		Network: Network{Transport: "tcp"},
	}
}

// Finish sets the end time, duration and @timestamp.
func (e *Event) Finish(end time.Time) {
	e.Event.End = end
	e.Event.Duration = end.Sub(e.Event.Start).Nanoseconds()
	e.Timestamp = end
}

// Key returns the Kafka message key: the client IP, so that one client's
// events stay ordered in one partition.
func (e *Event) Key() []byte {
	return e.AppendKey(nil)
}

// AppendKey appends the Kafka message key ([Event.Key]) to dst.
func (e *Event) AppendKey(dst []byte) []byte {
	if !e.Source.IP.IsValid() {
		return append(dst, e.Source.IP.String()...) // "invalid IP", as Key always wrote
	}
	return e.Source.IP.AppendTo(dst)
}

// Marshal encodes the event as one JSON object without a trailing newline:
// the bytes of encoding/json.Marshal, written by [Event.AppendJSON] into a
// new buffer.
func (e *Event) Marshal() ([]byte, error) {
	b, err := e.AppendJSON(make([]byte, 0, 1024))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Parse decodes one event and checks the fields the ingest relies on:
// event.id and @timestamp. Unknown fields are an error, so that a producer
// ahead of the index template is caught here, not as a mapping error.
func Parse(b []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("decoding event: %w", err)
	}
	// Only white space may follow the object. (Decoder.More reports false
	// for a stray '}' or ']', so look at the bytes themselves.)
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return Event{}, fmt.Errorf("decoding event: %d bytes of trailing data after the object", len(rest))
	}
	if e.Event.ID == "" {
		return Event{}, fmt.Errorf("decoding event: %w", ErrMissingID)
	}
	if e.Timestamp.IsZero() {
		return Event{}, fmt.Errorf("decoding event %s: %w", e.Event.ID, ErrMissingTimestamp)
	}
	return e, nil
}
