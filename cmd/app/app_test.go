package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
	"github.com/originlens/originlens/internal/syncbuf"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Ensure the defaults match the flag contract and every flag is shown in
// --help with its environment variable.
func TestParseConfigDefaultsAndHelp(t *testing.T) {
	cfg, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":80" || cfg.Admin != "127.0.0.1:9090" || cfg.ProxyMode != origin.Off ||
		cfg.ProxyHeaderTimeout != 5*time.Second || cfg.MaxConns != 10000 || cfg.IdleTimeout != 60*time.Second ||
		cfg.MaxLine != 4096 || cfg.FirstBytesTimeout != 10*time.Second || cfg.DrainTimeout != 15*time.Second ||
		cfg.KafkaTopic != "conn-events" || cfg.KafkaCompression != "lz4" || cfg.LogFormat != "text" || len(cfg.KafkaBrokers) != 0 {
		t.Errorf("defaults = %+v", cfg)
	}
	var help bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, env(nil), &help); !errors.Is(err, errExit) {
		t.Fatalf("--help: %v", err)
	}
	for _, name := range []string{
		"listen", "admin", "proxy-protocol", "trusted-proxies", "proxy-header-timeout", "max-conns", "idle-timeout",
		"max-line", "first-bytes-timeout", "drain-timeout", "geoip-db", "asn-db", "geoip-reload-interval", "policy", "max-conns-per-ip",
		"conn-rate-per-ip", "conn-burst-per-ip", "kafka-brokers", "kafka-topic", "kafka-batch-size", "kafka-linger",
		"kafka-compression", "kafka-create-topic", "kafka-partitions", "kafka-replication-factor", "kafka-tls",
		"kafka-ca-file", "kafka-sasl", "kafka-username", "kafka-password", "kafka-aws-region", "queue-size",
		"spool-dir", "spool-max-bytes", "spool-fsync-interval", "log-level", "log-format", "version",
	} {
		if !strings.Contains(help.String(), "-"+name+" ") && !strings.Contains(help.String(), "-"+name+"\n") {
			t.Errorf("--help does not list --%s", name)
		}
		if name == "version" {
			continue // command line only: see TestVersionIgnoresEnvironment
		}
		if !strings.Contains(help.String(), "[env "+envName(name)+"]") {
			t.Errorf("--help does not name %s", envName(name))
		}
	}
}

