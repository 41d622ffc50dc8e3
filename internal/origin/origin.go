// Package origin learns the true client address of a TCP connection: the
// socket's peer, or a PROXY protocol v1/v2 header, and only from the sources
// the configured mode trusts.
//
// Parsing is done by github.com/pires/go-proxyproto ([proxyproto.Read] on a
// pooled [bufio.Reader]); this package adds what the library leaves to its
// caller: the trust decision per mode, framing the header under a deadline
// before the library sees it (so partial headers that arrive in several
// segments are tolerated, as the spec recommends, and nothing blocks past
// HeaderTimeout), CRC32C verification on the raw header bytes, the AWS VPC
// endpoint TLV, unmapped netip addresses, and errors that map to metric labels.
package origin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/originlens/originlens/internal/event"
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

// DefaultHeaderTimeout is the header read timeout used when
// Config.HeaderTimeout is zero.
const DefaultHeaderTimeout = 5 * time.Second

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
func (m Mode) String() string {
	switch m {
	case Off:
		return "off"
	case Required:
		return "required"
	case Trusted:
		return "trusted"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

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
	// Local is true for a PROXY v2 LOCAL command or a v1 UNKNOWN line (the
	// proxy's own connection, e.g. an NLB health check): Client is the
	// socket peer, Server the socket's local address, and Via still says
	// which header version came. It carries no client address, so it must
	// get no more than the peer itself would (the server counts it as the
	// peer's, and serves any payload as the peer's direct connection).
	Local bool
}

// Errors returned by [Resolver.Resolve], wrapped: test them with
// [errors.Is]. [Kind] maps them to metric labels.
var (
	ErrSpoof         = errors.New("origin: PROXY header from an untrusted source")
	ErrMissingHeader = errors.New("origin: PROXY header required but absent")
	ErrBadHeader     = errors.New("origin: malformed PROXY header")
	ErrBadCRC        = errors.New("origin: PROXY v2 CRC32C mismatch")
	ErrEmpty         = errors.New("origin: connection closed before any byte")
	ErrTimeout       = errors.New("origin: timed out waiting for the PROXY header")
)

// Kind returns a short metric label for a Resolve error: "spoof",
// "missing", "malformed", "crc", "empty", "timeout" or "io" (any other
// error, e.g. a connection reset). It returns "" for a nil error.
func Kind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrSpoof):
		return "spoof"
	case errors.Is(err, ErrMissingHeader):
		return "missing"
	case errors.Is(err, ErrBadCRC):
		return "crc"
	case errors.Is(err, ErrBadHeader):
		return "malformed"
	case errors.Is(err, ErrEmpty):
		return "empty"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	}
	return "io"
}

// Resolver resolves origins. It is safe for concurrent use: Resolve may be
// called from any number of connection goroutines at once.
type Resolver struct {
	mode    Mode
	trusted []netip.Prefix
	timeout time.Duration
	readers readerPool
}

// NewResolver checks cfg and returns a Resolver. It rejects an unknown mode,
// a negative timeout, Trusted mode without prefixes, prefixes in any other
// mode (they would silently do nothing), and invalid prefixes. IPv4-mapped
// IPv6 prefixes (::ffff:10.0.0.0/104) are turned into their IPv4 form.
func NewResolver(cfg Config) (*Resolver, error) {
	r := &Resolver{mode: cfg.Mode, timeout: cfg.HeaderTimeout}
	switch cfg.Mode {
	case Off, Required, Trusted:
	default:
		return nil, fmt.Errorf("origin: unknown proxy protocol mode %d", int(cfg.Mode))
	}
	if r.timeout < 0 {
		return nil, fmt.Errorf("origin: proxy header timeout must not be negative, got %v", cfg.HeaderTimeout)
	}
	if r.timeout == 0 {
		r.timeout = DefaultHeaderTimeout
	}
	if cfg.Mode == Trusted && len(cfg.Trusted) == 0 {
		return nil, errors.New("origin: proxy protocol mode trusted needs at least one trusted proxy prefix")
	}
	if cfg.Mode != Trusted && len(cfg.Trusted) > 0 {
		return nil, fmt.Errorf("origin: trusted proxy prefixes are only used in mode trusted, not %s", cfg.Mode)
	}
	for _, p := range cfg.Trusted {
		q, err := normPrefix(p)
		if err != nil {
			return nil, err
		}
		r.trusted = append(r.trusted, q)
	}
	r.readers.init()
	return r, nil
}

