package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/server"
	"github.com/prometheus/client_golang/prometheus"
)

const haproxyBin = "/usr/sbin/haproxy"

var haproxyConfig = template.Must(template.New("cfg").Parse(`global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{{range .}}
frontend fe_{{.Name}}
    bind {{.Front}}
    default_backend be_{{.Name}}
backend be_{{.Name}}
    server app {{.App}} {{.Options}}
{{end}}`))

type haproxyFront struct {
	Name, Front, App, Options string
}

// startHAProxy runs Debian's haproxy in the foreground with the given
// frontends, on loopback, until the test ends. It skips the test when
// haproxy is not installed.
func startHAProxy(t *testing.T, fronts []haproxyFront) {
	t.Helper()
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Skipf("skipping: %s not installed (apt-get install haproxy): %v", haproxyBin, err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	var b bytes.Buffer
	if err := haproxyConfig.Execute(&b, fronts); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(haproxyBin, "-c", "-f", cfgPath)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, b.String())
	}
	var logs bytes.Buffer
	cmd := exec.Command(haproxyBin, "-db", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", logs.String())
		}
	})
	for _, f := range fronts {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			// A bare connect is enough to see the port is open; haproxy
			// forwards it and the app records an empty connection, which the
			// tests below account for by matching events by client address.
			c, err := net.DialTimeout("tcp", f.Front, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy not listening on %s: %v", f.Front, err)
			}
		}
	}
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago. The listeners stay open until all are picked, so no port
// repeats (haproxy binds with SO_REUSEPORT: two frontends on one port would
// share its connections).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// dialFrom dials addr from the loopback source src (any 127.0.0.0/8
// address works on Linux without configuration).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("skipping: cannot bind the loopback source %s: %v", src, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// Ensure the app reports the true client address that a real HAProxy sends
// in PROXY v1 and v2 headers (and a v2 header with a CRC32C TLV), over the
// line protocol and HTTP, in modes trusted and required; that a client
// bypassing the proxy is direct (trusted) or refused (required); that a
// client forging a header is refused as a spoof; and that HAProxy's v2 health
// checks (LOCAL) are recorded as health checks, not clients.
func TestHAProxyInterop(t *testing.T) {
	for _, mode := range []origin.Mode{origin.Trusted, origin.Required} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := origin.Config{Mode: mode}
			if mode == origin.Trusted {
				cfg.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}
			res, err := origin.NewResolver(cfg)
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			ts := startServer(t, func(c *server.Config) { c.Resolver = res; c.Registerer = reg })
			ports := freeAddrs(t, 4)
			fronts := []haproxyFront{
				{"v1", ports[0], ts.addr, "send-proxy"},
				{"v2", ports[1], ts.addr, "send-proxy-v2"},
				{"v2crc", ports[2], ts.addr, "send-proxy-v2 proxy-v2-options crc32c"},
				{"v2check", ports[3], ts.addr, "send-proxy-v2 check inter 100ms"},
			}
			startHAProxy(t, fronts)

			type result struct {
				self netip.AddrPort
				via  string
				conn string
			}
			var results []result
			for i, f := range fronts {
				via := event.ViaProxyV2
				if f.Name == "v1" {
					via = event.ViaProxyV1
				}
				src := fmt.Sprintf("127.0.0.%d", 20+i)

				// Line protocol through the proxy.
				c := dialFrom(t, src, f.Front)
				lc := &lineClient{Conn: c, br: bufio.NewReader(c)}
				r := lc.report(t)
				self := addrOf(t, c.LocalAddr())
				if r[report.KeyClient] != self.String() || r[report.KeyVia] != via || r[report.KeyServer] != f.Front {
					t.Errorf("%s: report client=%s via=%s server=%s; want %s %s %s", f.Name,
						r[report.KeyClient], r[report.KeyVia], r[report.KeyServer], self, via, f.Front)
				}
				if peer := r[report.KeyPeer]; !strings.HasPrefix(peer, "127.0.0.1:") {
					t.Errorf("%s: peer = %s; want HAProxy's 127.0.0.1", f.Name, peer)
				}
				lc.readLine(t) // greeting
				lc.send(t, "echo through haproxy\n")
				if got := lc.readLine(t); got != "echo through haproxy" {
					t.Errorf("%s: echo = %q", f.Name, got)
				}
				lc.send(t, "quit\n")
				results = append(results, result{self, via, r[report.KeyConn]})

				// HTTP through the proxy, from another source address.
				hsrc := fmt.Sprintf("127.0.0.%d", 40+i)
				var hself netip.AddrPort
				client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
					DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
						d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hsrc)}}
						c, err := d.DialContext(ctx, network, addr)
						if err == nil {
							hself = addrOf(t, c.LocalAddr())
						}
						return c, err
					},
					DisableKeepAlives: true,
				}}
				resp, err := client.Get("http://" + f.Front + "/")
				if err != nil {
					t.Fatalf("%s: GET /: %v", f.Name, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				hr, err := report.ParseJSON(body)
				if err != nil {
					t.Fatalf("%s: %s: %v", f.Name, body, err)
				}
				if hr[report.KeyClient] != hself.String() || hr[report.KeyVia] != via {
					t.Errorf("%s: HTTP report client=%s via=%s; want %s %s", f.Name, hr[report.KeyClient], hr[report.KeyVia], hself, via)
				}
				results = append(results, result{hself, via, hr[report.KeyConn]})
			}

			// A client that reaches the app directly, without the proxy.
			direct := dialFrom(t, "127.0.0.60", ts.addr)
			dc := &lineClient{Conn: direct, br: bufio.NewReader(direct)}
			dc.send(t, "hello\n")
			if mode == origin.Trusted {
				l := dc.readLine(t)
				if r, err := report.ParseLine(l); err != nil || r[report.KeyVia] != event.ViaDirect || r[report.KeyClient] != direct.LocalAddr().String() {
					t.Errorf("direct client in trusted mode: %q %v", l, err)
				}
				direct.Close()
			} else {
				if l := dc.readLine(t); !strings.HasPrefix(l, "error="+report.ErrorHeaderRequired+" ") {
					t.Errorf("direct client in required mode: %q, want a refusal line error=%s", l, report.ErrorHeaderRequired)
				}
				expectEOF(t, direct, dc.br)
			}
			// A client forging a header from an untrusted source (trusted
			// mode; required mode trusts the network to keep clients out).
			var forger net.Conn
			if mode == origin.Trusted {
				forger = dialFrom(t, "127.0.0.61", ts.addr)
				io.WriteString(forger, "PROXY TCP4 192.0.2.1 192.0.2.2 1111 80\r\nhello\n")
				fbr := bufio.NewReader(forger)
				if l, _ := fbr.ReadString('\n'); !strings.HasPrefix(l, "error="+report.ErrorHeaderUntrusted+" ") {
					t.Errorf("forged header from an untrusted source: %q, want a refusal line error=%s", l, report.ErrorHeaderUntrusted)
				}
				expectEOF(t, forger, fbr)
			}

			// Let haproxy run a few health checks, then stop everything.
			time.Sleep(300 * time.Millisecond)
			ts.stop(t)
			evs := ts.rec.wait(int(ts.rec.published.Load()))
			byID(t, evs)
			src := bySource(evs)
			for _, r := range results {
				ev, ok := src[r.self]
				if !ok {
					t.Errorf("no event for client %v", r.self)
					continue
				}
				if ev.ClientIP.Via != r.via || ev.Event.ID != r.conn || ev.Event.Reason != "served" || !strings.HasPrefix(ev.ClientIP.Peer.IP.String(), "127.0.0.1") {
					t.Errorf("event for %v: via %s id %s reason %s peer %v", r.self, ev.ClientIP.Via, ev.Event.ID, ev.Event.Reason, ev.ClientIP.Peer.IP)
				}
				if ev.Source.Bytes <= int64(len("hello\n")) {
					t.Errorf("event for %v: source.bytes %d does not include the PROXY header", r.self, ev.Source.Bytes)
				}
			}
			wantDirect := "served"
			if mode == origin.Required {
				wantDirect = "proxy-header-missing"
			}
			if ev := src[addrOf(t, direct.LocalAddr())]; ev.Event.Reason != wantDirect {
				t.Errorf("direct client: reason %q; want %q", ev.Event.Reason, wantDirect)
			}
			if forger != nil {
				if ev := src[addrOf(t, forger.LocalAddr())]; ev.Event.Reason != "proxy-header-spoof" || ev.Event.Action != event.ActionRefused {
					t.Errorf("forged header: %s/%q; want connection-refused/proxy-header-spoof", ev.Event.Action, ev.Event.Reason)
				}
			}
			wantKind := map[origin.Mode]string{origin.Trusted: "spoof", origin.Required: "missing"}[mode]
			if v := metricValue(t, reg, "originlens_proxy_header_errors_total", map[string]string{"kind": wantKind}); v != 1 {
				t.Errorf("originlens_proxy_header_errors_total{kind=%q} = %v; want 1", wantKind, v)
			}
			if v := metricValue(t, reg, "originlens_connections_total", map[string]string{"action": event.ActionClosed, "reason": "served", "via": event.ViaProxyV2}); v < 6 {
				t.Errorf("originlens_connections_total{served, proxy-v2} = %v; want at least 6", v)
			}
			if v := metricValue(t, reg, "originlens_open_connections", nil); v != 0 {
				t.Errorf("originlens_open_connections = %v after the drain; want 0", v)
			}
			checks := 0
			for _, ev := range evs {
				if ev.Event.Reason == "health-check" {
					checks++
					if ev.Source.IP.String() != "127.0.0.1" || ev.ClientIP.Via != event.ViaProxyV2 {
						t.Errorf("health check event: source %v via %s; want the socket peer via proxy-v2", ev.Source.IP, ev.ClientIP.Via)
					}
				}
			}
			if checks == 0 {
				t.Errorf("no health-check events from haproxy's v2 checks (LOCAL)")
			}
		})
	}
}
