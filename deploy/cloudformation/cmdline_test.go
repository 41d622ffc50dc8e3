package cloudformation_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/report"
)

const repoRoot = "../.."

// goTool returns the go command that runs these tests.
func goTool(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		tb.Skip("no go command to build the binaries with")
	}
	return p
}

// requireCmd skips when a command's package has no Go files yet (the
// parallel work lands one binary at a time).
func requireCmd(tb testing.TB, name string) {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", name, "*.go"))
	if len(files) == 0 {
		tb.Skipf("cmd/%s has no Go files yet", name)
	}
}

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]error{}
)

// buildCmd builds ./cmd/<name> once per test binary and returns its path.
func buildCmd(tb testing.TB, name string) string {
	tb.Helper()
	requireCmd(tb, name)
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "originlens-cfn-bin")
		if err != nil {
			tb.Fatal(err)
		}
		buildDir = dir
	}
	bin := filepath.Join(buildDir, name)
	err, done := built[name]
	if !done {
		cmd := exec.Command(goTool(tb), "build", "-o", bin, "./cmd/"+name)
		cmd.Dir = repoRoot
		if out, cerr := cmd.CombinedOutput(); cerr != nil {
			err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, cerr, out)
		}
		built[name] = err
	}
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// checkEnvFlags fails for every PREFIX_NAME variable whose --name flag the
// program's --help output does not list.
func checkEnvFlags(t *testing.T, help []byte, prefix string, env map[string]string) {
	t.Helper()
	for k := range env {
		flag, ok := strings.CutPrefix(k, prefix)
		if !ok {
			t.Errorf("%s is no %s variable", k, prefix)
			continue
		}
		flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
		if !regexp.MustCompile(`(?m)^\s+--?` + regexp.QuoteMeta(flag) + `(\s|$)`).Match(help) {
			t.Errorf("%s sets --%s, which --help does not list", k, flag)
		}
	}
}

// unit is the part of a systemd unit file the tests use.
type unit struct {
	execStart []string
	envFile   string
}

func parseUnit(tb testing.TB, path string) unit {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var u unit
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if section != "[Service]" {
			continue
		}
		switch k {
		case "ExecStart":
			if u.execStart != nil {
				tb.Fatalf("%s: more than one ExecStart", path)
			}
			u.execStart = strings.Fields(strings.TrimLeft(v, "-@+!:"))
		case "EnvironmentFile":
			u.envFile = strings.TrimPrefix(v, "-")
		}
	}
	if len(u.execStart) == 0 || u.envFile == "" {
		tb.Fatalf("%s: want ExecStart and EnvironmentFile in [Service]", path)
	}
	return u
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAppCommandLine starts the real app binary the way an instance does:
// the unit's ExecStart with the environment file the user data writes,
// rendered for each proxy-protocol setting of the stack (and the default
// app.env of the tarball), with placeholders where only AWS can fill in:
// no Kafka brokers (events go to stdout), loopback addresses instead of :80
// and the admin port, a temporary spool. A client then speaks the line
// protocol to it, with a PROXY v2 header when the NLB would send one.
func TestAppCommandLine(t *testing.T) {
	bin := buildCmd(t, "app")
	u := parseUnit(t, filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"))
	if u.execStart[0] != "/opt/originlens/bin/app" {
		t.Fatalf("ExecStart runs %s, the user data unpacks the release into /opt/originlens", u.execStart[0])
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("app --help: %v\n%s", err, help)
	}

	a := load(t, "app.yaml")
	defaultEnv, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/app.env"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		lines []string
		mode  string
	}{
		{"tarball-default", strings.Split(string(defaultEnv), "\n"), "off"},
	}
	for _, pp := range []string{"false", "true"} {
		ud := renderUserData(t, a, "AppLaunchTemplate", map[string]string{"ProxyProtocolV2": pp})
		if !strings.Contains(ud, "install -m 0644 /opt/originlens/systemd/originlens-app.service /etc/systemd/system/originlens-app.service") {
			t.Fatalf("the user data does not install deploy/systemd/originlens-app.service:\n%s", ud)
		}
		if !strings.Contains(ud, "systemctl enable --now originlens-app.service") {
			t.Fatal("the user data does not start originlens-app.service")
		}
		mode := map[string]string{"false": "off", "true": "required"}[pp]
		cases = append(cases, struct {
			name  string
			lines []string
			mode  string
		}{"userdata-ppv2=" + pp, heredoc(t, ud, u.envFile), mode})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := envFile(t, c.lines, map[string]string{"BROKERS": ""})
			checkEnvFlags(t, help, "APP_", env)
			if env["APP_PROXY_PROTOCOL"] != c.mode {
				t.Fatalf("APP_PROXY_PROTOCOL = %q, want %q", env["APP_PROXY_PROTOCOL"], c.mode)
			}
			if env["APP_LISTEN"] != ":80" {
				t.Errorf("APP_LISTEN = %q, want :80 (the target group's port)", env["APP_LISTEN"])
			}
			// Placeholders for what only an instance has.
			listen := freeAddr(t)
			env["APP_LISTEN"] = listen
			env["APP_ADMIN"] = freeAddr(t)
			if _, ok := env["APP_SPOOL_DIR"]; ok {
				env["APP_SPOOL_DIR"] = filepath.Join(t.TempDir(), "spool")
			}
			var probe func(string)
			if c.mode == "off" {
				probe = func(listen string) { runProbeCommand(t, listen) }
			}
			runApp(t, bin, u.execStart[1:], env, listen, c.mode, probe)
		})
	}
}

