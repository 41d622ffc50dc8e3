package cloudformation_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/relay"
)

// TestUpstreamPort checks relay mode in the stack: with UpstreamPort empty
// the app answers clients itself (no relay variables, no drop-in); with a
// port the app relays on :80 to 127.0.0.1:PORT in transparent mode, the
// user data installs the systemd drop-in that sets up the routing, the
// variables are flags the real app binary knows, and the user data stays
// valid bash, for both proxy-protocol settings. main.yaml passes the
// parameter through, and port 80 (the app's own) is refused.
func TestUpstreamPort(t *testing.T) {
	a := load(t, "app.yaml")
	pattern, _ := dig(a.section("Parameters"), "UpstreamPort", "AllowedPattern").(string)
	re := regexp.MustCompile(pattern)
	for v, ok := range map[string]bool{"": true, "1": true, "8000": true, "65535": true, "0": false, "65536": false, "99999": false, "80a": false, " 22": false} {
		if re.MatchString(v) != ok {
			t.Errorf("UpstreamPort %q accepted = %v, want %v (pattern %s)", v, !ok, ok, pattern)
		}
	}
	if d := dig(a.section("Parameters"), "UpstreamPort", "Default"); d != "" {
		t.Errorf("UpstreamPort default %v, want empty (the app answers itself)", d)
	}
	if got := fmt.Sprint(dig(a.section("Rules"), "UpstreamIsNotTheAppPort", "Assertions")); !strings.Contains(got, "80") {
		t.Errorf("app.yaml has no rule refusing UpstreamPort 80: %s", got)
	}
	if p := dig(childStack(t, "app.yaml"), "Properties", "Parameters", "UpstreamPort"); refName(p) != "UpstreamPort" {
		t.Errorf("main.yaml passes UpstreamPort as %v, want !Ref UpstreamPort", p)
	}
	bin := buildCmd(t, "app")
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("app --help: %v\n%s", err, help)
	}
	const dropIn = "install -D -m 0644 /opt/originlens/systemd/originlens-app-relay.conf /etc/systemd/system/originlens-app.service.d/relay.conf"
	for _, port := range []string{"", "8000"} {
		for _, pp := range []string{"false", "true"} {
			t.Run(fmt.Sprintf("port=%s/ppv2=%s", port, pp), func(t *testing.T) {
				ud := renderUserData(t, a, "AppLaunchTemplate", map[string]string{"UpstreamPort": port, "ProxyProtocolV2": pp})
				cmd := exec.Command("bash", "-n")
				cmd.Stdin = strings.NewReader(ud)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("bash -n: %v\n%s", err, out)
				}
				env := envFile(t, heredoc(t, ud, "/etc/originlens/app.env"), map[string]string{"BROKERS": ""})
				checkEnvFlags(t, help, "APP_", env)
				if env["APP_LISTEN"] != ":80" {
					t.Errorf("APP_LISTEN = %q, want :80", env["APP_LISTEN"])
				}
				if port == "" {
					if _, ok := env["APP_UPSTREAM"]; ok || strings.Contains(ud, "relay.conf") {
						t.Errorf("UpstreamPort empty but the app relays (APP_UPSTREAM=%q) or the drop-in is installed", env["APP_UPSTREAM"])
					}
					return
				}
				if env["APP_UPSTREAM"] != "127.0.0.1:"+port || env["APP_UPSTREAM_MODE"] != "transparent" {
					t.Errorf("APP_UPSTREAM=%q APP_UPSTREAM_MODE=%q, want 127.0.0.1:%s transparent", env["APP_UPSTREAM"], env["APP_UPSTREAM_MODE"], port)
				}
				i, j := strings.Index(ud, dropIn), strings.Index(ud, "systemctl daemon-reload")
				if i < 0 || j < i {
					t.Errorf("the user data does not install the relay drop-in before systemctl daemon-reload:\n%s", ud)
				}
			})
		}
	}
}

