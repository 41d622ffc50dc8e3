package origin_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/pires/go-proxyproto"
)

// recordingConn remembers every byte read through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	rec bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.rec.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.rec.Bytes())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestHAProxySender puts a real HAProxy (Debian's package) in front of
// Resolve with send-proxy, send-proxy-v2 and send-proxy-v2 with a CRC32C
// TLV, and a client bound to 127.0.0.2: the client address must come out of
// the header, and HAProxy's CRC32C must verify (and fail once a bit of its
// header is flipped), which pins the byte order and coverage of the check
// to a real implementation rather than to this package's own tests.
func TestHAProxySender(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed (apt-get install haproxy): skipping the real PROXY sender test")
	}
	clientIP := netip.MustParseAddr("127.0.0.2")
	for _, tc := range []struct {
		name, option, via string
		crc               bool
	}{
		{"v1", "send-proxy", event.ViaProxyV1, false},
		{"v2", "send-proxy-v2", event.ViaProxyV2, false},
		{"v2-crc32c", "send-proxy-v2 proxy-v2-options crc32c", event.ViaProxyV2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, _ := listen(t, "v4")
			fePort := freePort(t)
			cfg := fmt.Sprintf(`global
	maxconn 64
defaults
	mode tcp
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend fe
	bind 127.0.0.1:%d
	default_backend be
backend be
	server app %s %s
`, fePort, ln.Addr(), tc.option)
			path := filepath.Join(t.TempDir(), "haproxy.cfg")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cmd := exec.CommandContext(ctx, bin, "-db", "-f", path)
			logf, err := os.Create(filepath.Join(t.TempDir(), "haproxy.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd.Stdout, cmd.Stderr = logf, logf
			haproxyLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
			if err := cmd.Start(); err != nil {
				cancel()
				t.Fatalf("starting haproxy: %v", err)
			}
			t.Cleanup(func() { cancel(); cmd.Wait() })

			// Dial through HAProxy from 127.0.0.2 once it listens.
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(clientIP, 0)), Timeout: time.Second}
			var client net.Conn
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				client, err = d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fePort))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("haproxy did not listen: %v\n%s", err, haproxyLog())
				}
			}
			defer client.Close()
			line := []byte("hello through haproxy\n")
			if _, err := client.Write(line); err != nil {
				t.Fatal(err)
			}

			if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			raw, err := ln.Accept()
			if err != nil {
				t.Fatalf("accept from haproxy: %v\n%s", err, haproxyLog())
			}
			defer raw.Close()
			rc := &recordingConn{Conn: raw}
			r, err := origin.NewResolver(origin.Config{Mode: origin.Required})
			if err != nil {
				t.Fatal(err)
			}
			o, conn, err := r.Resolve(rc)
			if err != nil {
				t.Fatalf("Resolve: %v (header bytes %q)", err, rc.bytes())
			}
			if o.Client.Addr() != clientIP || o.Client.Port() != netip.MustParseAddrPort(client.LocalAddr().String()).Port() {
				t.Errorf("Client = %v; want %v", o.Client, client.LocalAddr())
			}
			if o.Server.Port() != uint16(fePort) || o.Via != tc.via || o.Local {
				t.Errorf("Server, Via, Local = %v, %q, %v; want port %d, %q, false", o.Server, o.Via, o.Local, fePort, tc.via)
			}
			got := make([]byte, len(line))
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, line) {
				t.Errorf("payload = %q, %v; want %q", got, err, line)
			}
			if !tc.crc {
				return
			}

			// HAProxy's header carried a CRC32C TLV that verified; a flipped
			// bit in it must now fail.
			rec := rc.bytes()
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(rec)))
			if err != nil {
				t.Fatalf("re-reading haproxy's header: %v", err)
			}
			tlvs, err := h.TLVs()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, tlv := range tlvs {
				found = found || tlv.Type == proxyproto.PP2_TYPE_CRC32C
			}
			if !found {
				t.Fatalf("haproxy sent no CRC32C TLV: %q", rec)
			}
			bad := bytes.Clone(rec)
			bad[17] ^= 0x01 // source address
			lb, dial := listen(t, "v4")
			c2, s2 := pair(t, lb, dial)
			defer c2.Close()
			defer s2.Close()
			if _, err := c2.Write(bad); err != nil {
				t.Fatal(err)
			}
			if _, _, err := r.Resolve(s2); !errors.Is(err, origin.ErrBadCRC) {
				t.Errorf("Resolve(haproxy header with a flipped bit) = %v; want ErrBadCRC", err)
			}
		})
	}
}