// Ensure flags win over the environment, the environment fills the rest,
// and bad values from either are one-line errors naming the setting.
func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // substring; empty: no error
		check   func(config) bool
	}{
		{"env fallback", nil, map[string]string{"APP_LISTEN": "127.0.0.1:8080", "APP_PROXY_PROTOCOL": "trusted", "APP_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"}, "",
			func(c config) bool {
				return c.Listen == "127.0.0.1:8080" && c.ProxyMode == origin.Trusted && len(c.TrustedProxies) == 2 &&
					c.TrustedProxies[1] == netip.MustParsePrefix("192.0.2.7/32")
			}},
		{"flag beats env", []string{"--listen", "127.0.0.1:81"}, map[string]string{"APP_LISTEN": "127.0.0.1:8080"}, "",
			func(c config) bool { return c.Listen == "127.0.0.1:81" }},
		{"kafka", []string{"--kafka-brokers", "b1:9092,b2:9092", "--kafka-sasl", "aws-msk-iam"}, nil, "",
			func(c config) bool { return len(c.KafkaBrokers) == 2 && c.KafkaSASL == "aws-msk-iam" }},
		{"sasl none is empty", nil, nil, "", func(c config) bool { return c.KafkaSASL == "" }},
		{"debug", []string{"-log-level", "debug"}, nil, "", func(c config) bool { return c.LogLevel.String() == "DEBUG" }},
		{"bad mode", []string{"--proxy-protocol", "maybe"}, nil, "--proxy-protocol", nil},
		{"bad env duration", nil, map[string]string{"APP_IDLE_TIMEOUT": "soon"}, "APP_IDLE_TIMEOUT", nil},
		{"bad env int", nil, map[string]string{"APP_MAX_CONNS": "many"}, "APP_MAX_CONNS", nil},
		{"bad flag int", []string{"--max-conns", "x"}, nil, "max-conns", nil},
		{"zero max conns", []string{"--max-conns", "0"}, nil, "--max-conns", nil},
		{"negative timeout", []string{"--first-bytes-timeout", "-1s"}, nil, "--first-bytes-timeout", nil},
		{"trusted without proxies", []string{"--proxy-protocol", "trusted"}, nil, "--trusted-proxies", nil},
		{"proxies without trusted", []string{"--trusted-proxies", "10.0.0.0/8"}, nil, "--trusted-proxies", nil},
		{"bad cidr", []string{"--proxy-protocol", "trusted", "--trusted-proxies", "10.0.0.0/33"}, nil, "--trusted-proxies", nil},
		{"bad listen", []string{"--listen", "localhost"}, nil, "--listen", nil},
		{"bad port", []string{"--listen", ":http"}, nil, "--listen", nil},
		{"bad compression", []string{"--kafka-compression", "gzip"}, nil, "--kafka-compression", nil},
		{"bad sasl", []string{"--kafka-sasl", "plain"}, nil, "--kafka-sasl", nil},
		{"scram without user", []string{"--kafka-sasl", "scram-sha-512"}, nil, "--kafka-username", nil},
		{"bad broker", []string{"--kafka-brokers", "nohost"}, nil, "--kafka-brokers", nil},
		{"bad log level", []string{"--log-level", "loud"}, nil, "--log-level", nil},
		{"bad log format", []string{"--log-format", "xml"}, nil, "--log-format", nil},
		{"positional", []string{"extra"}, nil, "unexpected argument", nil},
		{"unknown flag", []string{"--nope"}, nil, "nope", nil},
		{"nan rate", []string{"--conn-rate-per-ip", "NaN"}, nil, "--conn-rate-per-ip", nil},
		{"inf rate", []string{"--conn-rate-per-ip", "+Inf"}, nil, "--conn-rate-per-ip", nil},
		{"limit prefix defaults", nil, nil, "", func(c config) bool { return c.LimitPrefixV4 == 32 && c.LimitPrefixV6 == 64 }},
		{"limit prefixes", []string{"--limit-prefix-v4", "24"}, map[string]string{"APP_LIMIT_PREFIX_V6": "56"}, "",
			func(c config) bool { return c.LimitPrefixV4 == 24 && c.LimitPrefixV6 == 56 }},
		{"limit prefix v4 too long", []string{"--limit-prefix-v4", "33"}, nil, "--limit-prefix-v4 33: must be a prefix length 1-32, got 33 (e.g. --limit-prefix-v4 32)", nil},
		{"limit prefix v6 zero", nil, map[string]string{"APP_LIMIT_PREFIX_V6": "0"}, "--limit-prefix-v6 0: must be a prefix length 1-128, got 0 (e.g. --limit-prefix-v6 64)", nil},
		{"limit prefix v6 not a number", nil, map[string]string{"APP_LIMIT_PREFIX_V6": "/64"}, "APP_LIMIT_PREFIX_V6", nil},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			cfg, err := parseConfig(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("parseConfig(%q) error = %v; want one line containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			if !tt.check(cfg) {
				t.Errorf("parseConfig(%q) = %+v", tt.args, cfg)
			}
		})
	}
}

// binDir holds the app binary that buildApp builds; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildApp builds the app binary once per test binary run.
var buildApp = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "originlens-app-test")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "app")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func appBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildApp()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Ensure the binary exits 2 with a one-line error on a bad value, from a
// flag or the environment, before listening.
func TestBinaryBadValues(t *testing.T) {
	bin := appBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--max-line", "ten"}, nil, "max-line"},
		{nil, []string{"APP_PROXY_PROTOCOL=sometimes"}, "proxy-protocol"},
		{nil, []string{"APP_DRAIN_TIMEOUT=0s"}, "drain-timeout"},
		{[]string{"--geoip-reload-interval", "0s"}, nil, "geoip-reload-interval"},
		// The listen address is busy, but validation fails first: exit 2.
		{[]string{"--listen", busy.Addr().String(), "--log-level", "chatty"}, nil, "log-level"},
	}
	for _, tt := range tests {
		cmd := exec.Command(bin, tt.args...)
		cmd.Env = append(os.Environ(), tt.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v %v: exit %v; want status 2", tt.args, tt.env, err)
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.want) || stdout.Len() != 0 {
			t.Errorf("%v %v: stderr %q stdout %q; want one line naming %s", tt.args, tt.env, msg, stdout.String(), tt.want)
		}
	}
	// A busy listen address is a runtime failure: status 1.
	cmd := exec.Command(bin, "--listen", busy.Addr().String(), "--admin", "")
	if err := cmd.Run(); !errors.As(err, new(*exec.ExitError)) || cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("busy listen address: %v; want status 1", err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "originlens app") {
		t.Errorf("--version: %q %v", out, err)
	}
}

type syncBuffer = syncbuf.Buffer

