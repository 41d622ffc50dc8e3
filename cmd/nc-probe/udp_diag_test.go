package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/udp"
)

// appUDPMode serves the app's UDP server on 127.0.0.1 with the resolver
// cfg and returns its address.
func appUDPMode(t *testing.T, cfg origin.Config) string {
	t.Helper()
	res, err := origin.NewResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := udp.New(udp.Config{Resolver: res, Publisher: dropEvents{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := udp.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, conn) }()
	t.Cleanup(func() { cancel(); <-done })
	return conn.LocalAddr().String()
}

// TestUDPDiagnosis: a --udp verdict carries a diagnosis code in --json and
// its sentence on stderr, as a TCP one does, against the app's UDP server
// in each mode: preserved; a PROXY v2 header sent to an app that does not
// read headers (off) is proxy-header-ignored, exit 1 (the app answers, but
// echoes no probe line: the header's first bytes are its first line); an
// app in required mode drops a datagram without header: timeout, exit 2,
// naming --proxy-protocol.
func TestUDPDiagnosis(t *testing.T) {
	off := appUDPMode(t, origin.Config{Mode: origin.Off})
	required := appUDPMode(t, origin.Config{Mode: origin.Required})
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		diagnosis string
		sentence  string // in the stderr sentence
	}{
		{"preserved", []string{off}, exitPreserved, "preserved", "preserved: the server saw 127.0.0.1"},
		{"header ignored", []string{"--proxy", "v2", "--proxy-src", "203.0.113.10:4000", off}, exitNotPreserved, "proxy-header-ignored", "--proxy-protocol"},
		{"header expected", []string{"--timeout", "300ms", required}, exitFailure, "timeout", "--proxy-protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--udp", "-n", "2", "-i", "5ms", "--json"}, tc.args...)
			code, out, errb := probeRun(t, args...)
			var j diagJSON
			if err := json.Unmarshal([]byte(out), &j); err != nil {
				t.Fatalf("--json: %v: %s", err, out)
			}
			if code != tc.code || j.ExitCode != tc.code || j.Diagnosis != tc.diagnosis || !strings.Contains(j.Advice, tc.sentence) ||
				!strings.Contains(errb, tc.diagnosis+":") || !strings.Contains(errb, tc.sentence) {
				t.Errorf("exit %d, JSON %+v, stderr %q; want exit %d, diagnosis %s, a sentence with %q", code, j, errb, tc.code, tc.diagnosis, tc.sentence)
			}
			// Text form: the same sentence on stderr.
			code, out, errb = probeRun(t, append([]string{"--udp", "-n", "2", "-i", "5ms"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errb, tc.diagnosis+":") || !strings.Contains(out, "diagnosis: "+tc.diagnosis) {
				t.Errorf("text: exit %d\n%s\nstderr %q", code, out, errb)
			}
		})
	}
}

// TestUDPRejectsTCPOnlyFlags: --watch, --format csv and --family both are
// not implemented for --udp; a run that silently ignored them printed
// something else than asked (no rows, one verdict). They are refused with
// a one-line error naming the flag, exit 2.
func TestUDPRejectsTCPOnlyFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--udp", "--watch", "127.0.0.1:9"},
		{"--udp", "--format", "csv", "127.0.0.1:9"},
		{"-u", "--family", "both", "localhost:9"},
		{"--udp", "-i", "0", "127.0.0.1:9"}, // used to become 100ms without a word
		{"-u", "--interval", "-1s", "127.0.0.1:9"},
	} {
		_, err := parseArgs(args, noEnv, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "--udp") {
			t.Errorf("parseArgs(%q) = %v, want an error naming --udp", args, err)
		}
	}
	// --family 4 or 6 picks the address family of the target's name.
	cfg, err := parseArgs([]string{"--udp", "--family", "6", "localhost:9"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errb := func() (int, string, string) {
		var o, e bytes.Buffer
		return run(context.Background(), cfg, &o, &e), o.String(), e.String()
	}()
	// localhost has no AAAA record here (/etc/hosts maps it to 127.0.0.1
	// only): --family 6 fails before sending, as for TCP.
	if code != exitFailure || strings.Contains(out, "datagrams sent") || !strings.Contains(errb, "localhost") {
		t.Errorf("--udp --family 6 localhost: exit %d\n%s\n%s", code, out, errb)
	}
}

// TestUDPJSONOnFailure: a --udp --json run that fails before any datagram
// (the name has no address of the family asked for) still prints one JSON
// object with its diagnosis (unreachable) and exit code, as a TCP run does;
// it used to print nothing on stdout.
func TestUDPJSONOnFailure(t *testing.T) {
	code, out, errb := probeRun(t, "--udp", "--json", "--family", "6", "localhost:9")
	var j diagJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("exit %d, stdout %q (%v), stderr %q", code, out, err, errb)
	}
	if code != exitFailure || j.ExitCode != exitFailure || j.Diagnosis != "unreachable" || !strings.Contains(errb, "unreachable:") {
		t.Errorf("exit %d, JSON %+v, stderr %q; want exit 2, diagnosis unreachable", code, j, errb)
	}
}
