package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
)

type dropEvents struct{}

func (dropEvents) Publish(event.Event) {}

// appUDP serves the app's UDP server on 127.0.0.1 and returns its address.
func appUDP(t *testing.T) string {
	t.Helper()
	return appUDPMode(t, origin.Config{})
}

// Ensure --udp and -u probe the app's UDP listener: exit 0 when preserved,
// the text names loss, RTT and jitter; --json says transport udp.
func TestUDPPreserved(t *testing.T) {
	target := appUDP(t)
	code, out, errb := probeRun(t, "-u", "-n", "5", "-i", "5ms", "-c", "2", target)
	if code != exitPreserved || !strings.Contains(out, "10 datagrams sent, 10 answered (0.0% loss)") ||
		!strings.Contains(out, "rtt") || !strings.Contains(out, "PRESERVED") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errb)
	}
	code, out, _ = probeRun(t, "--udp", "--json", "-n", "3", "-i", "5ms", target)
	var j jsonUDP
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if code != exitPreserved || j.Transport != "udp" || j.Sent != 3 || j.Received != 3 || !j.Preserved || j.ServerSaw != "127.0.0.1" || j.RTTMS.Count != 3 || j.ExitCode != 0 {
		t.Errorf("exit %d, JSON %+v", code, j)
	}
}

// Ensure a hop that rewrites the source (socat relaying from 127.0.0.9, an
// NLB without client IP preservation) gives exit 1 naming that address,
// and a port where nothing answers exit 2.
func TestUDPNotPreservedAndNoAnswer(t *testing.T) {
	if _, err := exec.LookPath("socat"); err != nil {
		t.Skip("socat not installed: the source-rewriting relay needs it")
	}
	target := appUDP(t)
	port := freeUDPPort(t)
	relay := exec.Command("socat", "-T5", "UDP4-RECVFROM:"+port+",bind=127.0.0.1,fork", "UDP4-SENDTO:"+target+",bind="+relaySrc)
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Process.Kill(); relay.Wait() })
	// Poll until socat answers (a failure bound for a busy machine).
	var code int
	var out, errb string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, out, errb = probeRun(t, "-u", "--timeout", "1s", "127.0.0.1:"+port)
		if code != exitFailure || time.Now().After(deadline) {
			break
		}
	}
	if code != exitNotPreserved || !strings.Contains(out, "NOT PRESERVED") || !strings.Contains(out, relaySrc) {
		t.Errorf("through socat: exit %d\n%s\n%s", code, out, errb)
	}

	closed := freeUDPPort(t)
	code, out, _ = probeRun(t, "-u", "-n", "2", "-i", "1ms", "--timeout", "300ms", "127.0.0.1:"+closed)
	if code != exitFailure || !strings.Contains(out, "NO ANSWER") || !strings.Contains(out, "100.0% loss") {
		t.Errorf("nothing listening: exit %d\n%s", code, out)
	}
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}