// runApp starts the app, exchanges with it, stops it with SIGTERM and
// checks that it exits cleanly and wrote the connection's event to stdout.
// probe, when set, runs against the app before it is stopped.
func runApp(t *testing.T, bin string, args []string, env map[string]string, listen, mode string, probe func(listen string)) {
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout = stdout
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()

	// Wait for the listener, bounded.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("app exited before listening: %v\nenv: %v\nstderr:\n%s", err, cmd.Env, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("app did not listen on %s within 20s\nstderr:\n%s", listen, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	var conns []string
	switch mode {
	case "off":
		conns = append(conns, exchange(t, listen, nil, ""))
	case "required":
		// Without the NLB's header the app must not take the socket peer
		// for the client.
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "hello from nowhere\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			if r, perr := report.ParseLine(line); perr == nil && r[report.KeyVia] == "direct" {
				t.Errorf("--proxy-protocol required served a connection without a PROXY header: %q", line)
			}
		}
		c.Close()
		src := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}
		dst := &net.TCPAddr{IP: net.ParseIP("198.51.100.10"), Port: 80}
		conns = append(conns, exchange(t, listen, proxyproto.HeaderProxyFromAddrs(2, src, dst), "203.0.113.7:40000"))
	default:
		t.Fatalf("no exchange for mode %q", mode)
	}

	if probe != nil {
		probe(listen)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("app exited with %v after SIGTERM\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("app still running 30s after SIGTERM\nstderr:\n%s", stderr.String())
	}
	out, err := os.ReadFile(stdout.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout (events):\n%s", out)
	for _, id := range conns {
		if id != "" && !bytes.Contains(out, []byte(id)) {
			t.Errorf("no event for connection %s on stdout (no brokers: events are JSON lines there):\n%s", id, out)
		}
	}
	if env["APP_LOG_FORMAT"] == "json" {
		for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			if line != "" && !json.Valid([]byte(line)) {
				t.Errorf("APP_LOG_FORMAT=json, but a log line is not JSON: %q", line)
			}
		}
	}
}

// exchange connects, sends the PROXY header when given and a first line,
// parses the report line and returns the connection's id. wantClient is
// the address the report must name; empty means the client's own socket.
func exchange(t *testing.T, addr string, h *proxyproto.Header, wantClient string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if h != nil {
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fmt.Fprint(c, "hello originlens\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the report line: %v (got %q)", err, line)
	}
	r, err := report.ParseLine(line)
	if err != nil {
		t.Fatalf("report.ParseLine(%q): %v", line, err)
	}
	t.Logf("report: %s", strings.TrimSpace(line))
	local := c.LocalAddr().String()
	if wantClient == "" {
		wantClient = local
		if r[report.KeyVia] != "direct" {
			t.Errorf("via = %q, want direct", r[report.KeyVia])
		}
	} else if r[report.KeyVia] != "proxy-v2" {
		t.Errorf("via = %q, want proxy-v2", r[report.KeyVia])
	}
	if r[report.KeyClient] != wantClient {
		t.Errorf("client = %q, want %q (report %q)", r[report.KeyClient], wantClient, line)
	}
	if r[report.KeyPeer] != local {
		t.Errorf("peer = %q, want the socket peer %q", r[report.KeyPeer], local)
	}
	if r[report.KeyConn] == "" || r[report.KeyDecision] == "" {
		t.Errorf("report without conn or decision: %q", line)
	}
	if r[report.KeyDecision] == "serve" {
		// A greeting, then every line echoed.
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("reading the greeting: %v", err)
		}
		fmt.Fprint(c, "echo me\n")
		if echo, err := br.ReadString('\n'); err != nil || strings.TrimRight(echo, "\r\n") != "echo me" {
			t.Errorf("echo = %q, %v; want %q", echo, err, "echo me")
		}
		fmt.Fprint(c, "quit\n")
	}
	// Let the server finish the connection so that its event is emitted.
	io.Copy(io.Discard, br)
	return r[report.KeyConn]
}