// parseEvents parses JSON lines of events, failing on anything else.
func parseEvents(t *testing.T, out string) []event.Event {
	t.Helper()
	var evs []event.Event
	for l := range strings.Lines(out) {
		ev, err := event.Parse([]byte(l))
		if err != nil {
			t.Fatalf("stdout line %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// Ensure a --listen or --admin host that cannot be resolved is a bad flag
// value: run returns a *configError (exit 2) before anything listens.
func TestRunUnresolvableAddressIsConfigError(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"listen", []string{"--listen", "bad!host:0", "--admin", ""}},
		{"admin", []string{"--listen", "127.0.0.1:0", "--admin", "bad!host:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			listened := false
			cfg.ready = func(net.Addr, net.Addr) { listened = true }
			var stderr syncBuffer
			err = run(context.Background(), cfg, io.Discard, &stderr)
			if !errors.As(err, new(*configError)) || !strings.Contains(err.Error(), "--"+tt.name) {
				t.Errorf("run(%q) = %v; want a *configError naming --%s", tt.args, err, tt.name)
			}
			if listened {
				t.Errorf("run(%q) listened before failing", tt.args)
			}
		})
	}
}

// Ensure run serves in-process with the admin endpoints, and returns nil
// once ctx is done, with every event on stdout.
func TestRunInProcess(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "2s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]net.Addr, 1)
	cfg.ready = func(app, admin net.Addr) { addrs <- [2]net.Addr{app, admin} }
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &stdout, &stderr) }()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}

	c, err := net.Dial("tcp", a[0].String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "hi\n")
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.ParseLine(l)
	if err != nil || r[report.KeyClient] != c.LocalAddr().String() {
		t.Fatalf("report %q: %v", l, err)
	}
	c.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a[1].String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	wants := []string{
		`originlens_connections_total{action="connection-closed",reason="served",via="direct"} 1`,
		`originlens_open_connections 0`,
		`originlens_proxy_header_errors_total{kind="spoof"} 0`,
		`originlens_sink_events_total{result="ok",sink="stdout"} 1`,
		`go_goroutines`,
	}
	// The event of c is counted once the server has seen the close and the
	// sink has written it: poll, with a failure bound for a busy machine.
	var code int
	var metrics string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, metrics = get("/metrics")
		missing := false
		for _, want := range wants {
			missing = missing || !strings.Contains(metrics, want)
		}
		if !missing || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wants {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(60 * time.Second): // failure bound only
		t.Fatal("run did not return")
	}
	evs := parseEvents(t, stdout.String())
	if len(evs) != 1 || evs[0].Event.ID != r[report.KeyConn] {
		t.Errorf("events %+v; want the one of conn %s", evs, r[report.KeyConn])
	}
	if strings.Contains(stdout.String(), "level=") || !strings.Contains(stderr.String(), "msg=serving") {
		t.Errorf("logs must go to stderr, events to stdout:\nstdout %s\nstderr %s", stdout.String(), stderr.String())
	}
}

// Ensure SIGTERM during open connections loses no event: the built binary
// stops accepting, lets the conversations finish, publishes exactly one
// event per connection and exits 0.
func TestShutdownLosesNoEvent(t *testing.T) {
	bin := appBinary(t)
	// Timeouts far past what the conversations need on a busy machine: the
	// drain ends when the last one does, not at its timeout.
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin", "", "--log-format", "json", "--drain-timeout", "30s", "--first-bytes-timeout", "60s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logs := bufio.NewScanner(stderr)
	var addr string
	for addr == "" && logs.Scan() {
		var rec struct{ Msg, Listen string }
		if json.Unmarshal(logs.Bytes(), &rec) == nil && rec.Msg == "serving" {
			addr = rec.Listen
		}
	}
	if addr == "" {
		t.Fatal("no serving log line")
	}
	var rest bytes.Buffer
	logsDone := make(chan struct{})
	go func() { io.Copy(&rest, stderr); close(logsDone) }()

	type client struct {
		net.Conn
		br *bufio.Reader
	}
	const n = 6
	clients := make([]client, n)
	for i := range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		clients[i] = client{c, bufio.NewReader(c)}
		if i == n-1 {
			continue // this one stays silent until after SIGTERM
		}
		fmt.Fprintf(c, "hello %d\n", i)
		if _, err := clients[i].br.ReadString('\n'); err != nil { // report
			t.Fatal(err)
		}
		if _, err := clients[i].br.ReadString('\n'); err != nil { // greeting
			t.Fatal(err)
		}
	}
	// Wait until the silent connection has been accepted: a probe that gets
	// its report was accepted after it.
	probe, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(probe, "probe\nquit\n")
	io.Copy(io.Discard, probe)
	probe.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for i, c := range clients {
		if i == n-1 {
			fmt.Fprintf(c, "late first line\n")
			if l, err := c.br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "client=") {
				t.Errorf("silent client after SIGTERM: %q %v", l, err)
			}
			c.br.ReadString('\n')
		}
		fmt.Fprintf(c, "after sigterm %d\n", i)
		if l, err := c.br.ReadString('\n'); err != nil || l != fmt.Sprintf("after sigterm %d\n", i) {
			t.Errorf("client %d echo after SIGTERM: %q %v", i, l, err)
		}
		fmt.Fprintf(c, "quit\n")
		if b, err := io.ReadAll(c.br); err != nil || len(b) != 0 {
			t.Errorf("client %d: after quit %q %v", i, b, err)
		}
	}
	err = cmd.Wait()
	<-logsDone
	if err != nil {
		t.Fatalf("exit: %v\nstderr: %s", err, rest.String())
	}
	evs := parseEvents(t, stdout.String())
	ids := map[string]bool{}
	ports := map[uint16]int{}
	for _, ev := range evs {
		if ids[ev.Event.ID] {
			t.Errorf("duplicate event id %s", ev.Event.ID)
		}
		ids[ev.Event.ID] = true
		ports[ev.Source.Port]++
		if ev.Event.Reason != "served" {
			t.Errorf("event %s from port %d: reason %s; want served", ev.Event.ID, ev.Source.Port, ev.Event.Reason)
		}
	}
	if len(evs) != n+1 {
		t.Errorf("%d events; want %d (one per connection)", len(evs), n+1)
	}
	for i, c := range clients {
		if p := addrPortOf(t, c.LocalAddr()).Port(); ports[p] != 1 {
			t.Errorf("client %d (port %d): %d events; want 1", i, p, ports[p])
		}
	}
}

