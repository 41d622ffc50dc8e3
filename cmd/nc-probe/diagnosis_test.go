package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
)

// startLineServer serves answer on 127.0.0.1:0: it reads the client's
// first line, then calls answer with the connection (which it closes
// after). It is the "not an originlens server" of the diagnosis tests.
func startLineServer(tb testing.TB, answer func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	tb.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				stop := make(chan struct{})
				defer close(stop)
				go func() { // closes c at cleanup, for the server that waits forever
					select {
					case <-done:
						c.Close()
					case <-stop:
					}
				}()
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				answer(c)
			})
		}
	})
	return ln.Addr().String()
}

// diagJSON is the part of --json output the diagnosis tests read.
type diagJSON struct {
	Verdict   string `json:"verdict"`
	Diagnosis string `json:"diagnosis"`
	Advice    string `json:"advice"`
	ServerSaw string `json:"server_saw"`
	ExitCode  int    `json:"exit_code"`
}

// TestDiagnosis: one scenario per diagnosis code, each produced by a real
// server (the app and nc-probe listen in each PROXY protocol mode, a socat
// relay bound to another address, HAProxy sending v1 and v2, a closed
// port, a server that closes without answering, one that answers
// something else, one that never answers), each checked for its code, its
// sentence on stderr (the cause and the setting to check) and the exit
// code.
func TestDiagnosis(t *testing.T) {
	const claim = "203.0.113.10:4000"
	type server func(testing.TB, ...string) (string, *syncBuf)
	servers := map[string]server{"app": startAppArgs, "listen": startListenArgs}
	trusted := []string{"--proxy-protocol", "trusted", "--trusted-proxies", trustedSrc + "/32"}
	cases := []struct {
		name     string
		mode     []string                               // the server's PROXY protocol flags; nil: no originlens server
		target   func(t *testing.T, addr string) string // the path to probe; nil: the server itself
		args     []string
		diag     string
		sentence []string // substrings of the stderr sentence
		exit     int
	}{
		{name: "PreservedDirect", mode: []string{"--proxy-protocol", "off"},
			diag: "preserved", sentence: []string{"preserved: the server saw 127.0.0.1"}, exit: exitPreserved},
		{name: "PreservedHAProxyV1", mode: trusted,
			target: func(t *testing.T, a string) string { return startHAProxyWith(t, a, "send-proxy", trustedSrc) },
			diag:   "preserved", sentence: []string{"via proxy-v1"}, exit: exitPreserved},
		{name: "SourceNATRelay", mode: []string{"--proxy-protocol", "off"},
			target: func(t *testing.T, a string) string { return startSocat(t, a) },
			diag:   "source-nat", sentence: []string{"saw " + relaySrc + " instead of 127.0.0.1", "load balancer node", "preserve_client_ip.enabled", "proxy_protocol_v2.enabled"}, exit: exitNotPreserved},
		{name: "HeaderIgnoredModeOffV2", mode: []string{"--proxy-protocol", "off"}, args: []string{"--proxy", "v2", "--proxy-src", claim},
			diag: "proxy-header-ignored", sentence: []string{"PROXY v2 header claiming 203.0.113.10", "proxy=ignored", "--proxy-protocol", "proxy_protocol_v2.enabled"}, exit: exitNotPreserved},
		{name: "HeaderIgnoredModeOffV1", mode: []string{"--proxy-protocol", "off"}, args: []string{"--proxy", "v1", "--proxy-src", claim},
			diag: "proxy-header-ignored", sentence: []string{"PROXY v1 header", "proxy=ignored"}, exit: exitNotPreserved},
		{name: "HeaderIgnoredBehindHAProxy", mode: trusted, args: []string{"--proxy", "v1", "--proxy-src", claim},
			target: func(t *testing.T, a string) string { return startHAProxyWith(t, a, "send-proxy-v2", trustedSrc) },
			diag:   "proxy-header-ignored", sentence: []string{"proxy in front (proxy-v2, peer " + trustedSrc}, exit: exitNotPreserved},
		{name: "HeaderIgnoredFromHAProxyModeOff", mode: []string{"--proxy-protocol", "off"},
			target: func(t *testing.T, a string) string { return startHAProxyWith(t, a, "send-proxy-v2", trustedSrc) },
			diag:   "proxy-header-ignored", sentence: []string{"proxy in front (the server's peer " + trustedSrc, "proxy=ignored", "proxy_protocol_v2.enabled"}, exit: exitNotPreserved},
		{name: "HeaderRefusedUntrustedHost", mode: trusted, args: []string{"--bind", "127.0.0.1", "--proxy", "v2", "--proxy-src", claim},
			diag: "proxy-header-refused", sentence: []string{"error=proxy-header-untrusted", "this host", "127.0.0.1:", "--trusted-proxies"}, exit: exitFailure},
		{name: "HeaderRefusedUntrustedHAProxy", mode: trusted,
			target: func(t *testing.T, a string) string { return startHAProxyWith(t, a, "send-proxy-v2", "127.0.0.8") },
			diag:   "proxy-header-refused", sentence: []string{"a proxy in between", "127.0.0.8:", "--trusted-proxies"}, exit: exitFailure},
		{name: "HeaderExpectedModeRequired", mode: []string{"--proxy-protocol", "required"},
			diag: "proxy-header-expected", sentence: []string{"error=proxy-header-required", "proxy_protocol_v2.enabled", "--proxy-protocol"}, exit: exitFailure},
		{name: "HeaderExpectedTrustedRelay", mode: []string{"--proxy-protocol", "trusted", "--trusted-proxies", relaySrc + "/32"},
			target: func(t *testing.T, a string) string { return startSocat(t, a) },
			diag:   "proxy-header-expected", sentence: []string{"wants a PROXY header and got none"}, exit: exitFailure},
		{name: "NoReportSilentServer",
			target: func(t *testing.T, _ string) string { return startLineServer(t, func(net.Conn) {}) },
			diag:   "no-report", sentence: []string{"closed the connection without a line", "not an originlens server"}, exit: exitFailure},
		{name: "NoReportOtherServer",
			target: func(t *testing.T, _ string) string {
				return startLineServer(t, func(c net.Conn) { fmt.Fprint(c, "SSH-2.0-OpenSSH_9.2\r\n") })
			},
			diag: "no-report", sentence: []string{`"SSH-2.0-OpenSSH_9.2"`, "not an originlens server"}, exit: exitFailure},
		{name: "UnreachableClosedPort",
			target: func(t *testing.T, _ string) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) },
			diag:   "unreachable", sentence: []string{"connection refused", "--listen"}, exit: exitFailure},
		{name: "TimeoutServerWaitsForever", args: []string{"--timeout", "1s"},
			target: func(t *testing.T, _ string) string {
				return startLineServer(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
			},
			diag: "timeout", sentence: []string{"no report within the timeout"}, exit: exitFailure},
	}
	for _, srvName := range []string{"app", "listen"} {
		t.Run(srvName, func(t *testing.T) {
			for _, tc := range cases {
				if tc.mode == nil && srvName == "listen" {
					continue // no originlens server: once is enough
				}
				t.Run(tc.name, func(t *testing.T) {
					addr, logs := "", &syncBuf{}
					if tc.mode != nil {
						addr, logs = servers[srvName](t, tc.mode...)
					}
					target := addr
					if tc.target != nil {
						target = tc.target(t, addr)
					}
					code, out, errb := probeRun(t, append(append([]string{"--json"}, tc.args...), target)...)
					var j diagJSON
					if err := json.Unmarshal([]byte(out), &j); err != nil {
						t.Fatalf("--json output %q: %v\nstderr: %s", out, err, errb)
					}
					sentence := strings.TrimSpace(errb)
					if code != tc.exit || j.ExitCode != tc.exit || j.Diagnosis != tc.diag || j.Advice != sentence || !strings.HasPrefix(sentence, tc.diag+": ") {
						t.Errorf("exit %d, diagnosis %q; want exit %d, diagnosis %q, the sentence on stderr starting with it\nstdout: %s\nstderr: %s\nserver: %s",
							code, j.Diagnosis, tc.exit, tc.diag, out, errb, logs)
					}
					for _, s := range tc.sentence {
						if !strings.Contains(sentence, s) {
							t.Errorf("sentence %q does not say %q", sentence, s)
						}
					}
				})
			}
		})
	}
}
