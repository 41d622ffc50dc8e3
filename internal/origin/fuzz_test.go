package origin_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/pires/go-proxyproto"
)

// fuzzSeeds are the first bytes of real-looking connections: header plus
// first line.
func fuzzSeeds(tb testing.TB) [][]byte {
	line := []byte("hello\n")
	nlb := sealCRC(v2(tb, "203.0.113.7:40000", "10.0.1.5:80", crcTLV(), vpceTLV("vpce-08d2bf15fa3e9d3b5"), noopTLV(4)), crcAt(12))
	nlb6 := sealCRC(v2(tb, "[2001:db8::7]:40000", "[2001:db8:1::5]:80", crcTLV(), noopTLV(2)), crcAt(36))
	badCRC := bytes.Clone(nlb)
	badCRC[crcAt(12)+1] ^= 0x55
	return [][]byte{
		// AWS NLB v2 (captured shape: CRC32C, VPC endpoint, NOOP) + a line.
		cat(nlb, line),
		cat(nlb6, []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")),
		cat(badCRC, line),
		// NLB health check: LOCAL, UNSPEC, CRC32C and NOOP, no payload.
		sealCRC(v2Local(tb, crcTLV(), noopTLV(3)), crcAt(0)),
		v2Local(tb),
		// HAProxy send-proxy (v1) + an HTTP request.
		[]byte("PROXY TCP4 203.0.113.7 198.51.100.1 56324 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		[]byte("PROXY TCP6 2001:db8::7 2001:db8::1 56324 8080\r\nhello\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		// Junk, partial signatures and a PROXY header after payload.
		{},
		[]byte("hello\n"),
		[]byte("PRO"),
		[]byte("PROXY "),
		[]byte("PROXY TCP4 1.2.3.4"),
		proxyproto.SIGV2,
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"),
		cat(line, nlb),
		[]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), // TLS ClientHello start
	}
}

// FuzzResolve feeds the first bytes of a connection over loopback TCP to
// every mode and checks the invariants: no panic; an accepted connection has
// a valid, unmapped client; what is handed back is a suffix of the input
// (the input itself in off mode, and for an untrusted peer that sent no
// PROXY signature); only a PROXY signature is ever accepted as a header.
func FuzzResolve(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	ln, dial := listen(f, "v4")
	mk := func(mode origin.Mode, trusted ...string) *origin.Resolver {
		var ps []netip.Prefix
		for _, s := range trusted {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		r, err := origin.NewResolver(origin.Config{Mode: mode, Trusted: ps, HeaderTimeout: 5 * time.Second})
		if err != nil {
			f.Fatal(err)
		}
		return r
	}
	type setup struct {
		name string
		r    *origin.Resolver
	}
	setups := []setup{
		{"off", mk(origin.Off)},
		{"required", mk(origin.Required)},
		{"trusted-peer", mk(origin.Trusted, "127.0.0.0/8")},
		{"untrusted-peer", mk(origin.Trusted, "192.0.2.0/24")},
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		hasSig := bytes.HasPrefix(in, []byte("PROXY ")) || bytes.HasPrefix(in, proxyproto.SIGV2)
		for _, s := range setups {
			client, server := pair(t, ln, dial)
			wrote := make(chan error, 1)
			go func() {
				_, err := client.Write(in)
				if cerr := client.CloseWrite(); err == nil {
					err = cerr
				}
				wrote <- err
			}()
			o, conn, err := s.r.Resolve(server)
			var got []byte
			if err == nil {
				got = readAll(t, conn) // drains the client's write
				if werr := <-wrote; werr != nil {
					t.Fatalf("%s: client: %v", s.name, werr)
				}
			} else {
				server.Close() // unblocks a client write the server will never read
				<-wrote
			}
			client.Close()
			server.Close()

			if err != nil {
				switch origin.Kind(err) {
				case "spoof", "missing", "malformed", "crc", "empty":
				default:
					t.Fatalf("%s: Resolve(%q) error %v has kind %q; want a protocol error", s.name, in, err, origin.Kind(err))
				}
				if errors.Is(err, origin.ErrEmpty) != (len(in) == 0) {
					t.Fatalf("%s: Resolve(%q) = %v; ErrEmpty exactly when nothing was sent", s.name, in, err)
				}
			} else {
				if !o.Client.IsValid() || o.Client.Addr().Is4In6() || o.Peer.Addr().Is4In6() || o.Server.Addr().Is4In6() {
					t.Fatalf("%s: Resolve(%q) = %+v; want valid unmapped addresses", s.name, in, o)
				}
				if !bytes.HasSuffix(in, got) {
					t.Fatalf("%s: Resolve(%q) handed back %q, not a suffix of the input", s.name, in, got)
				}
				if (o.Via != event.ViaDirect) && !hasSig {
					t.Fatalf("%s: Resolve(%q) accepted a header without a signature: %+v", s.name, in, o)
				}
				if o.Via == event.ViaDirect && (o.Client != o.Peer || o.Local) {
					t.Fatalf("%s: Resolve(%q) = %+v; a direct client is the peer", s.name, in, o)
				}
			}

			switch s.name {
			case "off":
				if err != nil || !bytes.Equal(got, in) || o.Via != event.ViaDirect {
					t.Fatalf("off: Resolve(%q) = %+v, payload %q, %v; want the input untouched", in, o, got, err)
				}
			case "required", "trusted-peer":
				if err == nil && o.Via == event.ViaDirect {
					t.Fatalf("%s: Resolve(%q) accepted a connection without a header", s.name, in)
				}
			case "untrusted-peer":
				switch {
				case hasSig:
					if !errors.Is(err, origin.ErrSpoof) {
						t.Fatalf("untrusted: Resolve(%q) = %v; want ErrSpoof", in, err)
					}
				case len(in) > 0:
					if err != nil || !bytes.Equal(got, in) || o.Via != event.ViaDirect {
						t.Fatalf("untrusted: Resolve(%q) = %+v, payload %q, %v; want a direct client with the input byte-exact", in, o, got, err)
					}
				}
			}
		}
	})
}
