package origin

// Why proxyproto.Read on our own bufio.Reader rather than proxyproto.NewConn
// with a policy: NewConn reads the header lazily on the first Read or
// RemoteAddr, hides the raw header bytes (CRC32C must be checked on exactly
// those bytes; Header.Format does not reproduce them because SplitTLVs drops
// NOOP TLVs), has no spoof outcome for Trusted mode (REJECT only applies to a
// parsed header, never to a bare signature, and its v1 reader aborts on a
// header split across segments), and allocates a bufio.Reader per connection
// for the connection's whole life. Here the header is framed under one
// deadline from a pooled reader, handed to proxyproto.Read complete, and the
// reader goes back to the pool before Resolve returns.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

const (
	v1MaxLen    = 107 // spec: worst case "PROXY UNKNOWN ffff:...:ffff ... 65535 65535\r\n"
	v2PrefixLen = 16  // signature (12), version/command, family/transport, length (2)
	v1Sig       = "PROXY "
)

var (
	v2Sig      = string(proxyproto.SIGV2)
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// readerPool recycles the bufio.Readers used to frame headers. Each holds
// the largest header go-proxyproto accepts (16 + MaxV2HeaderSize bytes), so
// a full v2 header can always be peeked before it is parsed.
type readerPool struct {
	p     sync.Pool
	maxV2 int
}

func (rp *readerPool) init() {
	rp.maxV2 = int(proxyproto.MaxV2HeaderSize)
	size := v2PrefixLen + rp.maxV2
	rp.p.New = func() any { return bufio.NewReaderSize(nil, size) }
}

func (rp *readerPool) get(conn net.Conn) *bufio.Reader {
	br := rp.p.Get().(*bufio.Reader)
	br.Reset(conn)
	return br
}

func (rp *readerPool) put(br *bufio.Reader) {
	br.Reset(nil) // drop the conn; the buffer is kept
	rp.p.Put(br)
}

// sigKind is what the first bytes of a connection turned out to be.
type sigKind int

const (
	sigUndecided sigKind = iota // a proper prefix of a signature, or nothing yet
	sigNone                     // not a PROXY signature
	sigV1                       // "PROXY "
	sigV2                       // the 12-byte v2 signature
)

// classify decides what buf starts with, as soon as buf allows it.
func classify(buf []byte) sigKind {
	if len(buf) == 0 {
		return sigUndecided
	}
	var sig string
	var k sigKind
	switch buf[0] {
	case v1Sig[0]:
		sig, k = v1Sig, sigV1
	case v2Sig[0]:
		sig, k = v2Sig, sigV2
	default:
		return sigNone
	}
	n := min(len(buf), len(sig))
	if string(buf[:n]) != sig[:n] {
		return sigNone
	}
	if n == len(sig) {
		return k
	}
	return sigUndecided
}

// matchSig reads until the buffered bytes either diverge from both
// signatures or hold one completely. Each round waits for at least one more
// byte, never for more than that, so one non-matching byte decides. On a
// read error it returns sigUndecided and the error; the bytes read so far
// stay buffered in br.
func matchSig(br *bufio.Reader) (sigKind, error) {
	for {
		_, err := br.Peek(br.Buffered() + 1)
		buf, _ := br.Peek(br.Buffered())
		if k := classify(buf); k != sigUndecided {
			return k, nil
		}
		if err != nil {
			return sigUndecided, err
		}
	}
}

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// headerReadErr turns a read error met while a header is expected into one
// of the package's errors. got is the number of bytes received so far.
func headerReadErr(err error, got int) error {
	switch {
	case isTimeout(err):
		return fmt.Errorf("%w (%d bytes received)", ErrTimeout, got)
	case errors.Is(err, io.EOF) && got == 0:
		return ErrEmpty
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated after %d bytes", ErrBadHeader, got)
	}
	return fmt.Errorf("origin: reading PROXY header: %w", err)
}

// startDeadline sets conn's read deadline for the header.
func startDeadline(conn net.Conn, deadline time.Time) error {
	if err := conn.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("origin: setting header read deadline: %w", err)
	}
	return nil
}

// clearDeadline removes the header deadline.
func clearDeadline(conn net.Conn) error {
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("origin: clearing header read deadline: %w", err)
	}
	return nil
}

