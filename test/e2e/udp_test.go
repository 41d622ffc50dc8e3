package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// appUDPPort is the target's UDP port (the app's --listen-udp); the
// accelerator and the NLB listen on UDP 8080, as on TCP.
const appUDPPort = 8053

// udpForward makes the edge (the accelerator, a UDP listener) and the NLB
// (a TCP_UDP listener) forward UDP 8080 to the target's UDP port by DNAT,
// keeping the client's source, as both do for UDP. With snat the NLB also
// rewrites the source to its own address: what the probe must catch.
func (tp *topology) udpForward(snat bool) {
	tp.t.Helper()
	tp.nft("edge", fmt.Sprintf(`
table inet acceludp {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s udp dport 8080 dnat ip to %s:8080
		ip6 daddr %s udp dport 8080 dnat ip6 to [%s]:8080
	}
}
`, accelIP4, nlbIP4, accelIP6, nlbIP6))
	masq := ""
	if snat {
		masq = fmt.Sprintf(`
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr %s udp dport %d snat to %s
		ip6 daddr %s udp dport %d snat to %s
	}`, targetIP4, appUDPPort, nlbTIP4, targetIP6, appUDPPort, nlbTIP6)
	}
	tp.nft("nlb", fmt.Sprintf(`
table inet lbudp {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s udp dport 8080 dnat ip to %s:%d
		ip6 daddr %s udp dport 8080 dnat ip6 to [%s]:%d
	}%s
}
`, nlbIP4, targetIP4, appUDPPort, nlbIP6, targetIP6, appUDPPort, masq))
}

