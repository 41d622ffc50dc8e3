// Package e2e_test reproduces the AWS blog's test for real on one machine:
// a client, an "accelerator" (edge), a "load balancer" (nlb) and an
// instance (target) in Linux network namespaces joined by veth pairs, with
// only documentation address ranges inside them. nc-probe runs in the
// client namespace, the real app on :80 in the target namespace, and every
// scenario is asserted from both ends: nc-probe's exit code and JSON, the
// app's connection event, and a packet capture on the target.
//
// The tests need root, iproute2, nftables, tcpdump and (scenarios 2 and 3)
// HAProxy; they skip with the reason when one is missing.
package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// Addresses of the topology. Each link has its own documentation subnet.
const (
	clientIP4 = "203.0.113.10"  // client <-> edge: 203.0.113.0/25
	edgeCIP4  = "203.0.113.1"   //
	accelIP4  = "203.0.113.200" // the accelerator's static address, on edge's loopback
	edgeNIP4  = "198.51.100.1"  // edge <-> nlb: 198.51.100.0/25
	nlbIP4    = "198.51.100.2"  // the NLB listener address
	nlbTIP4   = "192.0.2.1"     // nlb <-> target: 192.0.2.0/25
	targetIP4 = "192.0.2.10"    //
	nlbNet4   = "192.0.2.0/25"  // the NLB's subnet, trusted for PROXY headers

	clientIP6 = "2001:db8:1::10"
	edgeCIP6  = "2001:db8:1::1"
	accelIP6  = "2001:db8:ff::200"
	edgeNIP6  = "2001:db8:2::1"
	nlbIP6    = "2001:db8:2::2"
	nlbTIP6   = "2001:db8:3::1"
	targetIP6 = "2001:db8:3::10"
)

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the built binaries at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// requireEnv skips the test when the machine cannot run it.
func requireEnv(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: network namespaces need root (run `sudo make e2e`)")
	}
	for _, tool := range append([]string{"ip", "nft", "tcpdump", "ss"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found (Debian packages iproute2, nftables, tcpdump, haproxy; .ci/run installs them)", tool)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns unavailable: %v: %s", err, out)
	}
}