// sniff handles a peer outside the trusted prefixes in Trusted mode: a
// PROXY signature is a spoof attempt; anything else is a direct client whose
// bytes are all handed back.
func (r *Resolver) sniff(conn net.Conn, o Origin, deadline time.Time) (Origin, net.Conn, error) {
	if err := startDeadline(conn, deadline); err != nil {
		return o, nil, err
	}
	br := r.readers.get(conn)
	defer r.readers.put(br)
	k, err := matchSig(br)
	if err != nil {
		got := br.Buffered()
		if got == 0 || !(isTimeout(err) || errors.Is(err, io.EOF)) {
			return o, nil, headerReadErr(err, got)
		}
		// A proper prefix of a signature, then the deadline or EOF: judged
		// on what arrived, which is not a header. The client keeps its bytes.
		k = sigNone
	}
	if k != sigNone {
		return o, nil, fmt.Errorf("%w: %s sent a PROXY %s signature", ErrSpoof, o.Peer, versionName(k))
	}
	if err := clearDeadline(conn); err != nil {
		return o, nil, err
	}
	return o, withPending(conn, br), nil
}

func versionName(k sigKind) string {
	if k == sigV1 {
		return "v1"
	}
	return "v2"
}

// readHeader reads the mandatory header of a Required connection or of a
// trusted peer.
func (r *Resolver) readHeader(conn net.Conn, o Origin, deadline time.Time) (Origin, net.Conn, error) {
	if err := startDeadline(conn, deadline); err != nil {
		return o, nil, err
	}
	br := r.readers.get(conn)
	defer r.readers.put(br)
	k, err := matchSig(br)
	if err != nil {
		return o, nil, headerReadErr(err, br.Buffered())
	}
	var got Origin
	switch k {
	case sigV1:
		got, err = r.readV1(br, o)
	case sigV2:
		got, err = r.readV2(br, o)
	default:
		return o, nil, ErrMissingHeader
	}
	if err != nil {
		return o, nil, err // o: the socket addresses only
	}
	if err := clearDeadline(conn); err != nil {
		return o, nil, err
	}
	return got, withPending(conn, br), nil
}

