package origin_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/pires/go-proxyproto"
)

// Socket placeholders in a case's expectations.
const (
	peer  = "peer"  // the socket's remote address, unmapped
	local = "local" // the socket's local address, unmapped
)

type resolveCase struct {
	name    string
	family  string // listener: v4, v6, dual
	mode    origin.Mode
	trusted []string
	timeout time.Duration // header timeout; 0 = 5s
	send    []byte        // written by the client in one write
	hold    bool          // keep the client open until Resolve returns (else half-close right after send)

	wantErr     error // nil: success expected
	wantKind    string
	wantClient  string // ip:port, or peer
	wantServer  string // ip:port, or local
	wantVia     string
	wantLocal   bool
	wantVPCE    string
	wantPayload []byte // everything read from the returned conn to EOF
}

func TestResolve(t *testing.T) {
	const (
		src  = "203.0.113.7:5555"
		dst  = "198.51.100.1:80"
		src6 = "[2001:db8::7]:5555"
		dst6 = "[2001:db8::1]:8080"
	)
	line := []byte("hello there\n")
	hdr2 := v2(t, src, dst)
	hdr1 := v1(t, src, dst)
	// AWS NLB shape: CRC32C first, then the VPC endpoint id, then NOOP padding.
	nlb := sealCRC(v2(t, src, dst, crcTLV(), vpceTLV("vpce-0123456789abcdef0"), noopTLV(5)), crcAt(12))
	badCRC := bytes.Clone(nlb)
	badCRC[crcAt(12)] ^= 0xff
	flipped := bytes.Clone(nlb) // CRC intact, one address byte changed
	flipped[16] ^= 0x01
	localHC := sealCRC(v2Local(t, crcTLV(), noopTLV(3)), crcAt(0)) // NLB health check shape
	// HeaderProxyFromAddrs picks TCPv4 for mapped addresses; build TCPv6 by hand.
	mapped := format(t, &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr: tcpAddr("[::ffff:203.0.113.7]:5555"), DestinationAddr: tcpAddr("[::ffff:198.51.100.1]:80")}, nil)
	if mapped[13] != 0x21 {
		t.Fatalf("writer did not produce a TCPv6 header for mapped addresses: family byte %#x", mapped[13])
	}
	oversizedV2 := bytes.Clone(hdr2[:16])
	binary.BigEndian.PutUint16(oversizedV2[14:], 0xffff)
	truncTLV := bytes.Clone(hdr2)
	truncTLV = append(truncTLV, 0x04, 0x00, 0x09) // NOOP claiming 9 bytes, none follow
	binary.BigEndian.PutUint16(truncTLV[14:], uint16(len(truncTLV)-16))
	udp := bytes.Clone(hdr2)
	udp[13] = 0x12 // INET + DGRAM
	http := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")

	cases := []resolveCase{
		// off: the peer is the client, every byte is payload.
		{name: "off/v4/v2 header stays payload", family: "v4", mode: origin.Off, send: cat(hdr2, line),
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: cat(hdr2, line)},
		{name: "off/v6/v1 header stays payload", family: "v6", mode: origin.Off, send: cat(hdr1, line),
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: cat(hdr1, line)},
		{name: "off/dual/mapped socket unmapped", family: "dual", mode: origin.Off, send: line,
			wantClient: "127.0.0.1:" + peer, wantServer: "127.0.0.1:" + local, wantVia: event.ViaDirect, wantPayload: line},
		{name: "off/v4/empty", family: "v4", mode: origin.Off,
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte{}},

		// required: the header is mandatory and only the first counts.
		{name: "required/v4/v2 with payload in same segment", family: "v4", mode: origin.Required, send: cat(hdr2, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "required/v4/v1 with payload", family: "v4", mode: origin.Required, send: cat(hdr1, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV1, wantPayload: line},
		{name: "required/v4/header only", family: "v4", mode: origin.Required, send: hdr2,
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: []byte{}},
		{name: "required/v4/second header is payload", family: "v4", mode: origin.Required,
			send:       cat(hdr2, v2(t, "192.0.2.66:1", "192.0.2.67:2"), hdr1, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: cat(v2(t, "192.0.2.66:1", "192.0.2.67:2"), hdr1, line)},
		{name: "required/v6/v2 IPv6 header", family: "v6", mode: origin.Required, send: cat(v2(t, src6, dst6), line),
			wantClient: src6, wantServer: dst6, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "required/v4/v1 IPv6 header", family: "v4", mode: origin.Required, send: cat(v1(t, src6, dst6), line),
			wantClient: src6, wantServer: dst6, wantVia: event.ViaProxyV1, wantPayload: line},
		{name: "required/v4/v2 mapped addresses unmapped", family: "v4", mode: origin.Required, send: cat(mapped, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "required/v4/v1 TCP6 mapped addresses unmapped", family: "v4", mode: origin.Required,
			send:       cat([]byte("PROXY TCP6 ::ffff:203.0.113.7 ::ffff:198.51.100.1 5555 80\r\n"), line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV1, wantPayload: line},
		{name: "required/dual/mapped socket v2 header", family: "dual", mode: origin.Required, send: cat(hdr2, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "required/v4/LOCAL", family: "v4", mode: origin.Required, send: v2Local(t),
			wantClient: peer, wantServer: local, wantVia: event.ViaProxyV2, wantLocal: true, wantPayload: []byte{}},
		{name: "required/v4/LOCAL NLB health check with CRC and NOOP", family: "v4", mode: origin.Required, send: localHC,
			wantClient: peer, wantServer: local, wantVia: event.ViaProxyV2, wantLocal: true, wantPayload: []byte{}},
		{name: "required/v4/LOCAL with addresses", family: "v4", mode: origin.Required,
			send:       func() []byte { b := bytes.Clone(hdr2); b[12] = 0x20; return b }(),
			wantClient: peer, wantServer: local, wantVia: event.ViaProxyV2, wantLocal: true, wantPayload: []byte{}},
		{name: "required/v4/v1 UNKNOWN", family: "v4", mode: origin.Required, send: cat([]byte("PROXY UNKNOWN\r\n"), line),
			wantClient: peer, wantServer: local, wantVia: event.ViaProxyV1, wantLocal: true, wantPayload: line},
		{name: "required/v4/NLB CRC32C good, VPC endpoint id", family: "v4", mode: origin.Required, send: cat(nlb, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantVPCE: "vpce-0123456789abcdef0", wantPayload: line},
		{name: "required/v4/CRC32C bad", family: "v4", mode: origin.Required, send: cat(badCRC, line),
			wantErr: origin.ErrBadCRC, wantKind: "crc"},
		{name: "required/v4/CRC32C with altered address", family: "v4", mode: origin.Required, send: cat(flipped, line),
			wantErr: origin.ErrBadCRC, wantKind: "crc"},
		{name: "required/v4/no header", family: "v4", mode: origin.Required, send: http,
			wantErr: origin.ErrMissingHeader, wantKind: "missing"},
		{name: "required/v4/one non-matching byte decides", family: "v4", mode: origin.Required, send: []byte("G"), hold: true,
			wantErr: origin.ErrMissingHeader, wantKind: "missing"},
		{name: "required/v4/PROXY without space", family: "v4", mode: origin.Required, send: []byte("PROXYTCP4 x\r\n"),
			wantErr: origin.ErrMissingHeader, wantKind: "missing"},
		{name: "required/v4/empty", family: "v4", mode: origin.Required,
			wantErr: origin.ErrEmpty, wantKind: "empty"},
		{name: "required/v4/v1 truncated", family: "v4", mode: origin.Required, send: hdr1[:20],
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v2 truncated address block", family: "v4", mode: origin.Required, send: hdr2[:20],
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v2 truncated signature", family: "v4", mode: origin.Required, send: hdr2[:7],
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v1 oversized", family: "v4", mode: origin.Required,
			send:    []byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n"),
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v2 oversized length", family: "v4", mode: origin.Required, send: cat(oversizedV2, make([]byte, 64)),
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v1 garbage fields", family: "v4", mode: origin.Required, send: []byte("PROXY TCP4 a b c d\r\n"),
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v2 truncated TLV", family: "v4", mode: origin.Required, send: truncTLV,
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/v2 UDP transport", family: "v4", mode: origin.Required, send: udp,
			wantErr: origin.ErrBadHeader, wantKind: "malformed"},
		{name: "required/v4/silent client times out", family: "v4", mode: origin.Required, timeout: 150 * time.Millisecond, hold: true,
			wantErr: origin.ErrTimeout, wantKind: "timeout"},
		{name: "required/v4/partial header times out", family: "v4", mode: origin.Required, timeout: 150 * time.Millisecond, hold: true,
			send: hdr1[:20], wantErr: origin.ErrTimeout, wantKind: "timeout"},

		// trusted, peer inside the trusted prefixes: like required.
		{name: "trusted/v4/trusted peer v2", family: "v4", mode: origin.Trusted, trusted: []string{"127.0.0.0/8"}, send: cat(nlb, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantVPCE: "vpce-0123456789abcdef0", wantPayload: line},
		{name: "trusted/v6/trusted peer v1", family: "v6", mode: origin.Trusted, trusted: []string{"::1/128"}, send: cat(hdr1, line),
			wantClient: src, wantServer: dst, wantVia: event.ViaProxyV1, wantPayload: line},
		{name: "trusted/dual/mapped socket matches v4 prefix", family: "dual", mode: origin.Trusted, trusted: []string{"127.0.0.1/32"},
			send: cat(hdr2, line), wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "trusted/v4/mapped prefix matches v4 socket", family: "v4", mode: origin.Trusted, trusted: []string{"::ffff:127.0.0.0/104"},
			send: cat(hdr2, line), wantClient: src, wantServer: dst, wantVia: event.ViaProxyV2, wantPayload: line},
		{name: "trusted/v4/trusted peer without header", family: "v4", mode: origin.Trusted, trusted: []string{"127.0.0.0/8"}, send: http,
			wantErr: origin.ErrMissingHeader, wantKind: "missing"},
		{name: "trusted/v4/trusted peer empty", family: "v4", mode: origin.Trusted, trusted: []string{"127.0.0.0/8"},
			wantErr: origin.ErrEmpty, wantKind: "empty"},

		// trusted, peer outside: a signature is a spoof, anything else a direct client.
		{name: "trusted/v4/untrusted v2 spoof", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"}, send: cat(hdr2, line),
			wantErr: origin.ErrSpoof, wantKind: "spoof"},
		{name: "trusted/v4/untrusted v1 spoof", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"}, send: cat(hdr1, line),
			wantErr: origin.ErrSpoof, wantKind: "spoof"},
		{name: "trusted/dual/untrusted mapped socket v2 spoof", family: "dual", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			send: hdr2, wantErr: origin.ErrSpoof, wantKind: "spoof"},
		{name: "trusted/v6/untrusted bare v2 signature spoof", family: "v6", mode: origin.Trusted, trusted: []string{"2001:db8::/32"},
			send: hdr2[:12], hold: true, wantErr: origin.ErrSpoof, wantKind: "spoof"},
		{name: "trusted/v4/untrusted direct HTTP", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"}, send: http,
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: http},
		{name: "trusted/v4/untrusted direct line", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"}, send: line,
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: line},
		{name: "trusted/v4/untrusted one byte decides", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			send: []byte("x"), hold: true, wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte("x")},
		{name: "trusted/v4/untrusted PROXY prefix then other byte", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			send: []byte("PROXYfoo\n"), wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte("PROXYfoo\n")},
		{name: "trusted/v4/untrusted v2 prefix then other byte", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			send: []byte("\r\n\r\nQUIT\n"), wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte("\r\n\r\nQUIT\n")},
		{name: "trusted/v4/untrusted signature prefix then EOF", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			send: []byte("PRO"), wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte("PRO")},
		{name: "trusted/v4/untrusted signature prefix then silence", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			timeout: 150 * time.Millisecond, send: []byte("\r\n\r"), hold: true,
			wantClient: peer, wantServer: local, wantVia: event.ViaDirect, wantPayload: []byte("\r\n\r")},
		{name: "trusted/v4/untrusted empty", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			wantErr: origin.ErrEmpty, wantKind: "empty"},
		{name: "trusted/v4/untrusted silent", family: "v4", mode: origin.Trusted, trusted: []string{"192.0.2.0/24"},
			timeout: 150 * time.Millisecond, hold: true, wantErr: origin.ErrTimeout, wantKind: "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runResolveCase(t, tc) })
	}
}

func runResolveCase(t *testing.T, tc resolveCase) {
	var prefixes []netip.Prefix
	for _, s := range tc.trusted {
		prefixes = append(prefixes, netip.MustParsePrefix(s))
	}
	r, err := origin.NewResolver(origin.Config{Mode: tc.mode, Trusted: prefixes, HeaderTimeout: tc.timeout})
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	ln, dial := listen(t, tc.family)
	client, server := pair(t, ln, dial)
	defer client.Close()
	defer server.Close()

	// A held client's bytes are written before Resolve starts: on loopback
	// they are then in the server's receive buffer, so a short header
	// timeout cannot expire before they arrive, however busy the machine.
	var early error
	if tc.hold && len(tc.send) > 0 {
		_, early = client.Write(tc.send)
	}
	release := make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		err := early
		if len(tc.send) > 0 && !tc.hold {
			_, err = client.Write(tc.send)
		}
		if tc.hold {
			<-release
		}
		if cerr := client.CloseWrite(); err == nil {
			err = cerr
		}
		wrote <- err
	}()

	o, conn, err := r.Resolve(server)
	close(release)
	if werr := <-wrote; werr != nil {
		t.Fatalf("client: %v", werr)
	}
	sockPeer := unmap(client.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort())
	sockLocal := unmap(client.RemoteAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort())
	if tc.wantErr != nil {
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("Resolve() error = %v; want %v", err, tc.wantErr)
		}
		if k := origin.Kind(err); k != tc.wantKind {
			t.Errorf("Kind(%v) = %q; want %q", err, k, tc.wantKind)
		}
		want := origin.Origin{Client: sockPeer, Peer: sockPeer, Server: sockLocal, Via: event.ViaDirect}
		if o != want || conn != nil {
			t.Errorf("Resolve() on error = %+v, %v; want %+v, nil", o, conn, want)
		}
		return
	}
	if err != nil {
		t.Fatalf("Resolve() error = %v (kind %s); want success", err, origin.Kind(err))
	}

	if o.Peer != sockPeer {
		t.Errorf("Peer = %v; want %v", o.Peer, sockPeer)
	}
	if got, want := o.Client, expectAddr(t, tc.wantClient, sockPeer, sockLocal); got != want {
		t.Errorf("Client = %v; want %v", got, want)
	}
	if got, want := o.Server, expectAddr(t, tc.wantServer, sockPeer, sockLocal); got != want {
		t.Errorf("Server = %v; want %v", got, want)
	}
	for _, a := range []netip.AddrPort{o.Client, o.Peer, o.Server} {
		if !a.IsValid() || a.Addr().Is4In6() {
			t.Errorf("address %v is invalid or IPv4-mapped", a)
		}
	}
	if o.Via != tc.wantVia || o.Local != tc.wantLocal || o.VPCEID != tc.wantVPCE {
		t.Errorf("Via, Local, VPCEID = %q, %v, %q; want %q, %v, %q", o.Via, o.Local, o.VPCEID, tc.wantVia, tc.wantLocal, tc.wantVPCE)
	}
	if got := readAll(t, conn); !bytes.Equal(got, tc.wantPayload) {
		t.Errorf("payload = %q; want %q", got, tc.wantPayload)
	}
}

func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

// expectAddr resolves a case's expectation: peer, local, "127.0.0.1:peer"
// (that address with the peer's port, for dual-stack sockets), or ip:port.
func expectAddr(t *testing.T, want string, sockPeer, sockLocal netip.AddrPort) netip.AddrPort {
	t.Helper()
	switch want {
	case peer:
		return sockPeer
	case local:
		return sockLocal
	case "127.0.0.1:" + peer:
		if !sockPeer.Addr().Is4() {
			t.Errorf("dual-stack peer %v is not a plain IPv4 address", sockPeer)
		}
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), sockPeer.Port())
	case "127.0.0.1:" + local:
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), sockLocal.Port())
	}
	return netip.MustParseAddrPort(want)
}

// TestResolveReturnsConnUntouched checks that off mode and a header with
// nothing after it hand back the very connection, with no wrapper.
func TestResolveReturnsConnUntouched(t *testing.T) {
	for _, mode := range []origin.Mode{origin.Off, origin.Required} {
		t.Run(mode.String(), func(t *testing.T) {
			r, err := origin.NewResolver(origin.Config{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			ln, dial := listen(t, "v4")
			client, server := pair(t, ln, dial)
			defer client.Close()
			defer server.Close()
			if mode == origin.Required {
				if _, err := client.Write(v2(t, "203.0.113.7:1", "198.51.100.1:2")); err != nil {
					t.Fatal(err)
				}
			}
			_, conn, err := r.Resolve(server)
			if err != nil {
				t.Fatal(err)
			}
			if conn != server {
				t.Errorf("Resolve returned %T; want the accepted connection itself", conn)
			}
		})
	}
}

// TestResolveClearsDeadline checks that the header deadline does not
// outlive Resolve.
func TestResolveClearsDeadline(t *testing.T) {
	r, err := origin.NewResolver(origin.Config{Mode: origin.Required, HeaderTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, dial := listen(t, "v4")
	client, server := pair(t, ln, dial)
	defer client.Close()
	defer server.Close()
	if _, err := client.Write(v2(t, "203.0.113.7:1", "198.51.100.1:2")); err != nil {
		t.Fatal(err)
	}
	_, conn, err := r.Resolve(server)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // past the header deadline
	go func() { client.Write([]byte("late\n")); client.CloseWrite() }()
	if got := readAll(t, conn); string(got) != "late\n" {
		t.Errorf("payload after the header deadline = %q; want %q", got, "late\n")
	}
}

func TestNewResolverRejects(t *testing.T) {
	p := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, cfg := range []origin.Config{
		{Mode: origin.Trusted},
		{Mode: origin.Off, Trusted: p},
		{Mode: origin.Required, Trusted: p},
		{Mode: origin.Mode(7)},
		{Mode: origin.Required, HeaderTimeout: -time.Second},
		{Mode: origin.Trusted, Trusted: []netip.Prefix{{}}},
		{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("::ffff:0:0/80")}},
	} {
		if _, err := origin.NewResolver(cfg); err == nil {
			t.Errorf("NewResolver(%+v) = nil error; want an error", cfg)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []origin.Mode{origin.Off, origin.Required, origin.Trusted} {
		got, err := origin.ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if _, err := origin.ParseMode("use"); err == nil {
		t.Error(`ParseMode("use") = nil error; want an error`)
	}
}

func TestKind(t *testing.T) {
	for err, want := range map[error]string{
		nil:                         "",
		origin.ErrSpoof:             "spoof",
		origin.ErrMissingHeader:     "missing",
		origin.ErrBadHeader:         "malformed",
		origin.ErrBadCRC:            "crc",
		origin.ErrEmpty:             "empty",
		origin.ErrTimeout:           "timeout",
		errors.New("reset"):         "io",
		proxyproto.ErrInvalidLength: "io",
	} {
		if got := origin.Kind(err); got != want {
			t.Errorf("Kind(%v) = %q; want %q", err, got, want)
		}
	}
}

// TestResolveConcurrent resolves many connections at once through one
// Resolver: each must get its own header's client and its own payload, so
// pooled buffers are never shared with a returned connection.
func TestResolveConcurrent(t *testing.T) {
	const n = 64
	r, err := origin.NewResolver(origin.Config{Mode: origin.Required})
	if err != nil {
		t.Fatal(err)
	}
	ln, dial := listen(t, "v4")
	errs := make(chan error, 2*n)
	msgs := make([][]byte, n)
	for i := range msgs {
		src := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), uint16(10000+i))
		msgs[i] = cat(v2(t, src.String(), "198.51.100.1:80"), []byte(fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i*50))))
	}
	for _, msg := range msgs {
		go func() {
			c, err := net.DialTimeout("tcp", dial, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			errs <- c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c) // until the server closes
		}()
	}
	// Resolve every connection (concurrently) before reading any payload,
	// so the pooled readers are reused while payloads are still pending.
	type resolved struct {
		o    origin.Origin
		conn net.Conn
	}
	results := make(chan resolved, n)
	var wg sync.WaitGroup
	for range n {
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wg.Go(func() {
			o, conn, err := r.Resolve(s)
			if err != nil {
				errs <- err
				return
			}
			results <- resolved{o, conn}
		})
	}
	wg.Wait()
	close(results)
	for res := range results {
		b := readAll(t, res.conn)
		i := int(res.o.Client.Port()) - 10000
		if want := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i*50)); string(b) != want {
			t.Errorf("client %v got payload %.40q...; want %.40q...", res.o.Client, b, want)
		}
		res.conn.Close()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestResolveSplitHeader sends the header in pieces, as a slow or
// fragmenting path may deliver it: Resolve waits for the rest within the
// header timeout (go-proxyproto alone rejects a v1 line that does not
// arrive in one read).
func TestResolveSplitHeader(t *testing.T) {
	line := []byte("after the header\n")
	for name, hdr := range map[string][]byte{
		"v1": v1(t, "203.0.113.7:5555", "198.51.100.1:80"),
		"v2": sealCRC(v2(t, "203.0.113.7:5555", "198.51.100.1:80", crcTLV(), noopTLV(8)), crcAt(12)),
	} {
		for _, cut := range []int{1, 5, 6, 13, 16, 20, len(hdr) - 1} {
			t.Run(fmt.Sprintf("%s/cut%d", name, cut), func(t *testing.T) {
				r, err := origin.NewResolver(origin.Config{Mode: origin.Required})
				if err != nil {
					t.Fatal(err)
				}
				ln, dial := listen(t, "v4")
				client, server := pair(t, ln, dial)
				defer client.Close()
				defer server.Close()
				wrote := make(chan error, 1)
				go func() {
					_, err := client.Write(hdr[:cut])
					time.Sleep(30 * time.Millisecond)
					if err == nil {
						_, err = client.Write(cat(hdr[cut:], line))
					}
					if err == nil {
						err = client.CloseWrite()
					}
					wrote <- err
				}()
				o, conn, err := r.Resolve(server)
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if got := o.Client.String(); got != "203.0.113.7:5555" {
					t.Errorf("Client = %s; want 203.0.113.7:5555", got)
				}
				if got := readAll(t, conn); !bytes.Equal(got, line) {
					t.Errorf("payload = %q; want %q", got, line)
				}
				if err := <-wrote; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
