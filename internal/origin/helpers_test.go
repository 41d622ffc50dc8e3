package origin_test

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// listen opens a loopback listener: "v4" 127.0.0.1:0, "v6" [::1]:0, or
// "dual" :0 (IPv4 peers then appear as ::ffff:a.b.c.d on the socket). It
// skips the test when the family is unavailable.
func listen(tb testing.TB, family string) (ln net.Listener, dial string) {
	tb.Helper()
	addr := map[string]string{"v4": "127.0.0.1:0", "v6": "[::1]:0", "dual": ":0"}[family]
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Skipf("no %s loopback listener (%v): skipping", family, err)
	}
	tb.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	host := "127.0.0.1"
	if family == "v6" {
		host = "::1"
	}
	return ln, net.JoinHostPort(host, strconv.Itoa(port))
}

// pair dials ln and returns the client and the accepted server side.
func pair(tb testing.TB, ln net.Listener, dial string) (client *net.TCPConn, server net.Conn) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", dial, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", dial, err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		tb.Fatalf("accept: %v", err)
	}
	return c.(*net.TCPConn), s
}

// readAll reads conn to EOF under a deadline.
func readAll(tb testing.TB, conn net.Conn) []byte {
	tb.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		tb.Fatalf("set deadline: %v", err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		tb.Fatalf("reading payload: %v", err)
	}
	return b
}

func tcpAddr(s string) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

// v2 builds a PROXY v2 PROXY-command header with go-proxyproto's writer.
func v2(tb testing.TB, src, dst string, tlvs ...proxyproto.TLV) []byte {
	tb.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2, tcpAddr(src), tcpAddr(dst))
	return format(tb, h, tlvs)
}

// v2Local builds a PROXY v2 LOCAL/UNSPEC header.
func v2Local(tb testing.TB, tlvs ...proxyproto.TLV) []byte {
	tb.Helper()
	h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	return format(tb, h, tlvs)
}

// v1 builds a PROXY v1 line with go-proxyproto's writer.
func v1(tb testing.TB, src, dst string) []byte {
	tb.Helper()
	return format(tb, proxyproto.HeaderProxyFromAddrs(1, tcpAddr(src), tcpAddr(dst)), nil)
}

func format(tb testing.TB, h *proxyproto.Header, tlvs []proxyproto.TLV) []byte {
	tb.Helper()
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			tb.Fatalf("SetTLVs: %v", err)
		}
	}
	b, err := h.Format()
	if err != nil {
		tb.Fatalf("Format: %v", err)
	}
	return b
}

// crcTLV is a CRC32C TLV with a zero value, to be filled by sealCRC.
func crcTLV() proxyproto.TLV {
	return proxyproto.TLV{Type: proxyproto.PP2_TYPE_CRC32C, Value: make([]byte, 4)}
}

// noopTLV is padding, as AWS NLBs send it.
func noopTLV(n int) proxyproto.TLV {
	return proxyproto.TLV{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, n)}
}

func vpceTLV(id string) proxyproto.TLV {
	return proxyproto.TLV{Type: tlvparse.PP2_TYPE_AWS, Value: append([]byte{tlvparse.PP2_SUBTYPE_AWS_VPCE_ID}, id...)}
}

// sealCRC computes the CRC32C (Castagnoli) of hdr, whose CRC32C TLV value
// (4 zero bytes) starts at valueAt, and stores it big-endian, as the spec
// (RFC 4960 appendix B) and HAProxy do.
func sealCRC(hdr []byte, valueAt int) []byte {
	out := append([]byte(nil), hdr...)
	sum := crc32.Checksum(out, crc32.MakeTable(crc32.Castagnoli))
	binary.BigEndian.PutUint32(out[valueAt:], sum)
	return out
}

// crcAt returns the offset of the CRC32C TLV value in a header whose TLV
// vector starts right after an address block of addrLen bytes and whose
// first TLV is the CRC32C one.
func crcAt(addrLen int) int { return 16 + addrLen + 3 }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