// startUDPApp runs the app with --listen-udp and a short flow idle
// timeout, and waits for its UDP socket.
func (tp *topology) startUDPApp(t *testing.T) *app {
	t.Helper()
	a := tp.startApp(t, "--proxy-protocol", "off", "--listen-udp", fmt.Sprintf(":%d", appUDPPort), "--udp-idle-timeout", "1s")
	deadline := time.Now().Add(60 * time.Second) // failure bound for a busy machine
	for {
		out, _ := tp.cmd("target", "ss", "-Hlun", fmt.Sprintf("sport = :%d", appUDPPort)).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on target UDP %d after 60s", appUDPPort)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// captureUDP starts tcpdump on the target's link for the next datagram to
// the app's UDP port and returns a function that waits for it and returns
// its source address.
func (tp *topology) captureUDP() func() netip.Addr {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // failure bound only
	c := exec.CommandContext(ctx, "ip", "netns", "exec", tp.ns("target"),
		"tcpdump", "-i", "t-n", "-nn", "-l", "-c", "1", "-q", fmt.Sprintf("udp dst port %d", appUDPPort))
	var mu sync.Mutex
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = lockedWriter{&mu, &out}, lockedWriter{&mu, &errb}
	if err := c.Start(); err != nil {
		cancel()
		tp.t.Fatalf("starting tcpdump: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		armed := strings.Contains(errb.String(), "listening on")
		mu.Unlock()
		if armed {
			break
		}
	}
	return func() netip.Addr {
		tp.t.Helper()
		defer cancel()
		if err := c.Wait(); err != nil {
			tp.t.Fatalf("tcpdump: %v\n%s", err, errb.String())
		}
		// "12:00:00.000000 IP 203.0.113.10.45678 > 192.0.2.10.8053: UDP, length 512"
		f := strings.Fields(out.String())
		for i, w := range f {
			if (w == "IP" || w == "IP6") && i+1 < len(f) {
				src := f[i+1][:strings.LastIndexByte(f[i+1], '.')]
				a, err := netip.ParseAddr(src)
				if err != nil {
					tp.t.Fatalf("tcpdump line %q: %v", out.String(), err)
				}
				return a
			}
		}
		tp.t.Fatalf("no datagram in tcpdump output %q", out.String())
		return netip.Addr{}
	}
}

// udpEvent waits for the app's first UDP flow event (published once the
// flow has been idle for the app's --udp-idle-timeout).
func udpEvent(t *testing.T, a *app) event.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // failure bound for a busy machine
	for time.Now().Before(deadline) {
		for _, ev := range a.events(t) {
			if ev.Network.Transport == event.TransportUDP {
				return ev
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no UDP flow event in 60s")
	return event.Event{}
}

// expectUDP probes target over UDP from the client namespace and checks
// both ends: nc-probe's exit code and what it says the server saw, the
// source of the datagram captured on the target, and the flow's event.
func expectUDP(t *testing.T, tp *topology, a *app, target, saw string, wantCode int) {
	t.Helper()
	dgram := tp.captureUDP()
	code, res, out := tp.probe("--udp", "-n", "5", "-i", "20ms", target)
	if code != wantCode || res.ServerSaw != saw || res.Preserved != (wantCode == 0) || !strings.Contains(out, `"transport": "udp"`) {
		t.Fatalf("nc-probe --udp = exit %d %+v, want exit %d, server saw %s\n%s", code, res, wantCode, saw, out)
	}
	if !strings.Contains(out, saw) {
		t.Errorf("nc-probe output does not name the address the server saw (%s):\n%s", saw, out)
	}
	if src := dgram(); src != mustAddr(saw) {
		t.Errorf("target captured a datagram from %s, want %s", src, saw)
	}
	ev := udpEvent(t, a)
	if ev.Source.IP != mustAddr(saw) || ev.Source.Packets != 5 || ev.Destination.Packets != 5 || ev.Flow.End != "idle-timeout" {
		t.Errorf("flow event source %s packets %d/%d end %q, want %s, 5/5, idle-timeout", ev.Source.IP, ev.Source.Packets, ev.Destination.Packets, ev.Flow.End, saw)
	}
}

// UDP through the accelerator and an NLB that keeps the client's address
// (UDP and TCP_UDP target groups always do): preserved, exit 0.
func TestUDPPreserved(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.udpForward(false)
	a := tp.startUDPApp(t)
	expectUDP(t, tp, a, accelIP4+":8080", clientIP4, 0)
}

// An NLB that source-NATs UDP: not preserved, exit 1 naming the NLB.
func TestUDPNotPreserved(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.udpForward(true)
	a := tp.startUDPApp(t)
	expectUDP(t, tp, a, accelIP4+":8080", nlbTIP4, 1)
}

func TestUDPIPv6Preserved(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	tp.udpForward(false)
	a := tp.startUDPApp(t)
	expectUDP(t, tp, a, "["+accelIP6+"]:8080", clientIP6, 0)
}

// The target has a second address and the NLB forwards UDP 8081 to it: the
// app, bound to every address, must answer from the address the datagram
// was sent to (IP_PKTINFO), or the reply leaves from the first address,
// misses the NAT state on the way back and never reaches the client as an
// answer (nc-probe: no answer, exit 2).
func TestUDPReplyFromSecondAddress(t *testing.T) {
	requireEnv(t)
	const second = "192.0.2.11"
	tp := newTopology(t)
	ipCmd(t, "-n", tp.ns("target"), "addr", "add", second+"/25", "dev", "t-n")
	tp.nft("edge", fmt.Sprintf(`
table ip accel2 {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s udp dport 8081 dnat to %s:8081
	}
}
`, accelIP4, nlbIP4))
	tp.nft("nlb", fmt.Sprintf(`
table ip lb2 {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s udp dport 8081 dnat to %s:%d
	}
}
`, nlbIP4, second, appUDPPort))
	a := tp.startUDPApp(t)
	code, res, out := tp.probe("--udp", "-n", "3", "-i", "20ms", accelIP4+":8081")
	if code != 0 || res.ServerSaw != clientIP4 {
		t.Fatalf("nc-probe --udp to the second address = exit %d %+v, want exit 0, server saw %s\n%s", code, res, clientIP4, out)
	}
	if ev := udpEvent(t, a); ev.Destination.IP != mustAddr(second) {
		t.Errorf("flow event destination %s, want the second address %s", ev.Destination.IP, second)
	}
}
