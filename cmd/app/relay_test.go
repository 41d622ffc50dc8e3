package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/relay"
)

// Ensure the relay flags and their environment variables parse, default to
// no relay in transparent mode, and bad values name the flag.
func TestParseConfigRelay(t *testing.T) {
	cfg, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil || cfg.Upstream != "" || cfg.UpstreamMode != relay.Transparent || cfg.UpstreamMark != 0 {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = parseConfig([]string{"--upstream", "127.0.0.1:8080", "--upstream-mark", "123"},
		env(map[string]string{"APP_UPSTREAM_MODE": "proxy-v2"}), io.Discard)
	if err != nil || cfg.Upstream != "127.0.0.1:8080" || cfg.UpstreamMode != relay.ProxyV2 || cfg.UpstreamMark != 123 {
		t.Fatalf("relay flags: %+v, %v", cfg, err)
	}
	// Another address on the listen port is no loop.
	if _, err := parseConfig([]string{"--listen", "10.0.0.5:80", "--upstream", "127.0.0.1:80"}, env(nil), io.Discard); err != nil {
		t.Errorf("--listen 10.0.0.5:80 --upstream 127.0.0.1:80: %v", err)
	}
	cfg, err = parseConfig(nil, env(map[string]string{"APP_UPSTREAM": "localhost:22"}), io.Discard)
	if err != nil || cfg.Upstream != "localhost:22" {
		t.Fatalf("APP_UPSTREAM: %+v, %v", cfg, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--upstream", "127.0.0.1"}, "--upstream 127.0.0.1:"},
		{[]string{"--upstream", "127.0.0.1:0"}, "--upstream 127.0.0.1:0:"},
		{[]string{"--upstream", "127.0.0.1:99999"}, "--upstream 127.0.0.1:99999:"},
		{[]string{"--upstream-mode", "proxy"}, "--upstream-mode proxy:"},
		{[]string{"--upstream", "127.0.0.1:80"}, "--upstream 127.0.0.1:80:"}, // the default --listen :80: a loop
		{[]string{"--upstream", "localhost:80"}, "--upstream localhost:80:"}, // the same
		{[]string{"--listen", "127.0.0.1:81", "--upstream", "127.0.0.1:81"}, "--upstream 127.0.0.1:81:"},
		{[]string{"--upstream-mark", "-1"}, "--upstream-mark -1:"},
	} {
		_, err := parseConfig(tt.args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseConfig(%q) = %v; want one line naming %s", tt.args, err, tt.want)
		}
	}
}

// Ensure the binary relays in plain mode: the client gets the upstream's
// answer, not a report, and the event on stdout carries relay.*.
func TestBinaryRelaysPlain(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); c.Write([]byte("upstream says hi\n")); io.Copy(c, c) }()
		}
	}()
	cmd, addr, _, stdout, _ := startBinary(t, "--upstream", ln.Addr().String(), "--upstream-mode", "plain")
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); l != "upstream says hi\n" {
		t.Fatalf("client read %q, %v; want the upstream's greeting", l, err)
	}
	c.Write([]byte("ping\n"))
	if l, _ := br.ReadString('\n'); l != "ping\n" {
		t.Errorf("echo through the relay = %q", l)
	}
	c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), `"relay"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	evs := parseEvents(t, stdout.String())
	if len(evs) != 1 || evs[0].Relay.Mode != "plain" || evs[0].Relay.Upstream.Port != uint16(ln.Addr().(*net.TCPAddr).Port) ||
		evs[0].Source.Bytes != 5 || evs[0].Destination.Bytes != 22 {
		t.Errorf("events %+v; want one relayed event with 5 bytes in and 22 out", evs)
	}
}

// Ensure transparent mode refuses to start where it cannot work (no
// routing here, or no capability) with status 2 and the exact commands.
func TestBinaryTransparentCheckFails(t *testing.T) {
	if out, _ := exec.Command("ip", "rule", "show").Output(); os.Geteuid() == 0 && bytes.Contains(out, []byte("lookup 123")) {
		t.Skip("skipping: this host has the relay routing (ip rule ... lookup 123): the check would pass")
	}
	cmd := exec.Command(appBinary(t), "--listen", "127.0.0.1:0", "--admin", "", "--upstream", "127.0.0.1:9")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v; want status 2\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"ip rule add from 127.0.0.1/8 iif lo table 123", "ip route add local 0.0.0.0/0 dev lo table 123",
		"ip -6 rule add from ::1/128 iif lo table 123", "ip -6 route add local ::/0 dev lo table 123", "CAP_NET_ADMIN",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