// TestSystemdUnits runs systemd-analyze verify on the units, with their
// program and environment file pointed at files that exist here.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; units unchecked")
	}
	truth, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to stand in for the binaries")
	}
	units := []string{filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"), filepath.Join(repoRoot, "deploy/systemd/originlens-ingest.service")}
	if all, _ := filepath.Glob(filepath.Join(repoRoot, "deploy/systemd/*.service")); len(all) != 3 {
		t.Errorf("deploy/systemd/*.service = %v, want the app's, the ingest's and geoipupdate's (TestGeoIPUpdateUnits checks that one)", all)
	}
	if len(units) != 2 {
		t.Fatalf("units = %v, want the app's and the ingest's", units)
	}
	for _, path := range units {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".service"), func(t *testing.T) {
			u := parseUnit(t, path)
			envName := strings.TrimPrefix(filepath.Base(u.envFile), "")
			envPath, err := filepath.Abs(filepath.Join(repoRoot, "deploy/systemd", envName))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(envPath); err != nil {
				t.Fatalf("%s reads %s; the tarball's default is missing: %v", name, u.envFile, err)
			}
			data, _ := os.ReadFile(path)
			s := strings.Replace(string(data), "ExecStart="+u.execStart[0], "ExecStart="+truth, 1)
			s = strings.Replace(s, "EnvironmentFile="+u.envFile, "EnvironmentFile="+envPath, 1)
			tmp := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, sa, "verify", tmp).CombinedOutput()
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.Contains(line, name) {
					t.Errorf("systemd-analyze verify: %s", line)
				} else if line != "" {
					t.Logf("systemd-analyze (not about the unit): %s", line)
				}
			}
			if err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
		})
	}
}