func addrPortOf(t *testing.T, a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// startBinary starts the built app with args and returns its client and
// admin addresses from the "serving" log line; the process is killed at
// cleanup. Its stderr goes to the returned buffer, copied by os/exec, so
// that after cmd.Wait the buffer holds every line the process wrote.
// (A StderrPipe read by our own goroutine could lose the last lines:
// Wait closes the pipe.)
func startBinary(t *testing.T, args ...string) (cmd *exec.Cmd, addr, admin string, stdout, stderr *syncBuffer) {
	t.Helper()
	cmd = exec.Command(appBinary(t), append([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second) // a failure bound for a busy machine
	for addr == "" {
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var rec struct{ Msg, Listen, Admin string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
				addr, admin = rec.Listen, rec.Admin
				break
			}
		}
		if addr != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
		if time.Now().After(deadline) || exited(cmd.Process.Pid) {
			t.Fatalf("no serving log line:\n%s", stderr.String())
		}
	}
	return cmd, addr, admin, stdout, stderr
}

// exited reports whether pid has exited (a zombie not yet waited for, or
// gone).
func exited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return !ok || strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

// lineReport connects, sends a first line and returns the report.
func lineReport(t *testing.T, addr string) report.Report {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "hello\n")
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.ParseLine(l)
	if err != nil {
		t.Fatalf("report %q: %v", l, err)
	}
	return r
}

// Ensure SIGHUP swaps in a changed --policy file, and keeps the current
// rules (counting the error) when the new file is bad.
func TestPolicyReloadOnSIGHUP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("default: {decision: serve, region: us-east-2}\nrules:\n  - name: no-loopback\n    when: {class: [loopback]}\n    then: {decision: deny}\n")
	cmd, addr, admin, _, stderr := startBinary(t, "--policy", path)
	if r := lineReport(t, addr); r[report.KeyDecision] != "deny" || r[report.KeyRule] != "no-loopback" {
		t.Fatalf("before reload: %v", r)
	}
	hup := func(wantLog string) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), wantLog); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q log after SIGHUP:\n%s", wantLog, stderr.String())
			}
		}
	}
	write("default: {decision: serve, region: us-east-2}\n")
	hup("policy reloaded")
	if r := lineReport(t, addr); r[report.KeyDecision] != "serve" {
		t.Fatalf("after reload: %v", r)
	}
	write("default: {decision: maybe}\n")
	hup("policy reload failed")
	if r := lineReport(t, addr); r[report.KeyDecision] != "serve" {
		t.Fatalf("after a bad reload: %v; want the previous rules", r)
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`originlens_policy_reloads_total{result="ok"} 1`, `originlens_policy_reloads_total{result="error"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// Ensure a bad --policy file is a configuration error: exit 2, one line.
func TestBadPolicyFileExits2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("rules: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(appBinary(t), "--listen", "127.0.0.1:0", "--admin", "", "--policy", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("exit %v; want status 2\n%s", err, stderr.String())
	}
	if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.Contains(stderr.String(), "policy") {
		t.Errorf("stderr %q; want one line about the policy", stderr.String())
	}
}