// TestRelayDropIn checks deploy/systemd/originlens-app-relay.conf: it
// installs exactly the routing the app's start-up check asks for (as root,
// "+", before the app starts; removed after it stops), adds CAP_NET_ADMIN and
// nothing else to the app's capabilities, does not make the app root, ships
// in the tarball, and passes systemd-analyze verify together with the unit.
func TestRelayDropIn(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/originlens-app-relay.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var starts, stops []string
	caps := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch k {
		case "ExecStartPre", "ExecStopPost":
			if !strings.Contains(strings.SplitN(v, "/", 2)[0], "+") {
				t.Errorf("%s=%s does not run as root (+): ip rule needs CAP_NET_ADMIN", k, v)
			}
			cmd := strings.TrimLeft(v, "-+")
			cmd = strings.Replace(strings.TrimPrefix(cmd, "/usr/sbin/"), " replace ", " add ", 1)
			if k == "ExecStartPre" {
				starts = append(starts, cmd)
			} else {
				stops = append(stops, cmd)
			}
		case "AmbientCapabilities", "CapabilityBoundingSet":
			caps[k] = strings.Fields(v)
		case "User", "DynamicUser", "Group":
			t.Errorf("the drop-in sets %s=%s; the app keeps its transient user", k, v)
		}
	}
	for _, want := range strings.Split(relay.Routing, "\n") {
		found := false
		for _, s := range starts {
			found = found || s == want
		}
		if !found {
			t.Errorf("ExecStartPre does not run %q (relay.Routing); has %q", want, starts)
		}
		if strings.Contains(want, " rule add ") {
			del := strings.Replace(want, " rule add ", " rule del ", 1)
			found = false
			for _, s := range stops {
				found = found || s == del
			}
			if !found {
				t.Errorf("ExecStopPost does not remove the rule: want %q in %q", del, stops)
			}
		}
	}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if fmt.Sprint(caps[k]) != "[CAP_NET_ADMIN]" {
			t.Errorf("%s = %v, want CAP_NET_ADMIN only (added to the unit's CAP_NET_BIND_SERVICE)", k, caps[k])
		}
	}
	unitData, _ := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"))
	if !strings.Contains(string(unitData), "\nDynamicUser=yes\n") {
		t.Error("originlens-app.service no longer runs as a transient user")
	}
	pkg, _ := os.ReadFile(filepath.Join(repoRoot, "scripts/package.sh"))
	if !strings.Contains(string(pkg), `deploy/systemd/*.conf "$root/systemd/"`) {
		t.Error("scripts/package.sh does not ship deploy/systemd/*.conf (the user data installs systemd/originlens-app-relay.conf)")
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the drop-in is unverified")
	}
	u := parseUnit(t, filepath.Join(repoRoot, "deploy/systemd/originlens-app.service"))
	envPath, _ := filepath.Abs(filepath.Join(repoRoot, "deploy/systemd/app.env"))
	dir := t.TempDir()
	s := strings.Replace(string(unitData), "ExecStart="+u.execStart[0], "ExecStart=/bin/true", 1)
	s = strings.Replace(s, "EnvironmentFile="+u.envFile, "EnvironmentFile="+envPath, 1)
	os.WriteFile(filepath.Join(dir, "originlens-app.service"), []byte(s), 0o644)
	os.MkdirAll(filepath.Join(dir, "originlens-app.service.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "originlens-app.service.d", "relay.conf"), data, 0o644)
	out, err := exec.Command(sa, "verify", filepath.Join(dir, "originlens-app.service")).CombinedOutput()
	if err != nil || strings.Contains(string(out), "relay.conf") || strings.Contains(string(out), "originlens-app.service:") {
		t.Errorf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
	}
}

// TestRelayDropInIPv6Disabled runs the drop-in's ExecStartPre commands in
// a network namespace with IPv6 disabled (a common hardening): a command
// that fails there must carry "-" (systemd ignores its failure), or the
// unit never starts although the app relays IPv4 without IPv6 (its
// start-up check skips a family the host lacks). `ip -6 route add local
// ::/0 dev lo` fails with "IPv6 is disabled on nexthop device". Root only.
func TestRelayDropInIPv6Disabled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip (iproute2) not found")
	}
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/originlens-app-relay.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("olv6off%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns unavailable: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run := func(args ...string) ([]byte, error) {
		return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	}
	if out, err := run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		t.Fatalf("disabling IPv6: %v\n%s", err, out)
	}
	run("ip", "link", "set", "lo", "up")
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStartPre=")
		if !ok {
			continue
		}
		n++
		prefix, cmd, _ := strings.Cut(v, "/")
		out, err := run(strings.Fields("/" + cmd)...)
		if err != nil && !strings.Contains(prefix, "-") {
			t.Errorf("ExecStartPre=%s fails with IPv6 disabled and has no \"-\": the unit would not start\n%v: %s", v, err, out)
		}
	}
	if n == 0 {
		t.Fatal("no ExecStartPre in the drop-in")
	}
}