// TestPackage runs scripts/package.sh (make package) into a temporary
// directory and checks the tarball holds what the user data installs.
func TestPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three linux/amd64 binaries; skipped with -short")
	}
	t.Parallel() // a slow external build; the other tests need not wait
	for _, c := range []string{"app", "ingest", "nc-probe"} {
		requireCmd(t, c)
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/package.sh")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "VERSION=cfntest", "DIST="+dist, "GO="+goTool(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, out)
	}
	f, err := os.Open(filepath.Join(dist, "originlens-cfntest-linux-amd64.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(repoRoot)
	files := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, ok := strings.CutPrefix(h.Name, "originlens-cfntest-linux-amd64/")
		if !ok {
			t.Errorf("%s is outside the top directory the user data strips", h.Name)
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
		if strings.HasPrefix(name, "bin/") {
			if h.Mode&0o111 == 0 {
				t.Errorf("%s is not executable (mode %o)", name, h.Mode)
			}
			ef, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if ef.Machine != elf.EM_X86_64 || ef.OSABI != elf.ELFOSABI_NONE && ef.OSABI != elf.ELFOSABI_LINUX {
				t.Errorf("%s: machine %v OS ABI %v, want linux/amd64", name, ef.Machine, ef.OSABI)
			}
			if bytes.Contains(b, []byte(abs+"/")) {
				t.Errorf("%s holds the build directory %s: not built with -trimpath", name, abs)
			}
		}
	}
	for _, want := range []string{"bin/app", "bin/ingest", "bin/nc-probe", "systemd/originlens-app.service",
		"systemd/originlens-ingest.service", "systemd/originlens-geoipupdate.service", "systemd/originlens-geoipupdate.timer", "etc/app.env", "etc/ingest.env", "etc/policy.example.yaml", "VERSION"} {
		if _, ok := files[want]; !ok {
			t.Errorf("the tarball lacks %s", want)
		}
	}
	for _, u := range []string{"originlens-app.service", "originlens-ingest.service", "originlens-geoipupdate.service", "originlens-geoipupdate.timer"} {
		repo, _ := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd", u))
		if !bytes.Equal(files["systemd/"+u], repo) {
			t.Errorf("systemd/%s in the tarball differs from deploy/systemd", u)
		}
	}
	if v := strings.TrimSpace(string(files["VERSION"])); v != "cfntest" {
		t.Errorf("VERSION = %q", v)
	}
}

// TestUserDataShellSyntax renders each launch template's user data for
// every value of the parameters that change it and has bash parse it.
func TestUserDataShellSyntax(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	cases := []struct {
		file, lt string
		params   []map[string]string
	}{
		{"app.yaml", "AppLaunchTemplate", []map[string]string{
			{"ProxyProtocolV2": "false"},
			{"ProxyProtocolV2": "true", "PolicyKey": "originlens/policy.yaml",
				"GeoIpDbKey": "originlens/GeoLite2-City.mmdb", "AsnDbKey": "originlens/GeoLite2-ASN.mmdb"},
		}},
		{"ingest.yaml", "IngestLaunchTemplate", []map[string]string{nil}},
	}
	for _, c := range cases {
		for i, p := range c.params {
			t.Run(fmt.Sprintf("%s/%d", strings.TrimSuffix(c.file, ".yaml"), i), func(t *testing.T) {
				ud := renderUserData(t, load(t, c.file), c.lt, p)
				if !strings.HasPrefix(ud, "#!/bin/bash\nset -euo pipefail\n") {
					t.Errorf("user data does not start with a bash shebang and set -euo pipefail:\n%s", ud)
				}
				if strings.Contains(ud, "{{") {
					t.Errorf("user data holds an unresolved value:\n%s", ud)
				}
				cmd := exec.Command(bash, "-n")
				cmd.Stdin = strings.NewReader(ud)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("bash -n: %v\n%s\n--- user data:\n%s", err, out, ud)
				}
				if p["PolicyKey"] != "" {
					env := envFile(t, heredoc(t, ud, "/etc/originlens/app.env"), map[string]string{"BROKERS": ""})
					for k, want := range map[string]string{"APP_POLICY": "/etc/originlens/policy.yaml",
						"APP_GEOIP_DB": "/etc/originlens/city.mmdb", "APP_ASN_DB": "/etc/originlens/asn.mmdb"} {
						if env[k] != want {
							t.Errorf("%s = %q, want %q", k, env[k], want)
						}
						if !strings.Contains(ud, " "+want+"\n") {
							t.Errorf("user data does not download %s", want)
						}
					}
				}
			})
		}
	}
}

// TestIngestEnvironment checks the ingest's environment, as the user data
// writes it and as the tarball's default ingest.env has it, against the
// flags of the real cmd/ingest binary.
func TestIngestEnvironment(t *testing.T) {
	bin := buildCmd(t, "ingest")
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("ingest --help: %v\n%s", err, help)
	}
	u := parseUnit(t, filepath.Join(repoRoot, "deploy/systemd/originlens-ingest.service"))
	if u.execStart[0] != "/opt/originlens/bin/ingest" || len(u.execStart) != 1 {
		t.Errorf("ExecStart = %v, want /opt/originlens/bin/ingest configured by its environment file", u.execStart)
	}
	ud := renderUserData(t, load(t, "ingest.yaml"), "IngestLaunchTemplate", nil)
	if !strings.Contains(ud, "install -m 0644 /opt/originlens/systemd/originlens-ingest.service /etc/systemd/system/originlens-ingest.service") ||
		!strings.Contains(ud, "systemctl enable --now originlens-ingest.service") {
		t.Errorf("the user data does not install and start originlens-ingest.service:\n%s", ud)
	}
	checkEnvFlags(t, help, "INGEST_", envFile(t, heredoc(t, ud, u.envFile), map[string]string{"BROKERS": "b-1.example:9098"}))
	def, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/ingest.env"))
	if err != nil {
		t.Fatal(err)
	}
	checkEnvFlags(t, help, "INGEST_", envFile(t, strings.Split(string(def), "\n"), nil))
}

