package origin_test

import (
	"io"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/origin"
)

// BenchmarkResolve measures Resolve plus reading the first line on one
// loopback TCP connection reused for every iteration: the client writes the
// first bytes (header and line, in one segment as an NLB sends them), the
// server resolves and reads the line. The write and read syscalls are part
// of the cost; off mode shows that baseline.
func BenchmarkResolve(b *testing.B) {
	line := []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
	nlb := sealCRC(v2(b, "203.0.113.7:40000", "10.0.1.5:80", crcTLV(), vpceTLV("vpce-08d2bf15fa3e9d3b5"), noopTLV(4)), crcAt(12))
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	untrusted := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	for _, bc := range []struct {
		name string
		cfg  origin.Config
		send []byte
	}{
		{"off", origin.Config{Mode: origin.Off}, line},
		{"required/v2+crc+vpce", origin.Config{Mode: origin.Required}, cat(nlb, line)},
		{"required/v2", origin.Config{Mode: origin.Required}, cat(v2(b, "203.0.113.7:40000", "10.0.1.5:80"), line)},
		{"required/v1", origin.Config{Mode: origin.Required}, cat(v1(b, "203.0.113.7:40000", "10.0.1.5:80"), line)},
		{"trusted/peer-v2", origin.Config{Mode: origin.Trusted, Trusted: trusted}, cat(nlb, line)},
		{"trusted/direct", origin.Config{Mode: origin.Trusted, Trusted: untrusted}, line},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := origin.NewResolver(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			ln, dial := listen(b, "v4")
			client, server := pair(b, ln, dial)
			defer client.Close()
			defer server.Close()
			buf := make([]byte, len(line))
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.send)))
			for b.Loop() {
				if _, err := client.Write(bc.send); err != nil {
					b.Fatal(err)
				}
				o, conn, err := r.Resolve(server)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, buf); err != nil {
					b.Fatal(err)
				}
				if !o.Client.IsValid() {
					b.Fatal("invalid client")
				}
			}
		})
	}
}
