// Package origin learns the true client address of a TCP connection: the
// socket's peer, or a PROXY protocol v1/v2 header, and only from the sources
// the configured mode trusts.
//
// CONTRACT STUB: the signatures below are the contract internal/server
// builds against; the implementation is issue #2's.
package origin

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Mode is the --proxy-protocol setting.
type Mode int

const (
	// Off: the socket's peer is the client; PROXY-looking bytes are payload.
	Off Mode = iota
	// Required: every connection must start with a PROXY v1 or v2 header.
	Required
	// Trusted: connections from Config.Trusted must carry a header; a header
	// from any other source is a spoof attempt; other sources are clients.
	Trusted
)

// ParseMode parses "off", "required" or "trusted".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "off":
		return Off, nil
	case "required":
		return Required, nil
	case "trusted":
		return Trusted, nil
	}
	return Off, errors.New("proxy protocol mode must be off, required or trusted, not " + s)
}

// String returns the flag spelling of m.
func (m Mode) String() string { return [...]string{"off", "required", "trusted"}[m] }

// Config configures a [Resolver].
type Config struct {
	Mode          Mode
	Trusted       []netip.Prefix // Trusted mode: the proxies whose headers count
	HeaderTimeout time.Duration  // --proxy-header-timeout; default 5s
}

// Origin is what a connection says of its client.
type Origin struct {
	Client netip.AddrPort // the true client, unmapped
	Peer   netip.AddrPort // the socket's remote address, unmapped
	Server netip.AddrPort // what the client dialed: header destination or socket local address
	Via    string         // event.ViaDirect, ViaProxyV1 or ViaProxyV2
	VPCEID string         // AWS TLV 0xEA subtype 0x01, when present
	// Local is true for a PROXY v2 LOCAL command (NLB health check): Client
	// is the socket peer and the connection is not reported as a client.
	Local bool
}

// Errors returned by [Resolver.Resolve]. [Kind] maps them to metric labels.
var (
	ErrSpoof         = errors.New("origin: PROXY header from an untrusted source")
	ErrMissingHeader = errors.New("origin: PROXY header required but absent")
	ErrBadHeader     = errors.New("origin: malformed PROXY header")
	ErrBadCRC        = errors.New("origin: PROXY v2 CRC32C mismatch")
	ErrEmpty         = errors.New("origin: connection closed before any byte")
	ErrTimeout       = errors.New("origin: timed out waiting for the PROXY header")
)

// Resolver resolves origins. It is safe for concurrent use.
type Resolver struct{ cfg Config }

// NewResolver checks cfg.
func NewResolver(cfg Config) (*Resolver, error) { return &Resolver{cfg: cfg}, nil }

// Resolve reads a PROXY header when the mode and the peer call for one and
// returns the origin and a connection positioned at the first payload byte.
// It blocks at most HeaderTimeout; it must be called from the connection's
// own goroutine. On error the caller closes conn.
func (r *Resolver) Resolve(conn net.Conn) (Origin, net.Conn, error) {
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	return Origin{Client: peer, Peer: peer, Server: local, Via: "direct"}, conn, nil
}

// Kind returns a short metric label for a Resolve error: "spoof",
// "missing", "malformed", "crc", "empty", "timeout" or "io".
func Kind(err error) string { return "io" }