// runProbeCommand runs the stack's ProbeCommand output with the real
// nc-probe against the app on loopback: the accelerator's address becomes
// the app's listener, the public address lookup the loopback address.
func runProbeCommand(t *testing.T, listen string) {
	t.Helper()
	if files, _ := filepath.Glob(filepath.Join(repoRoot, "cmd/nc-probe/*.go")); len(files) == 0 {
		t.Log("cmd/nc-probe has no Go files yet; ProbeCommand not run")
		return
	}
	a := load(t, "app.yaml")
	e := newEnv(a, withRequired("app.yaml", nil))
	e.attrs = map[string]any{"Accelerator.Ipv4Addresses": []any{"192.0.2.10", "192.0.2.11"}}
	cmdline := fmt.Sprint(e.mustEval(t, dig(a.section("Outputs"), "ProbeCommand", "Value")))
	lookup := `"$(curl -s https://checkip.amazonaws.com)"`
	if !strings.Contains(cmdline, lookup) {
		t.Fatalf("ProbeCommand %q no longer looks the public address up as expected", cmdline)
	}
	cmdline = strings.Replace(cmdline, lookup, "127.0.0.1", 1)
	args := strings.Fields(cmdline)
	if args[0] != "./bin/nc-probe" || args[len(args)-1] != "192.0.2.10:8080" {
		t.Fatalf("ProbeCommand = %q, want ./bin/nc-probe ... <first accelerator IP>:8080", cmdline)
	}
	args[len(args)-1] = listen
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, buildCmd(t, "nc-probe"), args[1:]...).CombinedOutput()
	if err != nil {
		t.Errorf("ProbeCommand %v against the app: %v (exit 0 means the client address was preserved)\n%s", args, err, out)
		return
	}
	t.Logf("ProbeCommand %v:\n%s", args, out)
}

// TestUserDataRuns executes each fleet's rendered user data with bash, in a
// temporary root (its absolute paths rewritten under it), with stand-ins
// for the two programs that need AWS: `aws` copies a release tarball built
// here and returns fixed bootstrap brokers, `systemctl` records what it is
// asked. Then the app is started from the files the script installed: the
// unit's ExecStart with the environment file it wrote.
func TestUserDataRuns(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	app := buildCmd(t, "app")
	const brokers = "b-1.originlens.example:9098,b-2.originlens.example:9098"

	// The release tarball, laid out as scripts/package.sh lays it out.
	tarball := filepath.Join(t.TempDir(), "release.tar.gz")
	writeRelease(t, tarball, map[string]string{
		"bin/app":                           app,
		"bin/ingest":                        filepath.Join(repoRoot, "deploy/systemd/ingest.env"), // a stand-in: the ingest is not started here
		"systemd/originlens-app.service":    filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"),
		"systemd/originlens-ingest.service": filepath.Join(repoRoot, "deploy/systemd/originlens-ingest.service"),
	})

	for _, c := range []struct{ file, lt, unit, envPath string }{
		{"app.yaml", "AppLaunchTemplate", "originlens-app.service", "/etc/originlens/app.env"},
		{"ingest.yaml", "IngestLaunchTemplate", "originlens-ingest.service", "/etc/originlens/ingest.env"},
	} {
		t.Run(strings.TrimSuffix(c.file, ".yaml"), func(t *testing.T) {
			r := newUserDataRoot(t, tarball, `"kafka get-bootstrap-brokers") echo "`+brokers+`" ;;`)
			root, rewrite, calls := r.dir, r.rewrite, r.calls
			r.run(t, bash, renderUserData(t, load(t, c.file), c.lt, nil))
			got, _ := os.ReadFile(calls)
			want := "systemctl daemon-reload\nsystemctl enable --now " + c.unit + "\n"
			if !strings.HasSuffix(string(got), want) || !strings.Contains(string(got), "aws kafka get-bootstrap-brokers") {
				t.Errorf("calls:\n%s\nwant the broker lookup and, last:\n%s", got, want)
			}
			installed := filepath.Join(root, "etc/systemd/system", c.unit)
			u := parseUnit(t, installed)
			exe, envPath := rewrite.Replace(u.execStart[0]), rewrite.Replace(u.envFile)
			if envPath != root+c.envPath {
				t.Errorf("the unit reads %s, the user data writes %s", u.envFile, c.envPath)
			}
			if st, err := os.Stat(exe); err != nil || st.Mode()&0o111 == 0 {
				t.Fatalf("the unit's ExecStart %s is not an installed executable: %v", u.execStart[0], err)
			}
			data, err := os.ReadFile(envPath)
			if err != nil {
				t.Fatal(err)
			}
			env := envFile(t, strings.Split(string(data), "\n"), nil)
			prefix := map[string]string{"app.yaml": "APP_", "ingest.yaml": "INGEST_"}[c.file]
			if env[prefix+"KAFKA_BROKERS"] != brokers {
				t.Errorf("%sKAFKA_BROKERS = %q, want the brokers the MSK API returned", prefix, env[prefix+"KAFKA_BROKERS"])
			}
			if c.file != "app.yaml" {
				return
			}
			// Placeholders for what only an instance has: no Kafka (events
			// to stdout), loopback instead of :80, a spool under the root.
			env["APP_KAFKA_BROKERS"] = ""
			listen := freeAddr(t)
			env["APP_LISTEN"] = listen
			env["APP_ADMIN"] = freeAddr(t)
			env["APP_SPOOL_DIR"] = filepath.Join(root, "var/lib/originlens-app/spool")
			runApp(t, exe, u.execStart[1:], env, listen, env["APP_PROXY_PROTOCOL"], nil)
		})
	}
}

