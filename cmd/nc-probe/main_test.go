package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/syncbuf"
)

// The middle boxes of the tests, all on loopback:
//   - probes dial from 127.0.0.1 (untrusted: a direct client);
//   - socat relays from 127.0.0.9 (rewrites the source, like an NLB
//     without client IP preservation);
//   - haproxy and `--bind 127.0.0.5` probes come from 127.0.0.5, the one
//     trusted PROXY sender.
const (
	trustedSrc = "127.0.0.5"
	relaySrc   = "127.0.0.9"
)

type syncBuf = syncbuf.Buffer

func noEnv(string) string { return "" }

// probeRun runs nc-probe with args in-process and returns its exit code,
// stdout and stderr.
func probeRun(tb testing.TB, args ...string) (int, string, string) {
	tb.Helper()
	cfg, err := parseArgs(args, noEnv, &bytes.Buffer{})
	if err != nil {
		tb.Fatalf("parseArgs(%q): %v", args, err)
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, cfg, &out, &errb)
	return code, out.String(), errb.String()
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitDial waits until addr accepts connections.
func waitDial(tb testing.TB, addr string, what string, logs fmt.Stringer) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s on %s never accepted connections: %v\n%s", what, addr, err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startListen runs `nc-probe listen` in-process in trusted mode and
// returns its address and output.
func startListen(tb testing.TB) (string, *syncBuf) {
	tb.Helper()
	return startListenArgs(tb, "--proxy-protocol", "trusted", "--trusted-proxies", trustedSrc+"/32")
}

// startListenArgs runs `nc-probe listen` in-process with args on
// 127.0.0.1:0 and returns its address and output.
func startListenArgs(tb testing.TB, args ...string) (string, *syncBuf) {
	tb.Helper()
	cfg, err := parseArgs(append(append([]string{"listen"}, args...), "127.0.0.1:0"), noEnv, &bytes.Buffer{})
	if err != nil {
		tb.Fatal(err)
	}
	out := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, cfg, out, out) }()
	tb.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			tb.Errorf("nc-probe listen exited %d: %s", code, out)
		}
	})
	re := regexp.MustCompile(`listening on (\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1], out
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nc-probe listen did not start: %s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	appOnce sync.Once
	appBin  string
	appErr  error
	appOut  []byte
)

// startApp builds cmd/app (once) and runs it in trusted mode on a free
// port. It skips, printing the build error, only when the app does not
// build (it is written in parallel with this tool).
func startApp(tb testing.TB) (string, *syncBuf) {
	tb.Helper()
	return startAppArgs(tb, "--proxy-protocol", "trusted", "--trusted-proxies", trustedSrc+"/32")
}

// startAppArgs is startApp with the app's PROXY protocol flags in args.
func startAppArgs(tb testing.TB, args ...string) (string, *syncBuf) {
	tb.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(tb))
	logs, _ := runApp(tb, addr, args...)
	return addr, logs
}

// runApp runs the app on addr with args until the test ends or stop is
// called, and waits until it accepts connections. stop interrupts it and
// waits for it to exit; it may be called more than once.
func runApp(tb testing.TB, addr string, args ...string) (logs *syncBuf, stop func()) {
	tb.Helper()
	appOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nc-probe-app")
		if err != nil {
			appErr = err
			return
		}
		appBin = filepath.Join(dir, "app")
		cmd := exec.Command("go", "build", "-o", appBin, "github.com/originlens/originlens/cmd/app")
		appOut, appErr = cmd.CombinedOutput()
	})
	if appErr != nil {
		tb.Skipf("go build ./cmd/app failed, skipping the tests against the real app: %v\n%s", appErr, appOut)
	}
	logs = &syncBuf{}
	cmd := exec.Command(appBin, append([]string{"--listen", addr, "--admin", "127.0.0.1:0", "--drain-timeout", "2s"}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting the app: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	tb.Cleanup(stop)
	waitDial(tb, addr, "the app", logs)
	return logs, stop
}

// startSocat relays a free port on 127.0.0.1 to target from relaySrc.
func startSocat(tb testing.TB, target string) string {
	tb.Helper()
	return startSocatFrom(tb, "127.0.0.1", target, relaySrc)
}

// startSocatFrom relays a free port on listenIP to target, dialing from src.
func startSocatFrom(tb testing.TB, listenIP, target, src string) string {
	tb.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		tb.Skip("socat not installed (.ci/run installs it): skipping the source-rewriting relay test")
	}
	port := freePort(tb)
	logs := &syncBuf{}
	cmd := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=%s,fork,reuseaddr", port, listenIP),
		fmt.Sprintf("TCP:%s,bind=%s", target, src))
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its fork children go with it
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting socat: %v", err)
	}
	tb.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	addr := net.JoinHostPort(listenIP, fmt.Sprint(port))
	waitDial(tb, addr, "socat", logs)
	return addr
}

// startHAProxy forwards a free port to target with send-proxy-v2, from
// trustedSrc.
func startHAProxy(tb testing.TB, target string) string {
	tb.Helper()
	return startHAProxyWith(tb, target, "send-proxy-v2", trustedSrc)
}

// startHAProxyWith forwards a free port to target with the server option
// send (send-proxy or send-proxy-v2), dialing from src.
func startHAProxyWith(tb testing.TB, target, send, src string) string {
	tb.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		tb.Skip("haproxy not installed (.ci/run installs it): skipping the send-proxy-v2 test")
	}
	port := freePort(tb)
	conf := fmt.Sprintf(`global
	maxconn 64
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend fe
	bind 127.0.0.1:%d
	default_backend be
backend be
	server app %s %s source %s
`, port, target, send, src)
	path := filepath.Join(tb.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	logs := &syncBuf{}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting haproxy: %v", err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitDial(tb, addr, "haproxy", logs)
	return addr
}

type jsonOut struct {
	Target    string `json:"target"`
	ServerSaw string `json:"server_saw"`
	Expected  string `json:"expected"`
	Via       string `json:"via"`
	Decision  string `json:"decision"`
	Preserved bool   `json:"preserved"`
	Attempts  int    `json:"attempts"`
	Failures  int    `json:"failures"`
	ExitCode  int    `json:"exit_code"`
}

// TestMiddleBoxes runs the blog's test with nc-probe against nc-probe
// listen and against the real app, directly and through real middle
// boxes.
func TestMiddleBoxes(t *testing.T) {
	servers := []struct {
		name  string
		start func(testing.TB) (string, *syncBuf)
	}{{"listen", startListen}, {"app", startApp}}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, logs := srv.start(t)
			t.Run("Direct", func(t *testing.T) {
				code, out, errb := probeRun(t, "--echo", "2", "-n", "3", "-i", "0", addr)
				if code != exitPreserved || !strings.Contains(out, "PRESERVED: the server saw 127.0.0.1") {
					t.Errorf("direct probe: exit %d, want 0; stdout:\n%s\nstderr: %s\nserver: %s", code, out, errb, logs)
				}
			})
			t.Run("SourceRewritingRelay", func(t *testing.T) {
				relay := startSocat(t, addr)
				code, out, errb := probeRun(t, relay)
				if code != exitNotPreserved || !strings.Contains(out, "the server saw "+relaySrc+" instead of 127.0.0.1") {
					t.Errorf("probe through socat: exit %d, want 1 naming %s; stdout:\n%s\nstderr: %s", code, relaySrc, out, errb)
				}
			})
			t.Run("HAProxySendProxyV2", func(t *testing.T) {
				hp := startHAProxy(t, addr)
				code, out, errb := probeRun(t, "--json", hp)
				var j jsonOut
				if err := json.Unmarshal([]byte(out), &j); err != nil {
					t.Fatalf("--json output %q: %v", out, err)
				}
				if code != exitPreserved || !j.Preserved || j.Via != "proxy-v2" || j.ServerSaw != "127.0.0.1" {
					t.Errorf("probe through haproxy send-proxy-v2: exit %d, %+v; want 0, preserved via proxy-v2\nstderr: %s\nserver: %s", code, j, errb, logs)
				}
			})
			for _, v := range []string{"v1", "v2"} {
				t.Run("ProxyHeader"+v, func(t *testing.T) {
					code, out, errb := probeRun(t, "--json", "--bind", trustedSrc, "--proxy", v, "--proxy-src", "203.0.113.7:5555", addr)
					var j jsonOut
					if err := json.Unmarshal([]byte(out), &j); err != nil {
						t.Fatalf("--json output %q: %v", out, err)
					}
					if code != exitPreserved || j.ServerSaw != "203.0.113.7" || j.Expected != "203.0.113.7" || j.Via != "proxy-"+v {
						t.Errorf("--proxy %s from trusted %s: exit %d, %+v; want 0 and 203.0.113.7 via proxy-%s\nstderr: %s", v, trustedSrc, code, j, v, errb)
					}
				})
			}
			t.Run("ManyProxySources", func(t *testing.T) {
				code, out, errb := probeRun(t, "--json", "-n", "4", "-c", "2", "-i", "0", "--bind", trustedSrc, "--proxy", "v2",
					"--proxy-src", "203.0.113.7:5555,198.51.100.20:4000", addr)
				var j struct {
					All       []string `json:"server_saw_all"`
					Preserved bool     `json:"preserved"`
					Attempts  int      `json:"attempts"`
				}
				if err := json.Unmarshal([]byte(out), &j); err != nil {
					t.Fatalf("--json output %q: %v", out, err)
				}
				if code != exitPreserved || !j.Preserved || j.Attempts != 4 || len(j.All) != 2 {
					t.Errorf("two --proxy-src in turn: exit %d, %+v; want 0, preserved, 4 attempts, 2 addresses seen\nstderr: %s", code, j, errb)
				}
			})
			t.Run("SpoofedHeaderRefused", func(t *testing.T) {
				code, out, _ := probeRun(t, "--bind", "127.0.0.1", "--proxy", "v2", "--proxy-src", "203.0.113.7:5555", addr)
				if code != exitFailure || !strings.Contains(out, "FAILED") {
					t.Errorf("--proxy from untrusted 127.0.0.1: exit %d, want 2 (refused); stdout:\n%s", code, out)
				}
			})
		})
	}
}

func TestClosedPort(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	code, out, _ := probeRun(t, "--timeout", "2s", addr)
	if code != exitFailure || !strings.Contains(out, "FAILED: "+addr+": connect:") || !strings.Contains(out, "refused") {
		t.Errorf("probe of a closed port: exit %d, want 2 with a connect explanation; stdout:\n%s", code, out)
	}
	code, out, errb := probeRun(t, "--json", "--timeout", "2s", addr)
	var j map[string]any
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != exitFailure || j["verdict"] != "no-report" || j["loss_pct"] != 100.0 {
		t.Errorf("--json probe of a closed port: exit %d, %v (err %v); want 2, no-report, 100%% loss", code, out, err)
	}
	if !strings.Contains(errb, "connect") {
		t.Errorf("--json probe of a closed port: stderr %q, want the one-line explanation", errb)
	}
}

// TestJSONShape checks every documented key and its type.
func TestJSONShape(t *testing.T) {
	addr, _ := startListen(t)
	code, out, _ := probeRun(t, "--json", "--echo", "2", "-n", "4", "-c", "2", "-i", "0", addr)
	if code != exitPreserved {
		t.Fatalf("exit %d, want 0: %s", code, out)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	strs := []string{"target", "server_saw", "expected", "via", "country", "decision", "verdict", "explanation"}
	for _, k := range strs {
		if _, ok := j[k].(string); !ok {
			t.Errorf("key %s = %#v, want a string", k, j[k])
		}
	}
	for k, want := range map[string]float64{"attempts": 4, "failures": 0, "loss_pct": 0, "exit_code": 0} {
		if j[k] != want {
			t.Errorf("key %s = %#v, want %v", k, j[k], want)
		}
	}
	if j["preserved"] != true || j["target"] != addr || j["server_saw"] != "127.0.0.1" || j["decision"] != "serve" {
		t.Errorf("preserved/target/server_saw/decision = %v %v %v %v", j["preserved"], j["target"], j["server_saw"], j["decision"])
	}
	for k, n := range map[string]float64{"connect_ms": 4, "report_ms": 4, "echo_ms": 8} {
		s, ok := j[k].(map[string]any)
		if !ok {
			t.Errorf("key %s = %#v, want an object", k, j[k])
			continue
		}
		for _, f := range []string{"min", "p50", "p90", "p99", "max", "jitter"} {
			if v, ok := s[f].(float64); !ok || v < 0 {
				t.Errorf("%s.%s = %#v, want a number >= 0", k, f, s[f])
			}
		}
		if s["count"] != n || s["min"].(float64) > s["p50"].(float64) || s["p50"].(float64) > s["max"].(float64) {
			t.Errorf("%s = %v, want count %v and min <= p50 <= max", k, s, n)
		}
	}
}

func TestCompare(t *testing.T) {
	addr, _ := startListen(t)
	relay := startSocat(t, addr)
	code, out, errb := probeRun(t, "--compare", relay, "-n", "3", "-i", "0", addr)
	if code != exitNotPreserved {
		t.Errorf("--compare direct vs relay: exit %d, want 1 (B not preserved)", code)
	}
	for _, want := range []string{"A " + addr, "B " + relay, "B/A", "report p50 ms", relaySrc, "not-preserved", "preserved"} {
		if !strings.Contains(out, want) {
			t.Errorf("--compare output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errb, "collide") {
		t.Errorf("--compare stderr %q, want the GA collision warning", errb)
	}
	// the diagnosis per path: a row of the table, one sentence each on stderr
	if !regexp.MustCompile(`(?m)^diagnosis\s+preserved\s+source-nat\s*$`).MatchString(out) ||
		!strings.Contains(errb, "A "+addr+": preserved: ") || !strings.Contains(errb, "B "+relay+": source-nat: the server saw "+relaySrc) {
		t.Errorf("--compare: want the diagnosis per path in the table and on stderr\nstdout:\n%s\nstderr:\n%s", out, errb)
	}
	code, jout, _ := probeRun(t, "--json", "--compare", relay, "-n", "2", "-i", "0", addr)
	var j struct {
		Diagnosis string `json:"diagnosis"`
		Compare   struct {
			Diagnosis string `json:"diagnosis"`
		} `json:"compare"`
	}
	if err := json.Unmarshal([]byte(jout), &j); err != nil || code != exitNotPreserved || j.Diagnosis != "preserved" || j.Compare.Diagnosis != "source-nat" {
		t.Errorf("--json --compare: exit %d, %+v (%v); want 1, preserved and compare.diagnosis source-nat\n%s", code, j, err, jout)
	}
	// the ratio column holds a number on the report p50 row
	if !regexp.MustCompile(`report p50 ms\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d\d`).MatchString(out) {
		t.Errorf("--compare output has no ratio on the report p50 row:\n%s", out)
	}
}

func TestParseArgs(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string
	}{
		{"Interspersed", []string{"127.0.0.1:80", "-n", "5", "--json"}, nil,
			func(c config) bool { return c.probe.Count == 5 && c.json && c.probe.Target == "127.0.0.1:80" }, ""},
		{"EnvFallback", []string{"h:1"}, map[string]string{"NC_PROBE_COUNT": "7", "NC_PROBE_EXPECT_IP": "::ffff:203.0.113.7"},
			func(c config) bool { return c.probe.Count == 7 && c.probe.Expect.String() == "203.0.113.7" }, ""},
		{"FlagBeatsEnvThroughAlias", []string{"-n", "2", "h:1"}, map[string]string{"NC_PROBE_COUNT": "7"},
			func(c config) bool { return c.probe.Count == 2 }, ""},
		{"TargetFromEnv", nil, map[string]string{"NC_PROBE_TARGET": "h:2"},
			func(c config) bool { return c.probe.Target == "h:2" }, ""},
		{"ProxyV2", []string{"--proxy", "v2", "--proxy-src", "203.0.113.7:5555", "h:1"}, nil,
			func(c config) bool {
				return c.probe.Options.Proxy.Version == 2 && c.probe.Options.Proxy.Src.Port() == 5555
			}, ""},
		{"ListenEnv", []string{"listen", ":0"}, map[string]string{"NC_PROBE_PROXY_PROTOCOL": "required"},
			func(c config) bool { return c.listen && c.origin.Mode.String() == "required" && c.listenAddr == ":0" }, ""},
		{"NoTarget", nil, nil, nil, "missing HOST:PORT"},
		{"BadTarget", []string{"nohostport"}, nil, nil, "not HOST:PORT"},
		{"BadFlag", []string{"--nope", "h:1"}, nil, nil, "unknown flag --nope (see --help for the flags)"},
		{"BadEnv", []string{"h:1"}, map[string]string{"NC_PROBE_COUNT": "x"}, nil, "NC_PROBE_COUNT=x (--count): want a whole number, e.g. 10"},
		{"BadExpect", []string{"--expect-ip", "1.2.3", "h:1"}, nil, nil, "--expect-ip"},
		{"ProxyNoSrc", []string{"--proxy", "v2", "h:1"}, nil, nil, "--proxy-src"},
		{"ProxyBadVersion", []string{"--proxy", "v3", "--proxy-src", "1.2.3.4:5", "h:1"}, nil, nil, "v1 or v2"},
		{"SrcWithoutProxy", []string{"--proxy-src", "1.2.3.4:5", "h:1"}, nil, nil, "need --proxy"},
		{"HTTPLine", []string{"--line", "GET / HTTP/1.1", "h:1"}, nil, nil, "HTTP"},
		{"ZeroConcurrency", []string{"-c", "0", "h:1"}, nil, nil, "concurrency"},
		{"FamilyBoth", []string{"--family", "both", "h:1"}, nil,
			func(c config) bool { return len(c.probe.Families) == 2 && c.probe.Options.Family == 0 }, ""},
		{"FamilySix", []string{"h:1"}, map[string]string{"NC_PROBE_FAMILY": "6"},
			func(c config) bool { return c.probe.Options.Family == 6 && len(c.probe.Families) == 0 }, ""},
		{"WatchDefaults", []string{"--watch", "h:1"}, nil,
			func(c config) bool { return c.watch && c.probe.Count == 0 && c.probe.Interval == time.Second }, ""},
		{"WatchCountInterval", []string{"--watch", "-n", "5", "-i", "200ms", "h:1"}, nil,
			func(c config) bool { return c.probe.Count == 5 && c.probe.Interval == 200*time.Millisecond }, ""},
		{"FormatCSV", []string{"--format", "csv", "h:1"}, nil, func(c config) bool { return c.csv && !c.json }, ""},
		{"FormatJSON", []string{"--format", "json", "h:1"}, nil, func(c config) bool { return c.json && !c.csv }, ""},
		{"BadFamily", []string{"--family", "5", "h:1"}, nil, nil, `--family must be 4, 6 or both, not "5" (e.g. --family both)`},
		{"BadFormat", []string{"--format", "xml", "h:1"}, nil, nil, `--format must be text, json or csv, not "xml" (e.g. --format csv)`},
		{"FamilyBothAddress", []string{"--family", "both", "127.0.0.1:80"}, nil, nil, "--family both needs a host name"},
		{"FamilyBothCompare", []string{"--family", "both", "--compare", "h:2", "h:1"}, nil, nil, "exclude each other"},
		{"JSONAndCSV", []string{"--json", "--format", "csv", "h:1"}, nil, nil, "exclude each other"},
		{"ListenBadMode", []string{"listen", "--proxy-protocol", "maybe", ":1"}, nil, nil, "--proxy-protocol"},
		{"ListenTrustedWithoutPrefixes", []string{"listen", "--proxy-protocol", "trusted", ":1"}, nil, nil, "trusted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseArgs(tt.args, env(tt.env), &bytes.Buffer{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("parseArgs(%q) error = %v, want one line containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(cfg) {
				t.Errorf("parseArgs(%q) = %+v, %v", tt.args, cfg, err)
			}
		})
	}
}

// TestInterrupt: Ctrl-C during an endless run prints the summary so far
// and exits by what was seen.
func TestInterrupt(t *testing.T) {
	addr, lout := startListen(t)
	cfg, err := parseArgs([]string{"-n", "0", "-i", "5ms", addr}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	// Interrupt once the listener has seen a second connection: one at a
	// time, so the first attempt is over, however busy the machine. The
	// 30 s bound is a failure bound: the summary then shows no report.
	go func() {
		defer cancel2()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx2.Err() == nil; time.Sleep(5 * time.Millisecond) {
			if strings.Count(lout.String(), " conn=") >= 2 {
				return
			}
		}
	}()
	code := run(ctx2, cfg, &out, &errb)
	if code != exitPreserved || !strings.Contains(out.String(), "interrupted after") || !strings.Contains(out.String(), "PRESERVED") {
		t.Errorf("interrupted run: exit %d, want 0 with the summary so far; stdout:\n%s", code, out.String())
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := &progress{w: &b, total: 3}
	p.update(probe.Attempt{Timings: probe.Timings{Report: 1500 * time.Microsecond}})
	p.update(probe.Attempt{Err: errors.New("x")})
	p.update(probe.Attempt{Timings: probe.Timings{Report: 2 * time.Millisecond}})
	if s := b.String(); !strings.Contains(s, "1/3 attempts  0 failed  last report 1.500 ms") || !strings.HasSuffix(s, "3/3 attempts  1 failed  last report 2.000 ms  (Ctrl-C stops with a summary)") {
		t.Errorf("progress wrote %q, want the first and the final state", s)
	}
	p.clear()
	if !strings.HasSuffix(b.String(), "\r\033[K") {
		t.Error("clear() did not erase the line")
	}
	if isTerminal(&b) {
		t.Error("isTerminal(buffer) = true")
	}
}

// TestBehindNAT: in a network namespace of its own, the probe dials from a
// private address (10.0.0.1) and a relay forwards from a public-looking
// address (198.51.100.2), as a NAT gateway does. The probe cannot know its
// public address: it exits 3 and asks for --expect-ip; told the gateway's
// address it exits 0, told another one it exits 1.
func TestBehindNAT(t *testing.T) {
	const envNetns = "ORIGINLENS_TEST_NETNS"
	if os.Getenv(envNetns) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root for a network namespace (unshare -n)")
		}
		for _, tool := range []string{"unshare", "ip", "socat"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s not installed: skipping the behind-NAT test", tool)
			}
		}
		cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run", "^TestBehindNAT$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), envNetns+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestBehindNAT") {
			t.Fatalf("behind-NAT test in a new network namespace: %v\n%s", err, out)
		}
		return
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "10.0.0.1/32", "dev", "lo"},
		{"addr", "add", "198.51.100.2/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	addr, _ := startListen(t)
	nat := startSocatFrom(t, "10.0.0.1", addr, "198.51.100.2")

	code, out, _ := probeRun(t, "--bind", "10.0.0.1", nat)
	if code != exitUnknown || !strings.Contains(out, "private (behind NAT)") || !strings.Contains(out, "--expect-ip") {
		t.Errorf("probe from 10.0.0.1 through a NAT-like relay: exit %d, want 3 asking for --expect-ip; stdout:\n%s", code, out)
	}
	if code, out, _ := probeRun(t, "--bind", "10.0.0.1", "--expect-ip", "198.51.100.2", nat); code != exitPreserved {
		t.Errorf("with --expect-ip 198.51.100.2: exit %d, want 0; stdout:\n%s", code, out)
	}
	if code, out, _ := probeRun(t, "--bind", "10.0.0.1", "--expect-ip", "203.0.113.7", nat); code != exitNotPreserved {
		t.Errorf("with --expect-ip 203.0.113.7: exit %d, want 1; stdout:\n%s", code, out)
	}
}
