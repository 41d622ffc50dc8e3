package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

// Ensure APP_VERSION, which CI and container images set for their own use,
// neither breaks the app (it was "parse error", exit 2, for 2.3.1) nor
// makes it print its version and exit (for true); --version still works,
// and --help shows no variable for it.
func TestVersionIgnoresEnvironment(t *testing.T) {
	for _, v := range []string{"2.3.1", "true", "1", ""} {
		var out bytes.Buffer
		_, err := parseConfig(nil, env(map[string]string{"APP_VERSION": v, "APP_HELP": "true", "APP_H": "true"}), &out)
		if err != nil || out.Len() != 0 {
			t.Errorf("APP_VERSION=%q: parseConfig = %v, printed %q; want a normal start", v, err, out.String())
		}
	}
	var out bytes.Buffer
	if _, err := parseConfig([]string{"--version"}, env(map[string]string{"APP_VERSION": "2.3.1"}), &out); !errors.Is(err, errExit) || !strings.Contains(out.String(), "originlens app") {
		t.Errorf("--version with APP_VERSION=2.3.1: %v %q", err, out.String())
	}
	var help bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, env(nil), &help); !errors.Is(err, errExit) {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "APP_VERSION") || strings.Contains(help.String(), "APP_HELP") {
		t.Errorf("--help names APP_VERSION or APP_HELP:\n%s", help.String())
	}
}

// Ensure the built binary starts with APP_VERSION=2.3.1 in its environment
// (it exited 2 with "parse error").
func TestBinaryIgnoresAppVersion(t *testing.T) {
	t.Setenv("APP_VERSION", "2.3.1")
	cmd, addr, _, _, _ := startBinary(t)
	if r := lineReport(t, addr); r == nil {
		t.Fatal("no report")
	}
	cmd.Process.Kill()
}

// durationFlags lists the flags --help shows with type duration: every
// one, including flags added later.
func durationFlags(t *testing.T) []string {
	t.Helper()
	var help bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, env(nil), &help); !errors.Is(err, errExit) {
		t.Fatal(err)
	}
	return flagenvtest.OfType(t, help.String(), "duration", 5)
}

// Ensure every duration flag's error, from the command line or the
// environment, names the flag, the value and a good one ("--idle-timeout
// 5: a duration needs a unit, e.g. 5s or 1m"; it was "parse error").
func TestDurationFlagErrors(t *testing.T) {
	for _, name := range durationFlags(t) {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig([]string{"--" + name, "5"}, env(nil), io.Discard)
			if want := "--" + name + " 5: a duration needs a unit, e.g. 5s or 1m"; err == nil || err.Error() != want {
				t.Errorf("--%s 5: %v; want %q", name, err, want)
			}
			_, err = parseConfig([]string{"--" + name, "soon"}, env(nil), io.Discard)
			if want := "--" + name + " soon: want a duration with a unit, e.g. 500ms, 30s, 1m or 1h30m"; err == nil || err.Error() != want {
				t.Errorf("--%s soon: %v; want %q", name, err, want)
			}
			v := envName(name)
			_, err = parseConfig(nil, env(map[string]string{v: "5"}), io.Discard)
			if want := v + "=5 (--" + name + "): a duration needs a unit, e.g. 5s or 1m"; err == nil || err.Error() != want {
				t.Errorf("%s=5: %v; want %q", v, err, want)
			}
		})
	}
}

// Ensure the binary exits 2 with the one-line error for a unitless
// duration.
func TestBinaryDurationError(t *testing.T) {
	cmd := exec.Command(appBinary(t), "--listen", "127.0.0.1:0", "--admin", "", "--idle-timeout", "5")
	cmd.Env = os.Environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("exit %v; want status 2\n%s", err, stderr.String())
	}
	if got, want := stderr.String(), "app: --idle-timeout 5: a duration needs a unit, e.g. 5s or 1m\n"; got != want {
		t.Errorf("stderr %q; want %q", got, want)
	}
}