// userDataRoot runs user data in a temporary root: every path the scripts
// write is moved under it, and fake/ (first in PATH) holds the stand-ins
// for aws and systemctl, which log their calls to calls.
type userDataRoot struct {
	dir, fake, calls string
	rewrite          *strings.Replacer
}

// newUserDataRoot lays out a root. awsCases are further `case` arms of the
// aws stand-in ("s3 cp" copies tarball); extra are further absolute paths
// the user data writes.
func newUserDataRoot(t *testing.T, tarball, awsCases string, extra ...string) *userDataRoot {
	t.Helper()
	root := t.TempDir()
	pairs := []string{}
	for _, p := range append([]string{"/opt/originlens", "/etc/originlens", "/etc/systemd/system/", "/var/log/", "/tmp/originlens.tar.gz"}, extra...) {
		pairs = append(pairs, p, root+p)
	}
	for _, d := range []string{"etc/systemd/system", "var/log", "tmp", "fake"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &userDataRoot{dir: root, fake: filepath.Join(root, "fake"), calls: filepath.Join(root, "calls"), rewrite: strings.NewReplacer(pairs...)}
	writeScript(t, filepath.Join(r.fake, "aws"), `#!/bin/bash
echo "aws $*" >>"`+r.calls+`"
case "$1 $2" in
"s3 cp") cp "`+tarball+`" "${@: -1}" ;;
`+awsCases+`
*) echo "unexpected aws call: $*" >&2; exit 1 ;;
esac
`)
	writeScript(t, filepath.Join(r.fake, "systemctl"), "#!/bin/bash\necho \"systemctl $*\" >>\""+r.calls+"\"\n")
	return r
}

// run rewrites the user data's paths into the root, refuses it if a path
// is left that the root does not move, runs it with bash and returns the
// bootstrap log; a failing script fails the test.
func (r *userDataRoot) run(t *testing.T, bash, userData string) []byte {
	t.Helper()
	ud := r.rewrite.Replace(userData)
	// Never let the script touch the real system's directories.
	// (Environment file lines are values for the service, not paths
	// the script writes.)
	script := regexp.MustCompile(`(?m)^[A-Z][A-Z0-9_]*=.*$`).ReplaceAllString(strings.ReplaceAll(ud, r.dir, "ROOT"), "")
	if m := regexp.MustCompile(`(^|[\s=>"'])/(opt|etc|var|usr|tmp|root|home)/`).FindString(script); m != "" {
		t.Fatalf("the user data uses a path this test does not move under its root (%q); extend the rewrite:\n%s", m, ud)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-s")
	cmd.Stdin = strings.NewReader(ud)
	cmd.Env = []string{"PATH=" + r.fake + ":/usr/bin:/bin", "HOME=" + r.dir}
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(filepath.Join(r.dir, "var/log/originlens-bootstrap.log"))
	if err != nil {
		t.Fatalf("user data: %v\n%s\nbootstrap log:\n%s", err, out, log)
	}
	return log
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// writeRelease writes a gzipped tarball with one top directory holding
// the given files (name in the archive -> file on disk).
func writeRelease(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(gz)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			t.Fatal(err)
		}
		mode := int64(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: "originlens-test-linux-amd64/" + name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
}
