package compose_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// file is the subset of a Compose file the checks read. Ports are either
// short strings ("127.0.0.1:9200:9200/tcp") or the long form.
type file struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Ports       []yaml.Node       `yaml:"ports"`
		Environment map[string]string `yaml:"environment"`
		NetworkMode string            `yaml:"network_mode"`
	} `yaml:"services"`
}

// hostIP returns the host address a published port binds, "" for all
// interfaces.
func hostIP(t *testing.T, n yaml.Node) string {
	t.Helper()
	switch n.Kind {
	case yaml.ScalarNode:
		// [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO], or a bare port.
		parts := strings.Split(n.Value, ":")
		if len(parts) < 3 {
			return ""
		}
		return strings.Trim(strings.Join(parts[:len(parts)-2], ":"), "[]")
	case yaml.MappingNode:
		var p struct {
			HostIP string `yaml:"host_ip"`
		}
		if err := n.Decode(&p); err != nil {
			t.Fatalf("port %v: %v", n.Value, err)
		}
		return p.HostIP
	}
	t.Fatalf("unexpected port node kind %v", n.Kind)
	return ""
}

// check asserts the services are there, the security plugin is off and
// every published port binds loopback only.
func check(t *testing.T, what string, b []byte) {
	t.Helper()
	var f file
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, s := range []string{"kafka", "opensearch", "dashboards"} {
		if _, ok := f.Services[s]; !ok {
			t.Errorf("%s: no service %q", what, s)
		}
	}
	published := 0
	for name, s := range f.Services {
		if s.NetworkMode == "host" {
			t.Errorf("%s: service %s uses the host network", what, name)
		}
		for _, p := range s.Ports {
			published++
			h := hostIP(t, p)
			a, err := netip.ParseAddr(h)
			if err != nil || !a.IsLoopback() {
				t.Errorf("%s: service %s publishes %q on %q, want a loopback address", what, name, p.Value, h)
			}
		}
	}
	if published != 3 {
		t.Errorf("%s: %d published ports, want 3 (9092, 9200, 5601)", what, published)
	}
	if v := f.Services["opensearch"].Environment["DISABLE_SECURITY_PLUGIN"]; v != "true" {
		t.Errorf("%s: opensearch DISABLE_SECURITY_PLUGIN = %q, want true", what, v)
	}
	if v := f.Services["dashboards"].Environment["DISABLE_SECURITY_DASHBOARDS_PLUGIN"]; v != "true" {
		t.Errorf("%s: dashboards DISABLE_SECURITY_DASHBOARDS_PLUGIN = %q, want true", what, v)
	}
	if v := f.Services["kafka"].Environment["KAFKA_PROCESS_ROLES"]; v != "broker,controller" {
		t.Errorf("%s: kafka KAFKA_PROCESS_ROLES = %q, want broker,controller (KRaft, one node)", what, v)
	}
}

// TestComposeFile checks the file as written.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, "compose.yaml", b)
}

// TestComposeConfig has docker-compose parse and normalize the file, as
// `docker compose up` would, and checks its view.
func TestComposeConfig(t *testing.T) {
	var bin string
	var args []string
	if p, err := exec.LookPath("docker-compose"); err == nil {
		bin = p
	} else if p, err := exec.LookPath("docker"); err == nil && exec.Command(p, "compose", "version").Run() == nil {
		bin, args = p, []string{"compose"}
	} else {
		t.Skip("skipping: neither docker-compose (Debian package docker-compose) nor docker compose is installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "-f", "compose.yaml", "config")...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s config: %v\n%s", bin, err, stderr.String())
	}
	check(t, "docker-compose config", out)
}
