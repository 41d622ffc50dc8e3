package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
	"github.com/pires/go-proxyproto"
)

// Ensure the per-IP limit flags reach the limiter with the source prefix
// flags (issue #13.8): with the flags, 20 IPv6 clients of one /64
// behind a trusted proxy get what one client gets, and every event names
// the /64; with --limit-prefix-v6 128 each address is its own source again.
func TestPerIPLimitsCountThePrefix(t *testing.T) {
	base := []string{"--listen", "127.0.0.1:0", "--admin", "", "--drain-timeout", "2s",
		"--proxy-protocol", "trusted", "--trusted-proxies", "127.0.0.1",
		"--conn-rate-per-ip", "1", "--conn-burst-per-ip", "1", "--max-conns-per-ip", "2"}
	for _, tt := range []struct {
		name string
		args []string
		bits int // the IPv6 source prefix length the flags ask for
	}{
		{"default /64", nil, 64},
		{"per address", []string{"--limit-prefix-v6", "128"}, 128},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			cfg, err := parseConfig(append(base, tt.args...), env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			addrs := make(chan net.Addr, 1)
			cfg.ready = func(app, _ net.Addr) { addrs <- app }
			var stdout, stderr syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(ctx, cfg, &stdout, &stderr) }()
			var addr net.Addr
			select {
			case addr = <-addrs:
			case err := <-done:
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}

			start := time.Now()
			served := 0
			for i := range 20 {
				src := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 7, 8: byte(i), 15: byte(i * 3)}), 40000)
				switch r := proxiedReport(t, addr.String(), src); {
				case r[report.KeyDecision] == policy.Serve:
					served++
				case r[report.KeyReason] != "rate-limited":
					t.Fatalf("connection %d: report %v", i, r)
				}
			}
			// A token comes back each second: a slow machine may earn a few.
			allowed := 1 + int(time.Since(start).Seconds())
			switch {
			case tt.bits == 64 && (served < 1 || served > allowed):
				t.Errorf("20 clients of one /64 in %v: %d served, want 1 to %d (burst 1, rate 1/s)", time.Since(start), served, allowed)
			case tt.bits == 128 && served != 20:
				t.Errorf("20 addresses with --limit-prefix-v6 128: %d served, want all", served)
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run = %v", err)
				}
			case <-time.After(60 * time.Second): // failure bound only
				t.Fatal("run did not return")
			}
			evs := parseEvents(t, stdout.String())
			if len(evs) != 20 {
				t.Fatalf("%d events, want 20", len(evs))
			}
			for _, ev := range evs {
				if want, _ := ev.Source.IP.Prefix(tt.bits); ev.ClientIP.LimitPrefix != want || !want.IsValid() {
					t.Errorf("event of %v: clientip.limit_prefix %v, want %v", ev.Source.IP, ev.ClientIP.LimitPrefix, want)
				}
			}
		})
	}
}

// proxiedReport sends a PROXY v2 header for src and a first line, and
// returns the report line.
func proxiedReport(t *testing.T, addr string, src netip.AddrPort) report.Report {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr:      net.TCPAddrFromAddrPort(src),
		DestinationAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:ffff::1]:80"))}
	hdr, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(append(hdr, "hello\n"...)); err != nil {
		t.Fatal(err)
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.ParseLine(l)
	if err != nil {
		t.Fatalf("report %q: %v", l, err)
	}
	return r
}

// Ensure a bad source prefix length exits 2 with one line naming the flag,
// the value and an example, from the flag and from the environment.
func TestBinaryBadLimitPrefix(t *testing.T) {
	bin := appBinary(t)
	for _, tt := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"--limit-prefix-v4", "33"}, nil, "--limit-prefix-v4 33: must be a prefix length 1-32, got 33 (e.g. --limit-prefix-v4 32)"},
		{nil, []string{"APP_LIMIT_PREFIX_V6=0"}, "--limit-prefix-v6 0: must be a prefix length 1-128, got 0 (e.g. --limit-prefix-v6 64)"},
		{nil, []string{"APP_LIMIT_PREFIX_V6=/64"}, "APP_LIMIT_PREFIX_V6"},
	} {
		cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--admin", ""}, tt.args...)...)
		cmd.Env = append(cmd.Environ(), tt.env...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v %v: exit %v; want status 2", tt.args, tt.env, err)
		}
		if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.want) {
			t.Errorf("%v %v: stderr %q; want one line containing %q", tt.args, tt.env, msg, tt.want)
		}
	}
}