// binary builds cmd/app and cmd/nc-probe once per test binary.
func binary(t *testing.T, name string) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "originlens-e2e-bin-")
		if bins.err != nil {
			return
		}
		for _, cmd := range []string{"app", "nc-probe"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(bins.dir, cmd), "../../cmd/"+cmd).CombinedOutput()
			if err != nil {
				bins.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

// topology is the four namespaces. Names carry a random tag so that
// parallel runs and leftovers of a killed run never collide.
type topology struct {
	t   *testing.T
	tag string
}

func (tp *topology) ns(role string) string { return "ol" + tp.tag + "-" + role }

// run runs a command in a namespace and fails the test on error.
func (tp *topology) run(role string, args ...string) string {
	tp.t.Helper()
	out, err := tp.cmd(role, args...).CombinedOutput()
	if err != nil {
		tp.t.Fatalf("in %s: %s: %v\n%s", role, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (tp *topology) cmd(role string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", tp.ns(role)}, args...)...)
}

// nft loads a ruleset into a namespace.
func (tp *topology) nft(role, ruleset string) {
	tp.t.Helper()
	c := tp.cmd(role, "nft", "-f", "-")
	c.Stdin = strings.NewReader(ruleset)
	if out, err := c.CombinedOutput(); err != nil {
		tp.t.Fatalf("nft in %s: %v\n%s\n%s", role, err, out, ruleset)
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTopology builds client <-> edge <-> nlb <-> target with IPv4 and IPv6
// addresses and routes, and forwarding on edge and nlb. The edge forwards
// the accelerator's TCP 8080 to the NLB by DNAT, keeping the source, as
// Global Accelerator does with client IP preservation. What the NLB does is
// each scenario's.
func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{t: t, tag: fmt.Sprintf("%04x", rand.IntN(0x10000))}
	t.Cleanup(func() {
		for _, role := range []string{"client", "edge", "nlb", "target"} {
			exec.Command("ip", "netns", "del", tp.ns(role)).Run()
		}
	})
	for _, role := range []string{"client", "edge", "nlb", "target"} {
		ipCmd(t, "netns", "add", tp.ns(role))
		ipCmd(t, "-n", tp.ns(role), "link", "set", "lo", "up")
	}
	link := func(a, aIf, b, bIf string) {
		ipCmd(t, "link", "add", aIf+tp.tag, "type", "veth", "peer", "name", bIf+tp.tag)
		ipCmd(t, "link", "set", aIf+tp.tag, "netns", tp.ns(a), "name", aIf)
		ipCmd(t, "link", "set", bIf+tp.tag, "netns", tp.ns(b), "name", bIf)
		ipCmd(t, "-n", tp.ns(a), "link", "set", aIf, "up")
		ipCmd(t, "-n", tp.ns(b), "link", "set", bIf, "up")
	}
	link("client", "c-e", "edge", "e-c")
	link("edge", "e-n", "nlb", "n-e")
	link("nlb", "n-t", "target", "t-n")
	addr := func(role, dev, cidr string) {
		args := []string{"-n", tp.ns(role), "addr", "add", cidr, "dev", dev}
		if strings.Contains(cidr, ":") {
			args = append(args, "nodad")
		}
		ipCmd(t, args...)
	}
	addr("client", "c-e", clientIP4+"/25")
	addr("client", "c-e", clientIP6+"/64")
	addr("edge", "e-c", edgeCIP4+"/25")
	addr("edge", "e-c", edgeCIP6+"/64")
	addr("edge", "lo", accelIP4+"/32")
	addr("edge", "lo", accelIP6+"/128")
	addr("edge", "e-n", edgeNIP4+"/25")
	addr("edge", "e-n", edgeNIP6+"/64")
	addr("nlb", "n-e", nlbIP4+"/25")
	addr("nlb", "n-e", nlbIP6+"/64")
	addr("nlb", "n-t", nlbTIP4+"/25")
	addr("nlb", "n-t", nlbTIP6+"/64")
	addr("target", "t-n", targetIP4+"/25")
	addr("target", "t-n", targetIP6+"/64")
	route := func(role string, args ...string) {
		ipCmd(t, append([]string{"-n", tp.ns(role), "route", "add"}, args...)...)
	}
	route("client", "default", "via", edgeCIP4)
	route("client", "default", "via", edgeCIP6)
	route("edge", "192.0.2.0/25", "via", nlbIP4)
	route("edge", "2001:db8:3::/64", "via", nlbIP6)
	route("nlb", "default", "via", edgeNIP4)
	route("nlb", "default", "via", edgeNIP6)
	route("target", "default", "via", nlbTIP4)
	route("target", "default", "via", nlbTIP6)
	for _, role := range []string{"edge", "nlb"} {
		tp.run(role, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	}
	tp.nft("edge", fmt.Sprintf(`
table ip accel {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 8080 dnat to %s:8080
	}
}
table ip6 accel {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip6 daddr %s tcp dport 8080 dnat to [%s]:8080
	}
}
`, accelIP4, nlbIP4, accelIP6, nlbIP6))
	return tp
}

// nlbForward makes the NLB forward TCP 8080 to the target's TCP 80 by DNAT,
// keeping the client's source (preserve_client_ip on). With snat, it also
// rewrites the source to its own address (preservation off, no PROXY
// header: the misconfiguration).
func (tp *topology) nlbForward(snat bool) {
	masq := ""
	if snat {
		masq = fmt.Sprintf(`
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr %s tcp dport 80 snat to %s
		ip6 daddr %s tcp dport 80 snat to %s
	}`, targetIP4, nlbTIP4, targetIP6, nlbTIP6)
	}
	tp.nft("nlb", fmt.Sprintf(`
table inet lb {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 8080 dnat ip to %s:80
		ip6 daddr %s tcp dport 8080 dnat ip6 to [%s]:80
	}%s
}
`, nlbIP4, targetIP4, nlbIP6, targetIP6, masq))
}

// nlbHAProxy makes the NLB a real proxy sending PROXY v2 headers. With
// usesrc, HAProxy connects from the client's address (TPROXY), as an NLB
// with both preserve_client_ip and proxy_protocol_v2 does; without, from its
// own address.
func (tp *topology) nlbHAProxy(usesrc bool) {
	tp.t.Helper()
	source := ""
	if usesrc {
		source = " source 0.0.0.0 usesrc clientip"
		// Replies from the target to the client's address must reach
		// HAProxy's transparent socket.
		tp.nft("nlb", `
table ip nlbtproxy {
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp socket transparent 1 meta mark set 1
	}
}
`)
		ipCmd(tp.t, "-n", tp.ns("nlb"), "rule", "add", "fwmark", "1", "lookup", "100")
		ipCmd(tp.t, "-n", tp.ns("nlb"), "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	}
	dir := tp.t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	conf := fmt.Sprintf(`global
	maxconn 256
defaults
	mode tcp
	timeout connect 2s
	timeout client 10s
	timeout server 10s
frontend nlb
	bind %s:8080
	default_backend targets
backend targets
	server target %s:80 send-proxy-v2%s
`, nlbIP4, targetIP4, source)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	c := tp.cmd("nlb", "haproxy", "-db", "-f", cfg)
	var logs bytes.Buffer
	c.Stdout, c.Stderr = &logs, &logs
	if err := c.Start(); err != nil {
		tp.t.Fatalf("starting haproxy: %v", err)
	}
	tp.t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
		if tp.t.Failed() {
			tp.t.Logf("haproxy output:\n%s", logs.String())
		}
	})
	tp.waitListen("nlb", 8080)
}

// waitListen waits until something listens on TCP port in a namespace.
func (tp *topology) waitListen(role string, port int) {
	tp.t.Helper()
	deadline := time.Now().Add(60 * time.Second) // failure bound for a busy machine
	for time.Now().Before(deadline) {
		out, _ := tp.cmd(role, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tp.t.Fatalf("nothing listens on %s:%d after 60s", role, port)
}

// app is the real bin/app running in the target namespace.
type app struct {
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
}

func (a *app) events(t *testing.T) []event.Event {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var evs []event.Event
	sc := bufio.NewScanner(bytes.NewReader(a.stdout.Bytes()))
	for sc.Scan() {
		ev, err := event.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("app stdout line is not an event: %v: %s", err, sc.Text())
		}
		evs = append(evs, ev)
	}
	return evs
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startApp runs bin/app on :80 in the target namespace with events on
// stdout.
// It stops when t (a test or subtest) ends.
func (tp *topology) startApp(t *testing.T, args ...string) *app {
	t.Helper()
	a := &app{}
	c := tp.cmd("target", append([]string{binary(t, "app"), "--listen", ":80", "--admin", "127.0.0.1:9090"}, args...)...)
	c.Stdout = lockedWriter{&a.mu, &a.stdout}
	c.Stderr = lockedWriter{&a.mu, &a.stderr}
	if err := c.Start(); err != nil {
		t.Fatalf("starting app: %v", err)
	}
	t.Cleanup(func() {
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
		if t.Failed() {
			a.mu.Lock()
			t.Logf("app stderr:\n%s", a.stderr.String())
			a.mu.Unlock()
		}
	})
	tp.waitListen("target", 80)
	return a
}

// capture starts tcpdump on the target's link for the next SYN to port 80
// and returns a function that waits for it and returns its source address.
func (tp *topology) capture() func() netip.Addr {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // failure bound only
	c := exec.CommandContext(ctx, "ip", "netns", "exec", tp.ns("target"),
		"tcpdump", "-i", "t-n", "-nn", "-l", "-c", "1", "-q",
		"tcp dst port 80 and (tcp[tcpflags] & tcp-syn != 0 or ip6[53] & 2 != 0)")
	var mu sync.Mutex
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = lockedWriter{&mu, &out}, lockedWriter{&mu, &errb}
	if err := c.Start(); err != nil {
		cancel()
		tp.t.Fatalf("starting tcpdump: %v", err)
	}
	// tcpdump says "listening on" once the capture is armed.
	armed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(errb.String(), "listening on")
	}
	deadline := time.Now().Add(60 * time.Second)
	for !armed() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return func() netip.Addr {
		tp.t.Helper()
		defer cancel()
		if err := c.Wait(); err != nil {
			tp.t.Fatalf("tcpdump: %v\n%s", err, errb.String())
		}
		// "12:00:00.000000 IP 203.0.113.10.45678 > 192.0.2.10.80: tcp 0"
		f := strings.Fields(out.String())
		for i, w := range f {
			if (w == "IP" || w == "IP6") && i+1 < len(f) {
				src := f[i+1]
				src = src[:strings.LastIndexByte(src, '.')]
				a, err := netip.ParseAddr(src)
				if err != nil {
					tp.t.Fatalf("tcpdump line %q: %v", out.String(), err)
				}
				return a
			}
		}
		tp.t.Fatalf("no packet in tcpdump output %q", out.String())
		return netip.Addr{}
	}
}

// probeResult is the part of nc-probe's --json output the tests check.
type probeResult struct {
	Target    string `json:"target"`
	ServerSaw string `json:"server_saw"`
	Expected  string `json:"expected"`
	Preserved bool   `json:"preserved"`
	Attempts  int    `json:"attempts"`
	Failures  int    `json:"failures"`
	Via       string `json:"via"`
}

// probe runs nc-probe --json in the client namespace and returns its exit
// code, parsed JSON (when it printed one) and raw output.
func (tp *topology) probe(args ...string) (int, probeResult, string) {
	tp.t.Helper()
	c := tp.cmd("client", append([]string{binary(tp.t, "nc-probe"), "--json", "--timeout", "5s"}, args...)...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			tp.t.Fatalf("running nc-probe: %v", err)
		}
		code = ee.ExitCode()
	}
	var res probeResult
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			tp.t.Fatalf("nc-probe --json output is not JSON: %v\n%s", err, stdout.String())
		}
	}
	return code, res, "stdout: " + stdout.String() + "\nstderr: " + stderr.String()
}

// lastEvent waits for the app's event for the probe connection (events are
// written when a connection ends).
func lastEvent(t *testing.T, a *app, n int) event.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // failure bound for a busy machine
	for time.Now().Before(deadline) {
		if evs := a.events(t); len(evs) >= n {
			return evs[n-1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("app wrote fewer than %d events in 60s", n)
	return event.Event{}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// expectPreserved probes target from the client namespace and asserts the
// scenario from both ends: nc-probe exits 0 having seen client via via, the
// SYN captured on the target comes from peer, and the app's event has the
// client as source and peer as the socket peer. It returns the event.
func expectPreserved(t *testing.T, tp *topology, a *app, target, client, via, peer string) event.Event {
	t.Helper()
	syn := tp.capture()
	code, res, out := tp.probe(target)
	if code != 0 || !res.Preserved || res.ServerSaw != client || res.Via != via {
		t.Fatalf("nc-probe = exit %d %+v, want exit 0, preserved, server saw %s via %s\n%s", code, res, client, via, out)
	}
	if src := syn(); src != mustAddr(peer) {
		t.Errorf("target captured SYN from %s, want %s", src, peer)
	}
	ev := lastEvent(t, a, 1)
	if ev.Source.IP != mustAddr(client) || ev.ClientIP.Peer.IP != mustAddr(peer) || ev.ClientIP.Via != via {
		t.Errorf("event source %s peer %s via %s, want %s, %s, %s", ev.Source.IP, ev.ClientIP.Peer.IP, ev.ClientIP.Via, client, peer, via)
	}
	return ev
}

func TestPreservationOnProxyProtocolOff(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.nlbForward(false)
	a := tp.startApp(t, "--proxy-protocol", "off")
	expectPreserved(t, tp, a, accelIP4+":8080", clientIP4, event.ViaDirect, clientIP4)
}

// The socket peer is the load balancer; the PROXY v2 header carries the client.
func TestPreservationOffProxyProtocolV2(t *testing.T) {
	requireEnv(t, "haproxy")
	tp := newTopology(t)
	tp.nlbHAProxy(false)
	a := tp.startApp(t, "--proxy-protocol", "trusted", "--trusted-proxies", nlbNet4)
	expectPreserved(t, tp, a, accelIP4+":8080", clientIP4, event.ViaProxyV2, nlbTIP4)
}

// TPROXY keeps the client as the socket peer, and the header says the same.
func TestPreservationOnProxyProtocolV2(t *testing.T) {
	requireEnv(t, "haproxy")
	tp := newTopology(t)
	tp.nlbHAProxy(true)
	a := tp.startApp(t, "--proxy-protocol", "required")
	expectPreserved(t, tp, a, accelIP4+":8080", clientIP4, event.ViaProxyV2, clientIP4)
}

func TestMisconfigurationIsCaught(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.nlbForward(true)
	a := tp.startApp(t, "--proxy-protocol", "off")
	syn := tp.capture()
	code, res, out := tp.probe(accelIP4 + ":8080")
	if code != 1 || res.Preserved || res.ServerSaw != nlbTIP4 {
		t.Fatalf("nc-probe = exit %d %+v, want exit 1, not preserved, server saw the load balancer %s\n%s", code, res, nlbTIP4, out)
	}
	if !strings.Contains(out, nlbTIP4) {
		t.Errorf("nc-probe output does not name the address the server saw (%s):\n%s", nlbTIP4, out)
	}
	if src := syn(); src != mustAddr(nlbTIP4) {
		t.Errorf("target captured SYN from %s, want the load balancer %s", src, nlbTIP4)
	}
	if ev := lastEvent(t, a, 1); ev.Source.IP != mustAddr(nlbTIP4) {
		t.Errorf("event source %s, want the load balancer %s", ev.Source.IP, nlbTIP4)
	}
}

// forged is the address a spoofing client claims in its own PROXY header.
const forged = "192.0.2.99"

// TestSpoofedHeaderIsNotBelievedModeOff: a client sends its own PROXY header
// through the preserving path to an app in off mode: the header is payload.
func TestSpoofedHeaderIsNotBelievedModeOff(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.nlbForward(false)
	a := tp.startApp(t, "--proxy-protocol", "off")
	code, res, out := tp.probe("--proxy", "v2", "--proxy-src", forged+":4242", accelIP4+":8080")
	if code != 1 || res.ServerSaw != clientIP4 {
		t.Fatalf("nc-probe = exit %d %+v, want exit 1 with the server seeing the real client %s, not %s\n%s", code, res, clientIP4, forged, out)
	}
	if ev := lastEvent(t, a, 1); ev.Source.IP != mustAddr(clientIP4) {
		t.Errorf("event source %s, want the real client %s", ev.Source.IP, clientIP4)
	}
}

// TestSpoofedHeaderIsNotBelievedModeTrusted: the client is outside the
// trusted proxies, so its header is a spoof attempt and the connection is
// refused.
func TestSpoofedHeaderIsNotBelievedModeTrusted(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.nlbForward(false)
	a := tp.startApp(t, "--proxy-protocol", "trusted", "--trusted-proxies", nlbNet4)
	code, _, out := tp.probe("--proxy", "v2", "--proxy-src", forged+":4242", accelIP4+":8080")
	if code != 2 {
		t.Fatalf("nc-probe exit %d, want 2 (connection refused by the app)\n%s", code, out)
	}
	ev := lastEvent(t, a, 1)
	if ev.Event.Action != event.ActionRefused || ev.Source.IP != mustAddr(clientIP4) || !strings.Contains(ev.Event.Reason, "spoof") {
		t.Errorf("event action %s reason %q source %s, want %s, a spoof reason, %s", ev.Event.Action, ev.Event.Reason, ev.Source.IP, event.ActionRefused, clientIP4)
	}
}

func TestIPv6PreservationOnProxyProtocolOff(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.nlbForward(false)
	a := tp.startApp(t, "--proxy-protocol", "off")
	ev := expectPreserved(t, tp, a, "["+accelIP6+"]:8080", clientIP6, event.ViaDirect, clientIP6)
	if ev.Network.Type != "ipv6" {
		t.Errorf("event network.type %s, want ipv6", ev.Network.Type)
	}
}