// normPrefix validates p, unmaps an IPv4-mapped prefix and masks it.
func normPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("origin: invalid trusted proxy prefix %q", p.String())
	}
	a, bits := p.Addr(), p.Bits()
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("origin: trusted proxy prefix %s must not have a zone", p)
	}
	if a.Is4In6() {
		if bits < 96 {
			return netip.Prefix{}, fmt.Errorf("origin: IPv4-mapped trusted proxy prefix %s must be at least /96", p)
		}
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// isTrusted reports whether the (unmapped) peer address is inside a trusted
// prefix.
func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve reads a PROXY header when the mode and the peer call for one and
// returns the origin and a connection positioned at the first payload byte.
//
//   - Off: nothing is read; conn itself is returned; Client is the peer.
//   - Required, or Trusted with a peer inside a trusted prefix: the
//     connection must start with a complete v1 or v2 header, framed within
//     HeaderTimeout. Only that first header counts; any bytes after it,
//     including a second header, are payload.
//   - Trusted with any other peer: the first bytes are peeked; if they begin
//     a PROXY v1 ("PROXY ") or v2 signature the result is ErrSpoof,
//     otherwise the peer is a direct client and every peeked byte is given
//     back through the returned connection. One byte that does not fit a
//     signature decides at once. A client that sent only a proper prefix of
//     a signature (say "PRO") and then stops is judged on what arrived when
//     the deadline or EOF comes: it is a direct client and its bytes are
//     returned. A peer that sends nothing within HeaderTimeout gets
//     ErrTimeout.
//
// A peer that closes before sending any byte (a TCP health check) yields
// ErrEmpty. The returned connection is conn itself when no bytes were read
// past the header, otherwise a wrapper that first returns those bytes (its
// Read must not be called concurrently with itself; NetConn returns conn).
//
// Resolve blocks at most HeaderTimeout (it sets conn's read deadline and
// clears it before returning; re-apply your own deadlines afterwards). It
// must be called from the connection's own goroutine, once, before anything
// else reads conn. On error the returned Origin holds only the socket
// addresses (Client = Peer, Via direct), the read deadline may still be
// set, and the caller closes conn.
func (r *Resolver) Resolve(conn net.Conn) (Origin, net.Conn, error) {
	return r.ResolveBy(conn, time.Now().Add(r.timeout))
}

// ResolveBy is Resolve with the header read's absolute deadline given
// instead of HeaderTimeout from now: a caller that waited for the first
// byte before resolving (see FirstRead) keeps the deadline the read had
// at accept. A deadline already past fails the first read at once, as
// ErrTimeout when nothing arrived. Mode Off ignores it.
func (r *Resolver) ResolveBy(conn net.Conn, deadline time.Time) (Origin, net.Conn, error) {
	peer := addrPort(conn.RemoteAddr())
	local := addrPort(conn.LocalAddr())
	o := Origin{Client: peer, Peer: peer, Server: local, Via: event.ViaDirect}
	switch {
	case r.mode == Off:
		return o, conn, nil
	case r.mode == Trusted && !r.isTrusted(peer.Addr()):
		return r.sniff(conn, o, deadline)
	default:
		return r.readHeader(conn, o, deadline)
	}
}

// FirstRead reports whether Resolve reads the connection (in every mode
// but Off), and the timeout of that read, HeaderTimeout. It is safe for
// concurrent use.
func (r *Resolver) FirstRead() (timeout time.Duration, reads bool) {
	return r.timeout, r.mode != Off
}

// addrPort converts a socket address to an unmapped netip.AddrPort; an
// address that is not TCP/UDP/IP is parsed from its string form, and the
// zero AddrPort is returned when that fails too.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