// readV1 frames a v1 line (at most 107 bytes up to and including LF), then
// lets go-proxyproto parse it.
func (r *Resolver) readV1(br *bufio.Reader, o Origin) (Origin, error) {
	for {
		buf, _ := br.Peek(min(br.Buffered(), v1MaxLen))
		if bytes.IndexByte(buf, '\n') >= 0 {
			break
		}
		if len(buf) >= v1MaxLen {
			return o, fmt.Errorf("%w: v1 header longer than %d bytes", ErrBadHeader, v1MaxLen)
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return o, headerReadErr(err, br.Buffered())
		}
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		return o, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	o.Via = event.ViaProxyV1
	return fromHeader(h, o)
}

// readV2 frames a v2 header (16-byte prefix plus its length field, at most
// MaxV2HeaderSize), checks its TLVs and CRC32C on the raw bytes, then lets
// go-proxyproto parse it.
func (r *Resolver) readV2(br *bufio.Reader, o Origin) (Origin, error) {
	prefix, err := br.Peek(v2PrefixLen)
	if err != nil {
		return o, headerReadErr(err, br.Buffered())
	}
	n := int(binary.BigEndian.Uint16(prefix[14:16]))
	if n > r.readers.maxV2 {
		return o, fmt.Errorf("%w: v2 length %d exceeds %d", ErrBadHeader, n, r.readers.maxV2)
	}
	raw, err := br.Peek(v2PrefixLen + n)
	if err != nil {
		return o, headerReadErr(err, br.Buffered())
	}
	// raw stays valid until br is read past it; inspect it before parsing.
	vpce, tlvErr := inspectTLVs(raw)
	h, err := proxyproto.Read(br)
	if err != nil {
		return o, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if tlvErr != nil {
		return o, tlvErr
	}
	o.Via = event.ViaProxyV2
	o.VPCEID = vpce
	return fromHeader(h, o)
}

// inspectTLVs walks the TLV vector of the complete v2 header raw, verifies a
// CRC32C TLV when there is one, and returns the AWS VPC endpoint id when
// there is one. go-proxyproto keeps only a copy of the TLV bytes without
// offsets (and its SplitTLVs drops NOOPs), so the CRC must be computed here,
// over raw with the CRC value zeroed. Headers whose address block cannot be
// located (an unknown family, or a LOCAL length shorter than its family's
// block, which the library skips) have no TLVs to inspect.
func inspectTLVs(raw []byte) (vpce string, err error) {
	var addrLen int
	switch raw[13] >> 4 {
	case 0: // AF_UNSPEC
	case 1: // AF_INET
		addrLen = 12
	case 2: // AF_INET6
		addrLen = 36
	case 3: // AF_UNIX
		addrLen = 216
	default:
		return "", nil // rejected by the parser
	}
	start := v2PrefixLen + addrLen
	if start > len(raw) {
		return "", nil
	}
	crcAt := -1
	for i := start; i < len(raw); {
		if len(raw)-i < 3 {
			return "", fmt.Errorf("%w: truncated TLV at offset %d", ErrBadHeader, i)
		}
		typ := proxyproto.PP2Type(raw[i])
		l := int(binary.BigEndian.Uint16(raw[i+1 : i+3]))
		v := i + 3
		if v+l > len(raw) {
			return "", fmt.Errorf("%w: TLV 0x%02x at offset %d overruns the header", ErrBadHeader, byte(typ), i)
		}
		switch typ {
		case proxyproto.PP2_TYPE_CRC32C:
			if l != 4 || crcAt >= 0 {
				return "", fmt.Errorf("%w: bad or repeated CRC32C TLV", ErrBadHeader)
			}
			crcAt = v
		case tlvparse.PP2_TYPE_AWS:
			if vpce == "" {
				id, err := tlvparse.AWSVPCEndpointID(proxyproto.TLV{Type: typ, Value: raw[v : v+l]})
				if err == nil {
					vpce = id
				}
			}
		}
		i = v + l
	}
	if crcAt >= 0 {
		want := binary.BigEndian.Uint32(raw[crcAt : crcAt+4])
		var zero [4]byte
		got := crc32.Update(0, castagnoli, raw[:crcAt])
		got = crc32.Update(got, castagnoli, zero[:])
		got = crc32.Update(got, castagnoli, raw[crcAt+4:])
		if got != want {
			return "", fmt.Errorf("%w: header says %08x, computed %08x", ErrBadCRC, want, got)
		}
	}
	return vpce, nil
}

// fromHeader fills o from a parsed header. LOCAL (v2) and UNKNOWN (v1) keep
// the socket addresses; a PROXY command must carry TCP over IPv4 or IPv6.
func fromHeader(h *proxyproto.Header, o Origin) (Origin, error) {
	if h.Command.IsLocal() {
		o.Local = true
		return o, nil
	}
	switch h.TransportProtocol {
	case proxyproto.TCPv4, proxyproto.TCPv6:
	default:
		return o, fmt.Errorf("%w: transport %#x is not TCP over IP", ErrBadHeader, byte(h.TransportProtocol))
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		return o, fmt.Errorf("%w: no TCP addresses", ErrBadHeader)
	}
	client, ok1 := tcpAddrPort(src)
	server, ok2 := tcpAddrPort(dst)
	if !ok1 || !ok2 {
		return o, fmt.Errorf("%w: invalid address", ErrBadHeader)
	}
	o.Client, o.Server = client, server
	return o, nil
}

func tcpAddrPort(a *net.TCPAddr) (netip.AddrPort, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port < 0 || a.Port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), true
}

// withPending returns conn itself when br holds no unread bytes, otherwise
// a connection that first returns a copy of them. The copy lets br go back
// to the pool at once instead of living as long as the connection.
func withPending(conn net.Conn, br *bufio.Reader) net.Conn {
	n := br.Buffered()
	if n == 0 {
		return conn
	}
	buf, _ := br.Peek(n)
	return &Conn{Conn: conn, pending: bytes.Clone(buf)}
}

// Conn is the connection Resolve returns when it read bytes past the header
// (or, for a direct client, the bytes it peeked): Read returns those bytes
// first, then reads the underlying connection. Every other method is the
// underlying connection's. Read must not be called concurrently with itself;
// the other methods are as safe as the underlying connection's.
type Conn struct {
	net.Conn
	pending []byte
}

// Read returns the pending bytes first, then reads the underlying
// connection. A Read that returns pending bytes does not block.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Buffered returns the number of pending bytes not yet returned by Read.
func (c *Conn) Buffered() int { return len(c.pending) }

// NetConn returns the underlying connection (e.g. a *net.TCPConn, for
// CloseWrite). Reading it directly skips the pending bytes.
func (c *Conn) NetConn() net.Conn { return c.Conn }
