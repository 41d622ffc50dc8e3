package e2e_test

// nc-probe --family both in a network namespace of its own, whose
// /etc/netns/NAME/hosts maps one name to both 127.0.0.1 and ::1 (the
// machine's /etc/hosts maps localhost to 127.0.0.1 only), against a
// dual-stack app, with each family broken in turn.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// familyNS is a namespace with loopback up and its own hosts file, in
// which dualName resolves to 127.0.0.1 and ::1.
type familyNS struct {
	t    *testing.T
	name string
}

const dualName = "dual.originlens.test"

func newFamilyNS(t *testing.T) *familyNS {
	t.Helper()
	n := &familyNS{t: t, name: fmt.Sprintf("olfam%04x", rand.IntN(0x10000))}
	dir := filepath.Join("/etc/netns", n.name)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", n.name).Run()
		os.RemoveAll(dir)
	})
	ipCmd(t, "netns", "add", n.name)
	ipCmd(t, "-n", n.name, "link", "set", "lo", "up")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 " + dualName + "\n::1 " + dualName + "\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *familyNS) cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// start runs a long-lived command in the namespace until the test ends,
// and waits until something listens on the address filter (ss syntax,
// e.g. "sport = :80" or "src [::1]:80").
func (n *familyNS) start(filter string, args ...string) *bytes.Buffer {
	n.t.Helper()
	var out bytes.Buffer
	c := n.cmd(args...)
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // socat's fork children go with it
	if err := c.Start(); err != nil {
		n.t.Fatalf("starting %v: %v", args, err)
	}
	n.t.Cleanup(func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second) // failure bound for a busy machine
	for time.Now().Before(deadline) {
		o, _ := n.cmd("ss", "-Hltn", filter).Output()
		if len(bytes.TrimSpace(o)) > 0 {
			return &out
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.t.Fatalf("nothing listens on %s after 60s: %v", filter, args)
	return nil
}

type familyResult struct {
	Family    string `json:"family"`
	Target    string `json:"target"`
	Address   string `json:"address"`
	Verdict   string `json:"verdict"`
	Diagnosis string `json:"diagnosis"`
	ServerSaw string `json:"server_saw"`
}

// probeBoth runs nc-probe --family both --json in the namespace.
func (n *familyNS) probeBoth(target string) (int, map[string]familyResult, string) {
	n.t.Helper()
	var j diagResult
	code, stderr := runProbeJSON(n.t, n.cmd(binary(n.t, "nc-probe"), "--json", "--family", "both", "--timeout", "5s", target), &j)
	byFamily := map[string]familyResult{}
	for _, f := range j.Families {
		byFamily[f.Family] = f
	}
	if len(j.Families) != 2 || j.ExitCode != code {
		n.t.Errorf("families %+v, exit_code %d (exit %d): want ipv4 and ipv6 and the same exit code", j.Families, j.ExitCode, code)
	}
	return code, byFamily, stderr
}

// TestFamilyBoth: one verdict per family against a dual-stack app; exit 0
// only when both are preserved, and exit 1 naming the broken family when
// the IPv6 path is source-NATed (nft snat) or relayed to IPv4 (socat).
func TestFamilyBoth(t *testing.T) {
	requireEnv(t)
	target := dualName + ":80"

	t.Run("BothPreserved", func(t *testing.T) {
		n := newFamilyNS(t)
		n.start("sport = :80", binary(t, "app"), "--listen", "[::]:80", "--admin", "", "--proxy-protocol", "off")
		code, fams, stderr := n.probeBoth(target)
		v4, v6 := fams["ipv4"], fams["ipv6"]
		if code != 0 || v4.Diagnosis != "preserved" || v6.Diagnosis != "preserved" || v4.ServerSaw != "127.0.0.1" || v6.ServerSaw != "::1" ||
			v4.Address != "127.0.0.1:80" || v6.Address != "[::1]:80" {
			t.Errorf("exit %d, %+v; want 0 and both preserved (127.0.0.1, ::1)\n%s", code, fams, stderr)
		}
	})

	t.Run("IPv6SourceNAT", func(t *testing.T) {
		n := newFamilyNS(t)
		ipCmd(t, "-n", n.name, "addr", "add", "2001:db8::7/128", "dev", "lo")
		c := n.cmd("nft", "-f", "-")
		c.Stdin = strings.NewReader("table ip6 famnat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  ip6 daddr ::1 tcp dport 80 snat to 2001:db8::7\n }\n}\n")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v\n%s", err, out)
		}
		n.start("sport = :80", binary(t, "app"), "--listen", "[::]:80", "--admin", "", "--proxy-protocol", "off")
		code, fams, stderr := n.probeBoth(target)
		v4, v6 := fams["ipv4"], fams["ipv6"]
		if code != 1 || v4.Diagnosis != "preserved" || v6.Diagnosis != "source-nat" || v6.ServerSaw != "2001:db8::7" ||
			!strings.Contains(stderr, "IPv6 [::1]:80: source-nat: the server saw 2001:db8::7 instead of ::1") {
			t.Errorf("exit %d, %+v; want 1, IPv4 preserved, IPv6 source-nat (2001:db8::7) named on stderr\n%s", code, fams, stderr)
		}
	})

	t.Run("IPv6ToIPv4Path", func(t *testing.T) {
		if _, err := exec.LookPath("socat"); err != nil {
			t.Skip("skipping: socat not found (Debian package socat; .ci/run installs it)")
		}
		n := newFamilyNS(t)
		n.start("src 127.0.0.1:80", binary(t, "app"), "--listen", "127.0.0.1:80", "--admin", "", "--proxy-protocol", "off")
		n.start("src [::1]:80", "socat", "TCP6-LISTEN:80,bind=[::1],fork,reuseaddr", "TCP4:127.0.0.1:80,bind=127.0.0.9")
		code, fams, stderr := n.probeBoth(target)
		v4, v6 := fams["ipv4"], fams["ipv6"]
		if code != 1 || v4.Diagnosis != "preserved" || v6.Diagnosis != "source-nat" || v6.ServerSaw != "127.0.0.9" ||
			!strings.Contains(stderr, "IPv6 [::1]:80: source-nat") || !strings.Contains(stderr, "an IPv4 address for an IPv6 client") {
			t.Errorf("exit %d, %+v; want 1, IPv6 source-nat through an IPv4-only path, named on stderr\n%s", code, fams, stderr)
		}
	})
}

// diagResult is the part of nc-probe --json the diagnosis tests read.
type diagResult struct {
	Diagnosis string         `json:"diagnosis"`
	Advice    string         `json:"advice"`
	ServerSaw string         `json:"server_saw"`
	ExitCode  int            `json:"exit_code"`
	Families  []familyResult `json:"families"`
}

// probeDiag runs nc-probe --json in the client namespace and returns its
// exit code, JSON and stderr.
func (tp *topology) probeDiag(args ...string) (int, diagResult, string) {
	tp.t.Helper()
	var res diagResult
	code, stderr := runProbeJSON(tp.t, tp.cmd("client", append([]string{binary(tp.t, "nc-probe"), "--json", "--timeout", "5s"}, args...)...), &res)
	return code, res, stderr
}

// runProbeJSON runs an nc-probe --json command, decodes its stdout into
// res and returns its exit code and stderr.
func runProbeJSON(t *testing.T, c *exec.Cmd, res any) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	code := 0
	if err := c.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running nc-probe: %v", err)
		}
		code = ee.ExitCode()
	}
	if err := json.Unmarshal(stdout.Bytes(), res); err != nil {
		t.Fatalf("nc-probe --json output is not JSON: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	return code, stderr.String()
}

// TestDiagnosisThroughTheBlogTopology: one scenario per diagnosis code on
// the blog's path (client -> accelerator -> NLB -> instance), each checked
// for the code, the sentence on stderr and the exit code.
func TestDiagnosisThroughTheBlogTopology(t *testing.T) {
	requireEnv(t)
	accel := accelIP4 + ":8080"
	cases := []struct {
		name     string
		setup    func(t *testing.T, tp *topology)
		args     []string
		diag     string
		sentence []string
		exit     int
	}{
		{"Preserved", func(t *testing.T, tp *topology) { tp.nlbForward(false); tp.startApp(t, "--proxy-protocol", "off") },
			nil, "preserved", []string{"saw " + clientIP4}, 0},
		{"SourceNATByTheNLB", func(t *testing.T, tp *topology) { tp.nlbForward(true); tp.startApp(t, "--proxy-protocol", "off") },
			nil, "source-nat", []string{"saw " + nlbTIP4 + " instead of " + clientIP4, "in the server's own network, looks like a load balancer node", "preserve_client_ip.enabled"}, 1},
		{"HeaderIgnoredNLBSendsPPv2AppOff", func(t *testing.T, tp *topology) {
			if _, err := exec.LookPath("haproxy"); err != nil {
				t.Skip("skipping: haproxy not found (Debian package haproxy; .ci/run installs it)")
			}
			tp.nlbHAProxy(false)
			tp.startApp(t, "--proxy-protocol", "off")
		}, nil, "proxy-header-ignored", []string{"peer " + nlbTIP4, "proxy=ignored", "proxy_protocol_v2.enabled"}, 1},
		{"HeaderIgnoredClientHeaderAppOff", func(t *testing.T, tp *topology) { tp.nlbForward(false); tp.startApp(t, "--proxy-protocol", "off") },
			[]string{"--proxy", "v2", "--proxy-src", forged + ":4242"}, "proxy-header-ignored", []string{"claiming " + forged, "saw " + clientIP4}, 1},
		{"HeaderRefusedClientNotTrusted", func(t *testing.T, tp *topology) {
			tp.nlbForward(false)
			tp.startApp(t, "--proxy-protocol", "trusted", "--trusted-proxies", nlbNet4)
		}, []string{"--proxy", "v2", "--proxy-src", forged + ":4242"}, "proxy-header-refused", []string{"error=proxy-header-untrusted", clientIP4, "--trusted-proxies"}, 2},
		{"HeaderExpectedNLBWithoutPPv2", func(t *testing.T, tp *topology) { tp.nlbForward(false); tp.startApp(t, "--proxy-protocol", "required") },
			nil, "proxy-header-expected", []string{"error=proxy-header-required", "proxy_protocol_v2.enabled"}, 2},
		{"NoReportNotTheApp", func(t *testing.T, tp *topology) {
			if _, err := exec.LookPath("socat"); err != nil {
				t.Skip("skipping: socat not found (Debian package socat; .ci/run installs it)")
			}
			tp.nlbForward(false)
			c := tp.cmd("target", "socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo SSH-2.0-OpenSSH_9.2; read line")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Process.Kill(); c.Wait() })
			tp.waitListen("target", 80)
		}, nil, "no-report", []string{"SSH-2.0-OpenSSH_9.2", "not an originlens server"}, 2},
		{"UnreachableNoApp", func(t *testing.T, tp *topology) { tp.nlbForward(false) },
			nil, "unreachable", []string{"connection refused"}, 2},
		{"TimeoutDropped", func(t *testing.T, tp *topology) {
			tp.nlbForward(false)
			tp.startApp(t, "--proxy-protocol", "off")
			tp.nft("nlb", "table inet sg {\n chain drop80 {\n  type filter hook forward priority filter; policy accept;\n  tcp dport 80 drop\n }\n}\n")
		}, []string{"--timeout", "2s"}, "timeout", []string{"no answer to the TCP handshake"}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopology(t)
			tc.setup(t, tp)
			code, res, stderr := tp.probeDiag(append(tc.args, accel)...)
			sentence := strings.TrimSpace(stderr)
			if code != tc.exit || res.ExitCode != tc.exit || res.Diagnosis != tc.diag || res.Advice != sentence {
				t.Errorf("exit %d, diagnosis %q; want exit %d, %q with its sentence on stderr\n%+v\nstderr: %s", code, res.Diagnosis, tc.exit, tc.diag, res, stderr)
			}
			for _, s := range tc.sentence {
				if !strings.Contains(sentence, s) {
					t.Errorf("sentence %q does not say %q", sentence, s)
				}
			}
		})
	}
}

