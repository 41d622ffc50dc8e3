package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

// binDir holds the binary buildIngest builds; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildIngest builds the ingest binary once per test binary run.
var buildIngest = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "originlens-ingest-test")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "ingest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

func ingestBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary: skipped with -short")
	}
	bin, err := buildIngest()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func noEnv(string) (string, bool) { return "", false }

// Ensure --admin ” turns the admin endpoint off, as --ui ” does and as
// app's --admin ” does (it was an error), from a flag or the environment;
// and a bad address names the flag, the value and a good one.
func TestOptionalListeners(t *testing.T) {
	base := []string{"--kafka-brokers", "127.0.0.1:9092"}
	tests := []struct {
		args    []string
		env     map[string]string
		admin   string // "" invalid
		ui      string
		wantErr string
	}{
		{base, nil, "127.0.0.1:9091", "127.0.0.1:8088", ""},
		{append(base, "--admin", ""), nil, "", "127.0.0.1:8088", ""},
		{append(base, "--admin=", "--ui="), nil, "", "", ""},
		{base, map[string]string{"INGEST_ADMIN": "", "INGEST_UI": ""}, "", "", ""},
		{append(base, "--admin", "[::ffff:127.0.0.1]:9"), nil, "127.0.0.1:9", "127.0.0.1:8088", ""},
		{append(base, "--admin", "localhost:9091"), nil, "", "", "--admin localhost:9091: want ip:port, e.g. 127.0.0.1:9091, or empty for none"},
		{append(base, "--ui", "8088"), nil, "", "", "--ui 8088: want ip:port"},
	}
	for _, tt := range tests {
		cfg, err := parseConfig(tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, io.Discard)
		if tt.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v; want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %v: %v", tt.args, tt.env, err)
			continue
		}
		str := func(a interface {
			IsValid() bool
			String() string
		}) string {
			if !a.IsValid() {
				return ""
			}
			return a.String()
		}
		if str(cfg.Admin) != tt.admin || str(cfg.UI) != tt.ui {
			t.Errorf("%q %v: admin %q ui %q; want %q %q", tt.args, tt.env, str(cfg.Admin), str(cfg.UI), tt.admin, tt.ui)
		}
	}
}

// Ensure the service runs with --admin ” and --ui ”: nothing listens,
// and a cancel stops it cleanly.
func TestRunWithoutAdmin(t *testing.T) {
	k := newKafka(t, 1)
	cfg, err := parseConfig([]string{"--kafka-brokers", strings.Join(k.brokers, ","), "--admin", "", "--ui", ""}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	waitFor(t, "consuming", 60*time.Second, func() bool { return strings.Contains(logs.String(), `msg=consuming`) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v; want nil", err)
	}
	if strings.Contains(logs.String(), "listening") {
		t.Errorf("something listened:\n%s", logs.String())
	}
}

// Ensure INGEST_VERSION from the environment is ignored, and --help names
// it nowhere.
func TestVersionIgnoresEnvironment(t *testing.T) {
	for _, v := range []string{"2.3.1", "true"} {
		var out bytes.Buffer
		_, err := parseConfig([]string{"--kafka-brokers", "127.0.0.1:9092"}, func(k string) (string, bool) {
			if k == "INGEST_VERSION" || k == "INGEST_HELP" {
				return v, true
			}
			return "", false
		}, &out)
		if err != nil || out.Len() != 0 {
			t.Errorf("INGEST_VERSION=%s: %v, printed %q; want a normal start", v, err, out.String())
		}
	}
	var out bytes.Buffer
	if _, err := parseConfig([]string{"--version"}, noEnv, &out); !errors.Is(err, errExit) || !strings.HasPrefix(out.String(), "ingest ") {
		t.Errorf("--version: %v %q", err, out.String())
	}
}

// durationFlags lists the flags --help shows with type duration: every
// one, including flags added later.
func durationFlags(t *testing.T) []string {
	t.Helper()
	var help bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, noEnv, &help); !errors.Is(err, errExit) {
		t.Fatal(err)
	}
	return flagenvtest.OfType(t, help.String(), "duration", 5)
}

// Ensure every duration flag's error names the flag, the value and a good
// one (it was "parse error", after the whole usage on stdout).
func TestDurationFlagErrors(t *testing.T) {
	for _, name := range durationFlags(t) {
		var out bytes.Buffer
		_, err := parseConfig([]string{"--kafka-brokers", "127.0.0.1:9092", "--" + name, "5"}, noEnv, &out)
		if want := "--" + name + " 5: a duration needs a unit, e.g. 5s or 1m"; err == nil || err.Error() != want {
			t.Errorf("--%s 5: %v; want %q", name, err, want)
		}
		if out.Len() != 0 {
			t.Errorf("--%s 5 printed %q; want nothing but the error", name, out.String())
		}
		v := "INGEST_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		_, err = parseConfig([]string{"--kafka-brokers", "127.0.0.1:9092"}, func(k string) (string, bool) { return "5", k == v }, io.Discard)
		if want := v + "=5 (--" + name + "): a duration needs a unit, e.g. 5s or 1m"; err == nil || err.Error() != want {
			t.Errorf("%s=5: %v; want %q", v, err, want)
		}
	}
}

// Ensure the binary exits 2 with one line for a unitless duration, and
// starts with INGEST_VERSION set.
func TestBinaryFlagErrors(t *testing.T) {
	bin := ingestBinary(t)
	cmd := exec.Command(bin, "--kafka-brokers", "127.0.0.1:9", "--admin", "", "--ui", "", "--flush-interval", "5")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("exit %v; want status 2\n%s", err, stderr.String())
	}
	if got, want := stderr.String(), "ingest: --flush-interval 5: a duration needs a unit, e.g. 5s or 1m\n"; got != want || stdout.Len() != 0 {
		t.Errorf("stderr %q stdout %q; want %q and nothing on stdout", got, stdout.String(), want)
	}
}

// Ensure several bad settings are reported on one line, each named.
func TestValidateOneLine(t *testing.T) {
	_, err := parseConfig([]string{"--kafka-brokers", "127.0.0.1:9092", "--bulk-docs", "0", "--bulk-workers", "99"}, noEnv, io.Discard)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--bulk-docs") || !strings.Contains(err.Error(), "--bulk-workers 99") {
		t.Errorf("error %q; want one line naming --bulk-docs and --bulk-workers", err)
	}
}
