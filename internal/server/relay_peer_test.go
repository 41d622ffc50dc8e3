package server_test

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/server"
)

const relayNginxBin = "/usr/sbin/nginx"

// runRelayPeer starts a real server (haproxy or nginx) in the foreground with
// cfg written to dir/name until the test ends, and waits until addr
// accepts connections.
func runRelayPeer(t *testing.T, bin string, args []string, addr string) {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, logs.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s: %v\n%s", bin, addr, err, logs.String())
		}
	}
}

// haproxyHasTLVFetch reports whether this HAProxy can read any PROXY v2
// TLV (fc_pp_tlv, HAProxy 2.9+).
func haproxyHasTLVFetch(t *testing.T, dir string) bool {
	cfg := filepath.Join(dir, "probe.cfg")
	os.WriteFile(cfg, []byte("defaults\n  mode http\n  timeout client 1s\n  timeout server 1s\n  timeout connect 1s\nfrontend f\n  bind 127.0.0.1:1\n  http-request return status 200 lf-string \"%[fc_pp_tlv(0xE0)]\"\n"), 0o600)
	return exec.Command(haproxyBin, "-c", "-f", cfg).Run() == nil
}

// Ensure real PROXY protocol readers take the relay's header: HAProxy
// (accept-proxy, answering the address it learnt) and nginx (stream listen
// proxy_protocol, returning $proxy_protocol_addr) see the client behind the
// relay, in v2 and v1; where HAProxy can read TLVs (fc_pp_tlv, 2.9+) it
// sees the country and decision TLVs too.
func TestRelayHeaderToRealPeers(t *testing.T) {
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Skipf("skipping: %s not installed: %v", haproxyBin, err)
	}
	if _, err := os.Stat(relayNginxBin); err != nil {
		t.Skipf("skipping: %s not installed: %v", relayNginxBin, err)
	}
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	hapAddr, ngxAddr := addrs[0], addrs[1]
	tlvs := haproxyHasTLVFetch(t, dir)
	answer := `%[src] %[src_port]`
	if tlvs {
		answer += ` %[fc_pp_tlv(0xE0)] %[fc_pp_tlv(0xE2)]`
	} else {
		t.Logf("this HAProxy has no fc_pp_tlv (2.9+): the TLVs are checked by go-proxyproto in internal/relay only")
	}
	hcfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(hcfg, []byte(`defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend upstream
    bind `+hapAddr+` accept-proxy
    http-request return status 200 content-type text/plain lf-string "`+answer+`\n"
`), 0o600)
	runRelayPeer(t, haproxyBin, []string{"-db", "-f", hcfg}, hapAddr)

	ncfg := filepath.Join(dir, "nginx.conf")
	os.WriteFile(ncfg, []byte(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
pid `+dir+`/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
stream {
    server {
        listen `+ngxAddr+` proxy_protocol;
        return "$proxy_protocol_addr $proxy_protocol_port\n";
    }
}
`), 0o600)
	runRelayPeer(t, relayNginxBin, []string{"-c", ncfg, "-p", dir, "-e", "stderr"}, ngxAddr)

	for _, tc := range []struct {
		peer, addr, src string
		mode            relay.Mode
		send            string
	}{
		{"haproxy", hapAddr, "127.0.0.31", relay.ProxyV2, "GET / HTTP/1.0\r\n\r\n"},
		{"haproxy", hapAddr, "127.0.0.32", relay.ProxyV1, "GET / HTTP/1.0\r\n\r\n"},
		{"nginx", ngxAddr, "127.0.0.33", relay.ProxyV2, ""},
		{"nginx", ngxAddr, "127.0.0.34", relay.ProxyV1, ""},
	} {
		t.Run(tc.peer+"-"+tc.mode.String(), func(t *testing.T) {
			ts := startServer(t, func(c *server.Config) {
				c.Relay = relayDialer(t, tc.addr, tc.mode)
				c.Decider = deciderFunc(func(netip.Addr, geo.Location) policy.Decision {
					return policy.Decision{Decision: policy.Serve, Rule: "r", Region: "eu"}
				})
				c.Locator = relayLocator(func(netip.Addr) geo.Location { return geo.Location{CountryISO: "DE", ASN: 64500} })
			})
			conn := dialFrom(t, tc.src, ts.addr)
			if tc.send != "" {
				conn.Write([]byte(tc.send))
			}
			b, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			port := addrOf(t, conn.LocalAddr()).Port()
			want := tc.src + " " + relayPort(port)
			if tc.peer == "haproxy" && tlvs && tc.mode == relay.ProxyV2 {
				want += " DE serve"
			}
			if !strings.Contains(string(b), want+"\n") {
				t.Errorf("%s answered %q, want it to contain %q", tc.peer, b, want)
			}
		})
	}
}

// relayLocator is a Locator from a function.
type relayLocator func(netip.Addr) geo.Location

func (f relayLocator) Lookup(a netip.Addr) geo.Location { return f(a) }