// TestFamilyBothThroughTheAccelerator: the blog topology with a dual-stack
// accelerator whose name resolves (in the client's own hosts file) to its
// IPv4 and IPv6 addresses; the NLB keeps the IPv4 client and source-NATs
// IPv6 to its own address: exit 1 naming IPv6.
func TestFamilyBothThroughTheAccelerator(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	dir := filepath.Join("/etc/netns", tp.ns("client"))
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s accel.originlens.test\n%s accel.originlens.test\n", accelIP4, accelIP6)
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	tp.nlbForward(false)
	tp.startApp(t, "--proxy-protocol", "off")
	code, res, _ := tp.probeDiag("--family", "both", "accel.originlens.test:8080")
	if code != 0 || len(res.Families) != 2 || res.Families[0].Diagnosis != "preserved" || res.Families[1].Diagnosis != "preserved" ||
		res.Families[0].ServerSaw != clientIP4 || res.Families[1].ServerSaw != clientIP6 {
		t.Fatalf("both families preserved: exit %d, %+v; want 0, %s and %s", code, res.Families, clientIP4, clientIP6)
	}
	tp.nft("nlb", fmt.Sprintf("table ip6 snat6 {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n  ip6 daddr %s tcp dport 80 snat to %s\n }\n}\n", targetIP6, nlbTIP6))
	code, res, stderr := tp.probeDiag("--family", "both", "accel.originlens.test:8080")
	byFamily := map[string]familyResult{}
	for _, f := range res.Families {
		byFamily[f.Family] = f
	}
	v4, v6 := byFamily["ipv4"], byFamily["ipv6"]
	if code != 1 || v4.Diagnosis != "preserved" || v6.Diagnosis != "source-nat" || v6.ServerSaw != nlbTIP6 ||
		!strings.Contains(stderr, "IPv6 ["+accelIP6+"]:8080: source-nat: the server saw "+nlbTIP6) {
		t.Errorf("IPv6 source-NATed: exit %d, %+v; want 1, IPv4 preserved, IPv6 source-nat (%s) named on stderr\n%s", code, res.Families, nlbTIP6, stderr)
	}
}
