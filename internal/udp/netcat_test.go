package udp

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/report"
)

// TestNetcat is the blog's test over UDP with Debian's netcat-openbsd:
// `echo hello | nc -u -w1 HOST PORT` gets the short form (6 bytes sent, at
// most 18 back, cut with truncated=1), and a datagram padded after its
// first line gets the whole report and the greeting.
func TestNetcat(t *testing.T) {
	nc, err := exec.LookPath("nc")
	if err != nil {
		t.Skip("nc not installed (Debian: netcat-openbsd)")
	}
	if out, _ := exec.Command(nc, "-h").CombinedOutput(); !bytes.Contains(out, []byte("OpenBSD")) {
		t.Skip("nc is not netcat-openbsd")
	}
	r := start(t, Config{}, "")
	port := strings.TrimPrefix(r.addr.String(), "127.0.0.1:")
	run := func(stdin string) string {
		cmd := exec.Command(nc, "-u", "-w1", "127.0.0.1", port)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("nc: %v", err)
		}
		return string(out)
	}
	if out := run("hello\n"); len(out) > 18 || !strings.Contains(out, "truncated=1") {
		t.Errorf("echo hello | nc -u: %q; want at most 18 bytes ending in truncated=1", out)
	}
	out := run("hello\n" + strings.Repeat(" ", 400))
	first, rest, _ := strings.Cut(out, "\n")
	rep, err := report.ParseLine(first)
	if err != nil || rep[report.KeyProbe] != "hello" || rep[report.KeyTruncated] != "" || !strings.HasPrefix(rep[report.KeyClient], "127.0.0.1:") || strings.TrimSpace(rest) == "" {
		t.Errorf("padded nc datagram: %q (%v); want the whole report and a greeting", out, err)
	}
}
