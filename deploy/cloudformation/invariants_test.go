package cloudformation_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Placeholder values for the parameters that have no default.
var requiredParams = map[string]map[string]string{
	"main.yaml": {
		"ArtifactBucket": "originlens-artifacts-test",
		"ArtifactKey":    "originlens/originlens-test-linux-amd64.tar.gz",
	},
	"app.yaml": {
		"ArtifactBucket":           "originlens-artifacts-test",
		"ArtifactKey":              "originlens/originlens-test-linux-amd64.tar.gz",
		"KafkaClusterArn":          "arn:aws:kafka:us-east-2:123456789012:cluster/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2",
		"KafkaTopicArn":            "arn:aws:kafka:us-east-2:123456789012:topic/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2/conn-events",
		"KafkaClientSecurityGroup": "sg-0123456789abcdef0",
		"VpcId":                    "vpc-0123456789abcdef0",
		"PrivateSubnets":           "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
	},
	"ingest.yaml": {
		"ArtifactBucket":                "originlens-artifacts-test",
		"ArtifactKey":                   "originlens/originlens-test-linux-amd64.tar.gz",
		"KafkaClusterArn":               "arn:aws:kafka:us-east-2:123456789012:cluster/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2",
		"KafkaTopicArn":                 "arn:aws:kafka:us-east-2:123456789012:topic/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2/conn-events",
		"KafkaDeadLetterTopicArn":       "arn:aws:kafka:us-east-2:123456789012:topic/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2/conn-events-dlq",
		"KafkaGroupArn":                 "arn:aws:kafka:us-east-2:123456789012:group/originlens-test-events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-2/originlens-ingest",
		"KafkaClientSecurityGroup":      "sg-0123456789abcdef0",
		"OpenSearchClientSecurityGroup": "sg-0123456789abcdef1",
		"OpenSearchDomainArn":           "arn:aws:es:us-east-2:123456789012:domain/originlens",
		"OpenSearchEndpoint":            "vpc-originlens-abcdefghijklmnopqrstuvwxyz.us-east-2.es.amazonaws.com",
		"VpcId":                         "vpc-0123456789abcdef0",
		"PrivateSubnets":                "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
	},
}

// withRequired returns the template's placeholder parameters plus extra.
func withRequired(name string, extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range requiredParams[name] {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// refName returns X of {"Ref": X}, or of its evaluated placeholder "{{Ref X}}".
func refName(v any) string {
	if s, ok := v.(string); ok {
		if x, ok := strings.CutPrefix(s, "{{Ref "); ok {
			return strings.TrimSuffix(x, "}}")
		}
		return ""
	}
	s, _ := dig(v, "Ref").(string)
	return s
}

func getAtt(v any) (string, string) {
	l, ok := dig(v, "Fn::GetAtt").([]any)
	if !ok || len(l) != 2 {
		return "", ""
	}
	return fmt.Sprint(l[0]), fmt.Sprint(l[1])
}

// childStack returns the main.yaml resource that nests the given template.
func childStack(tb testing.TB, child string) map[string]any {
	tb.Helper()
	m := load(tb, "main.yaml")
	for _, name := range m.ofType("AWS::CloudFormation::Stack") {
		r := m.resource(tb, name)
		if dig(r, "Properties", "TemplateURL") == child {
			return r
		}
	}
	tb.Fatalf("main.yaml nests no %s", child)
	return nil
}

// source follows a value in a nested template to the resource that defines
// it: a Ref to a resource of the same template, or a Ref to a parameter
// that main.yaml fills from another nested stack's output, which in turn
// is a Ref or GetAtt of that stack's resource.
func source(tb testing.TB, t *tmpl, v any) (*tmpl, string) {
	tb.Helper()
	name := refName(v)
	if name == "" {
		if res, _ := getAtt(v); res != "" {
			return t, res
		}
		tb.Fatalf("%s: %v is neither a Ref nor a GetAtt", t.name, v)
	}
	if _, ok := t.section("Resources")[name]; ok {
		return t, name
	}
	if _, ok := t.section("Parameters")[name]; !ok || t.name == "main.yaml" {
		tb.Fatalf("%s: cannot follow %q", t.name, name)
	}
	passed := dig(childStack(tb, t.name), "Properties", "Parameters", name)
	stack, attr := getAtt(passed)
	out, ok := strings.CutPrefix(attr, "Outputs.")
	if !ok {
		tb.Fatalf("main.yaml passes %s to %s as %v, not a nested stack output", name, t.name, passed)
	}
	childURL, _ := dig(load(tb, "main.yaml").resource(tb, stack), "Properties", "TemplateURL").(string)
	child := load(tb, childURL)
	value := dig(child.section("Outputs"), out, "Value")
	if value == nil {
		tb.Fatalf("%s has no output %s", child.name, out)
	}
	return source(tb, child, value)
}

// subnetCount is the number of private subnets the network stack creates
// (the PrivateSubnets output is a Join of Refs).
func subnetCount(tb testing.TB) int {
	tb.Helper()
	n := load(tb, "network.yaml")
	l, ok := dig(n.section("Outputs"), "PrivateSubnets", "Value", "Fn::Join", "1").([]any)
	if !ok {
		tb.Fatal("network.yaml: PrivateSubnets output is not a Join of a list")
	}
	for _, v := range l {
		r := refName(v)
		if dig(n.resource(tb, r), "Type") != "AWS::EC2::Subnet" {
			tb.Fatalf("network.yaml: PrivateSubnets joins %v, not a subnet", v)
		}
	}
	return len(l)
}

// TestNestedStacks checks that main.yaml passes every required parameter of
// each nested template and nothing else, with compatible allowed values,
// and reads only outputs that exist.
func TestNestedStacks(t *testing.T) {
	m := load(t, "main.yaml")
	stacks := m.ofType("AWS::CloudFormation::Stack")
	var nested []string
	for _, name := range stacks {
		r := m.resource(t, name)
		url, _ := dig(r, "Properties", "TemplateURL").(string)
		if !slices.Contains(templateFiles, url) || url == "main.yaml" {
			t.Errorf("stack %s: TemplateURL %q is not a template of this directory", name, url)
			continue
		}
		nested = append(nested, url)
		child := load(t, url)
		passed, _ := dig(r, "Properties", "Parameters").(map[string]any)
		for p := range passed {
			if _, ok := child.section("Parameters")[p]; !ok {
				t.Errorf("stack %s passes %s, which %s does not declare", name, p, url)
			}
		}
		for p, decl := range child.section("Parameters") {
			if _, ok := passed[p]; !ok && dig(decl, "Default") == nil {
				t.Errorf("stack %s does not pass %s, which %s requires", name, p, url)
			}
			// A parent parameter passed straight through must not allow
			// values the child rejects.
			if parent := refName(passed[p]); parent != "" {
				childAllowed := allowedValues(child, p)
				for _, v := range allowedValues(m, parent) {
					if len(childAllowed) > 0 && !slices.Contains(childAllowed, v) {
						t.Errorf("main.yaml %s allows %q, %s %s does not", parent, v, url, p)
					}
				}
			}
		}
	}
	slices.Sort(nested)
	want := []string{"analytics.yaml", "app.yaml", "ingest.yaml", "network.yaml"}
	if !slices.Equal(nested, want) {
		t.Errorf("nested templates = %v, want %v", nested, want)
	}
	walk(m.root, nil, func(path []string, v any) {
		stack, attr := getAtt(v)
		out, ok := strings.CutPrefix(attr, "Outputs.")
		if !ok {
			return
		}
		url, _ := dig(m.resource(t, stack), "Properties", "TemplateURL").(string)
		decl, ok := load(t, url).section("Outputs")[out]
		if !ok {
			t.Errorf("%s: %s has no output %s", strings.Join(path, "/"), url, out)
			return
		}
		// A conditional output exists only under its condition; only an
		// output of main.yaml with the same condition may read it.
		if c, ok := dig(decl, "Condition").(string); ok {
			if len(path) < 2 || path[0] != "Outputs" || dig(m.section("Outputs"), path[1], "Condition") != c {
				t.Errorf("%s reads %s output %s, which exists only under condition %s", strings.Join(path, "/"), url, out, c)
			}
		}
	})
}

func TestAcceleratorWiring(t *testing.T) {
	a := load(t, "app.yaml")
	accs := a.ofType("AWS::GlobalAccelerator::Accelerator")
	if len(accs) != 1 {
		t.Fatalf("accelerators = %v, want exactly one", accs)
	}
	acc := a.resource(t, accs[0])
	types := allowedValues(a, refName(dig(acc, "Properties", "IpAddressType")))
	if lit, ok := dig(acc, "Properties", "IpAddressType").(string); ok {
		types = []string{lit}
	}
	if len(types) == 0 {
		t.Errorf("accelerator IpAddressType is neither a literal nor a parameter with AllowedValues")
	}
	for _, v := range types {
		if v != "IPV4" && v != "DUAL_STACK" {
			t.Errorf("accelerator IpAddressType may be %q, want IPV4 or DUAL_STACK", v)
		}
	}
	if e := dig(acc, "Properties", "Enabled"); e != true {
		t.Errorf("accelerator Enabled = %v, want true", e)
	}

	listeners := unconditional(a, a.ofType("AWS::GlobalAccelerator::Listener")) // the UDP one: TestUdp
	if len(listeners) != 1 {
		t.Fatalf("accelerator listeners = %v, want exactly one", listeners)
	}
	l := props(a.resource(t, listeners[0]))
	if refName(l["AcceleratorArn"]) != accs[0] {
		t.Errorf("listener AcceleratorArn = %v, want Ref %s", l["AcceleratorArn"], accs[0])
	}
	if l["Protocol"] != "TCP" {
		t.Errorf("listener Protocol = %v, want TCP", l["Protocol"])
	}
	if got := fmt.Sprint(l["PortRanges"]); got != "[map[FromPort:8080 ToPort:8080]]" {
		t.Errorf("listener PortRanges = %s, want exactly 8080-8080", got)
	}

	groups := unconditional(a, a.ofType("AWS::GlobalAccelerator::EndpointGroup"))
	if len(groups) != 1 {
		t.Fatalf("endpoint groups = %v, want exactly one", groups)
	}
	g := props(a.resource(t, groups[0]))
	if refName(g["ListenerArn"]) != listeners[0] {
		t.Errorf("endpoint group ListenerArn = %v, want Ref %s", g["ListenerArn"], listeners[0])
	}
	if refName(g["EndpointGroupRegion"]) != "AWS::Region" && g["EndpointGroupRegion"] != "us-east-2" {
		t.Errorf("EndpointGroupRegion = %v, want Ref AWS::Region (the NLB's region)", g["EndpointGroupRegion"])
	}
	if hc, ok := g["HealthCheckIntervalSeconds"]; ok && hc != 10 && hc != 30 {
		t.Errorf("HealthCheckIntervalSeconds = %v; the API accepts only 10 or 30", hc)
	}
	eps, _ := g["EndpointConfigurations"].([]any)
	if len(eps) != 1 {
		t.Fatalf("EndpointConfigurations = %v, want exactly the NLB", eps)
	}
	nlbs := a.ofType("AWS::ElasticLoadBalancingV2::LoadBalancer")
	if len(nlbs) != 1 {
		t.Fatalf("load balancers = %v, want exactly one", nlbs)
	}
	if refName(dig(eps[0], "EndpointId")) != nlbs[0] {
		t.Errorf("EndpointId = %v, want Ref %s", dig(eps[0], "EndpointId"), nlbs[0])
	}
	// Set explicitly: the documented defaults disagree.
	if cip, ok := dig(eps[0], "ClientIPPreservationEnabled").(bool); !ok || !cip {
		t.Errorf("ClientIPPreservationEnabled = %v, want an explicit true", dig(eps[0], "ClientIPPreservationEnabled"))
	}
	if w, ok := dig(eps[0], "Weight").(int); ok && (w < 0 || w > 255) {
		t.Errorf("endpoint Weight = %d, want 0-255", w)
	}
}

// ingressRules returns a security group's inline ingress rules, evaluated.
func ingressRules(tb testing.TB, e *env, sg map[string]any) []map[string]any {
	tb.Helper()
	l, _ := e.mustEval(tb, dig(sg, "Properties", "SecurityGroupIngress")).([]any)
	var rules []map[string]any
	for _, r := range l {
		m, ok := r.(map[string]any)
		if !ok {
			tb.Fatalf("ingress rule %v is not a mapping", r)
		}
		rules = append(rules, m)
	}
	return rules
}

// covers reports whether an ingress rule opens TCP port p.
func covers(rule map[string]any, p int) bool {
	proto := fmt.Sprint(rule["IpProtocol"])
	if proto == "-1" || proto == "all" {
		return true
	}
	if proto != "tcp" && proto != "6" {
		return false
	}
	from, err1 := strconv.Atoi(fmt.Sprint(rule["FromPort"]))
	to, err2 := strconv.Atoi(fmt.Sprint(rule["ToPort"]))
	if err1 != nil || err2 != nil {
		return true // unknown ports: assume the worst
	}
	if from == -1 {
		return true
	}
	return from <= p && p <= to
}

func TestLoadBalancer(t *testing.T) {
	a := load(t, "app.yaml")
	nlbName := a.ofType("AWS::ElasticLoadBalancingV2::LoadBalancer")[0]
	nlb := props(a.resource(t, nlbName))
	if nlb["Type"] != "network" {
		t.Errorf("load balancer Type = %v, want network", nlb["Type"])
	}
	// An NLB created without a security group can never get one, and
	// Global Accelerator preserves client addresses only with one.
	sgs, _ := nlb["SecurityGroups"].([]any)
	if len(sgs) == 0 {
		t.Fatal("the NLB has no SecurityGroups")
	}
	e := newEnv(a, withRequired("app.yaml", nil))
	for _, sg := range sgs {
		name := refName(sg)
		if dig(a.section("Resources"), name, "Type") != "AWS::EC2::SecurityGroup" {
			t.Fatalf("NLB security group %v is not a security group of app.yaml", sg)
		}
		open8080 := false
		for _, r := range ingressRules(t, e, a.resource(t, name)) {
			if covers(r, 8080) {
				open8080 = true
			}
		}
		if !open8080 {
			t.Errorf("NLB security group %s does not admit TCP 8080", name)
		}
	}
	if nlb["Scheme"] == "internal" {
		// Global Accelerator needs an internet gateway attached to the VPC
		// of an internal NLB endpoint.
		n := load(t, "network.yaml")
		att := n.ofType("AWS::EC2::VPCGatewayAttachment")
		if len(att) != 1 || refName(dig(n.resource(t, att[0]), "Properties", "InternetGatewayId")) == "" {
			t.Error("internal NLB, but network.yaml attaches no internet gateway")
		}
	}
	if got := fmt.Sprint(e.mustEval(t, nlb["LoadBalancerAttributes"])); !strings.Contains(got, "map[Key:load_balancing.cross_zone.enabled Value:false]") {
		t.Errorf("LoadBalancerAttributes = %s, want cross-zone explicitly off (Global Accelerator's advice)", got)
	}

	listeners := a.ofType("AWS::ElasticLoadBalancingV2::Listener")
	if len(listeners) != 1 {
		t.Fatalf("NLB listeners = %v, want exactly one", listeners)
	}
	l := props(a.resource(t, listeners[0]))
	// A TLS listener turns client IP preservation off for an NLB with
	// security groups.
	if e.mustEval(t, l["Protocol"]) != "TCP" || l["Certificates"] != nil { // TCP_UDP with EnableUdp: TestUdp
		t.Errorf("listener Protocol = %v (certificates %v), want plain TCP", l["Protocol"], l["Certificates"])
	}
	if refName(l["LoadBalancerArn"]) != nlbName || l["Port"] != 8080 {
		t.Errorf("listener = %v on port %v, want the NLB on 8080", l["LoadBalancerArn"], l["Port"])
	}
	acts, _ := l["DefaultActions"].([]any)
	if len(acts) != 1 || dig(acts[0], "Type") != "forward" {
		t.Fatalf("listener DefaultActions = %v, want one forward", acts)
	}
	tgName := refName(dig(acts[0], "TargetGroupArn"))
	tg := props(a.resource(t, tgName))
	if tg["Port"] != 80 || e.mustEval(t, tg["Protocol"]) != "TCP" || tg["TargetType"] != "instance" {
		t.Errorf("target group = port %v %v type %v, want TCP 80 instance", tg["Port"], tg["Protocol"], tg["TargetType"])
	}
	if tg["HealthCheckProtocol"] != "TCP" {
		t.Errorf("HealthCheckProtocol = %v, want TCP", tg["HealthCheckProtocol"])
	}
	if tg["Matcher"] != nil {
		t.Error("Matcher is only valid with HTTP health checks")
	}

	for _, pp := range allowedValues(a, "ProxyProtocolV2") {
		for _, ipType := range allowedValues(a, "AcceleratorIpAddressType") {
			t.Run("ppv2="+pp+"/"+ipType, func(t *testing.T) {
				e := newEnv(a, withRequired("app.yaml", map[string]string{"ProxyProtocolV2": pp, "AcceleratorIpAddressType": ipType}))
				attrs := map[string]string{}
				l, _ := e.mustEval(t, tg["TargetGroupAttributes"]).([]any)
				for _, kv := range l {
					attrs[fmt.Sprint(dig(kv, "Key"))] = fmt.Sprint(dig(kv, "Value"))
				}
				if attrs["preserve_client_ip.enabled"] != "true" {
					t.Errorf("preserve_client_ip.enabled = %q, want true", attrs["preserve_client_ip.enabled"])
				}
				if attrs["proxy_protocol_v2.enabled"] != pp {
					t.Errorf("proxy_protocol_v2.enabled = %q, want the parameter's %q", attrs["proxy_protocol_v2.enabled"], pp)
				}
				if d, err := strconv.Atoi(attrs["deregistration_delay.timeout_seconds"]); err != nil || d < 0 || d > 3600 {
					t.Errorf("deregistration_delay.timeout_seconds = %q, want 0-3600", attrs["deregistration_delay.timeout_seconds"])
				}
				nlbIP := e.mustEval(t, nlb["IpAddressType"])
				tgIP := e.mustEval(t, tg["IpAddressType"])
				if ipType == "DUAL_STACK" {
					if nlbIP != "dualstack" {
						t.Errorf("dual-stack accelerator, NLB IpAddressType = %v, want dualstack", nlbIP)
					}
					if tgIP == "ipv6" {
						t.Error("dual-stack: the target group must not be IPv6")
					}
				} else if nlbIP != "ipv4" {
					t.Errorf("IPv4 accelerator, NLB IpAddressType = %v, want ipv4 (client IP preservation)", nlbIP)
				}
				// The parent gives the network IPv6 exactly when needed.
				m := load(t, "main.yaml")
				me := newEnv(m, withRequired("main.yaml", map[string]string{"AcceleratorIpAddressType": ipType}))
				ipv6 := me.mustEval(t, dig(childStack(t, "network.yaml"), "Properties", "Parameters", "EnableIpv6"))
				if want := fmt.Sprint(ipType == "DUAL_STACK"); ipv6 != want {
					t.Errorf("main.yaml passes EnableIpv6 = %v for %s, want %s", ipv6, ipType, want)
				}
			})
		}
	}
}

// renderUserData evaluates a launch template's user data for parameters.
func renderUserData(tb testing.TB, t *tmpl, lt string, params map[string]string) string {
	tb.Helper()
	e := newEnv(t, withRequired(t.name, params))
	s, ok := e.mustEval(tb, dig(t.resource(tb, lt), "Properties", "LaunchTemplateData", "UserData")).(string)
	if !ok {
		tb.Fatalf("%s %s: user data does not evaluate to a string", t.name, lt)
	}
	return s
}

// heredoc returns the lines of the `cat >path <<EOF` document in a script.
func heredoc(tb testing.TB, script, path string) []string {
	tb.Helper()
	lines := strings.Split(script, "\n")
	start := slices.Index(lines, "cat >"+path+" <<EOF")
	if start < 0 {
		tb.Fatalf("the user data writes no %s (want a line `cat >%s <<EOF`):\n%s", path, path, script)
	}
	end := slices.Index(lines[start:], "EOF")
	if end < 0 {
		tb.Fatalf("the %s here-document has no EOF line", path)
	}
	return lines[start+1 : start+end]
}

// envFile parses systemd EnvironmentFile lines (KEY=VALUE, comments and
// blank lines skipped); shell variables in values are replaced from vars,
// and any left over fail the test.
func envFile(tb testing.TB, lines []string, vars map[string]string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(k) {
			tb.Fatalf("environment line %q is not KEY=VALUE", line)
		}
		for name, val := range vars {
			v = strings.ReplaceAll(v, "$"+name, val)
		}
		if strings.ContainsAny(v, "$`\"'\\ ") {
			tb.Fatalf("environment line %q holds a character systemd or the shell would interpret", line)
		}
		if _, dup := out[k]; dup {
			tb.Fatalf("environment key %s is set twice", k)
		}
		out[k] = v
	}
	return out
}

// TestProxyProtocolFollowsTargetGroup renders the target group and the
// app's configuration for each value of the parameter: the pair is always
// one of the consistent rows of the reference note (preservation on and
// PPv2 off with --proxy-protocol off, or both on with required).
func TestProxyProtocolFollowsTargetGroup(t *testing.T) {
	a := load(t, "app.yaml")
	want := map[string]string{"false": "off", "true": "required"}
	values := allowedValues(a, "ProxyProtocolV2")
	if !slices.Equal(slices.Sorted(slices.Values(values)), []string{"false", "true"}) {
		t.Fatalf("ProxyProtocolV2 AllowedValues = %v, want true and false", values)
	}
	tgName := a.ofType("AWS::ElasticLoadBalancingV2::TargetGroup")[0]
	for _, pp := range values {
		t.Run("ppv2="+pp, func(t *testing.T) {
			e := newEnv(a, withRequired("app.yaml", map[string]string{"ProxyProtocolV2": pp}))
			var tgPP string
			l, _ := e.mustEval(t, dig(a.resource(t, tgName), "Properties", "TargetGroupAttributes")).([]any)
			for _, kv := range l {
				if dig(kv, "Key") == "proxy_protocol_v2.enabled" {
					tgPP = fmt.Sprint(dig(kv, "Value"))
				}
			}
			ud := renderUserData(t, a, "AppLaunchTemplate", map[string]string{"ProxyProtocolV2": pp})
			env := envFile(t, heredoc(t, ud, "/etc/originlens/app.env"), map[string]string{"BROKERS": "b-1.example:9098"})
			if env["APP_PROXY_PROTOCOL"] != want[tgPP] {
				t.Errorf("target group proxy_protocol_v2.enabled = %s but the app runs --proxy-protocol %q, want %q",
					tgPP, env["APP_PROXY_PROTOCOL"], want[tgPP])
			}
			if out := e.mustEval(t, dig(a.section("Outputs"), "ProxyProtocol", "Value")); out != env["APP_PROXY_PROTOCOL"] {
				t.Errorf("ProxyProtocol output = %v, app configuration %q", out, env["APP_PROXY_PROTOCOL"])
			}
			if _, ok := env["APP_TRUSTED_PROXIES"]; ok {
				t.Error("APP_TRUSTED_PROXIES set; with preservation on the NLB is no trusted source address")
			}
		})
	}
}

// TestSecurityGroups checks that the instances are reachable only from the
// NLB's security group, that nothing opens SSH, and that an open CIDR
// reaches nothing but the NLB's TCP 8080.
func TestSecurityGroups(t *testing.T) {
	a := load(t, "app.yaml")
	nlb := a.resource(t, a.ofType("AWS::ElasticLoadBalancingV2::LoadBalancer")[0])
	nlbSGs := map[string]bool{}
	for _, sg := range dig(nlb, "Properties", "SecurityGroups").([]any) {
		nlbSGs[refName(sg)] = true
	}
	for _, name := range templateFiles {
		tp := load(t, name)
		if l := tp.ofType("AWS::EC2::SecurityGroupIngress"); len(l) > 0 {
			t.Errorf("%s: standalone ingress rules %v; keep rules inline so that they are checked here", name, l)
		}
		e := newEnv(tp, withRequired(name, nil))
		for _, sgName := range tp.ofType("AWS::EC2::SecurityGroup") {
			for _, r := range ingressRules(t, e, tp.resource(t, sgName)) {
				if covers(r, 22) {
					t.Errorf("%s %s: ingress %v opens port 22", name, sgName, r)
				}
				for _, k := range []string{"CidrIp", "CidrIpv6"} {
					cidr, ok := r[k].(string)
					if !ok {
						continue
					}
					if (cidr == "0.0.0.0/0" || cidr == "::/0") &&
						!(name == "app.yaml" && nlbSGs[sgName] && fmt.Sprint(r["FromPort"]) == "8080" && fmt.Sprint(r["ToPort"]) == "8080") {
						t.Errorf("%s %s: ingress %v is open to the internet beyond the NLB's TCP 8080", name, sgName, r)
					}
				}
			}
		}
	}

	for _, c := range []struct{ file, lt string }{{"app.yaml", "AppLaunchTemplate"}, {"ingest.yaml", "IngestLaunchTemplate"}} {
		tp := load(t, c.file)
		sgs, _ := dig(tp.resource(t, c.lt), "Properties", "LaunchTemplateData", "SecurityGroupIds").([]any)
		if len(sgs) == 0 {
			t.Fatalf("%s %s: no SecurityGroupIds", c.file, c.lt)
		}
		for _, sg := range sgs {
			owner, name := source(t, tp, sg)
			e := newEnv(owner, withRequired(owner.name, nil))
			for _, r := range ingressRules(t, e, owner.resource(t, name)) {
				src := refName(r["SourceSecurityGroupId"])
				if c.file == "app.yaml" && owner == tp && nlbSGs[src] && covers(r, 80) &&
					fmt.Sprint(r["FromPort"]) == "80" && fmt.Sprint(r["ToPort"]) == "80" && len(r) <= 6 {
					continue // traffic and health checks from the NLB
				}
				t.Errorf("%s %s: security group %s (%s) admits %v; instances take TCP 80 from the NLB's security group only",
					c.file, c.lt, name, owner.name, r)
			}
		}
	}
}

// TestLaunchTemplates checks the compute hardening of both fleets.
func TestLaunchTemplates(t *testing.T) {
	for _, name := range templateFiles {
		tp := load(t, name)
		for _, banned := range []string{"AWS::AutoScaling::LaunchConfiguration", "AWS::EC2::Instance", "AWS::EC2::KeyPair"} {
			if l := tp.ofType(banned); len(l) > 0 {
				t.Errorf("%s: %s %v", name, banned, l)
			}
		}
		walk(tp.root, nil, func(path []string, v any) {
			if len(path) > 0 && path[len(path)-1] == "KeyName" {
				t.Errorf("%s: %s sets an SSH key", name, strings.Join(path, "/"))
			}
		})
		for _, asgName := range tp.ofType("AWS::AutoScaling::AutoScalingGroup") {
			asg := props(tp.resource(t, asgName))
			ltName := refName(dig(asg, "LaunchTemplate", "LaunchTemplateId"))
			if ltName == "" {
				t.Errorf("%s %s: no LaunchTemplate", name, asgName)
				continue
			}
			if res, attr := getAtt(dig(asg, "LaunchTemplate", "Version")); res != ltName || attr != "LatestVersionNumber" {
				t.Errorf("%s %s: launch template version %v, want its LatestVersionNumber", name, asgName, dig(asg, "LaunchTemplate", "Version"))
			}
			if refName(asg["VPCZoneIdentifier"]) != "PrivateSubnets" {
				t.Errorf("%s %s: VPCZoneIdentifier = %v, want the private subnets", name, asgName, asg["VPCZoneIdentifier"])
			}
			d := props(tp.resource(t, ltName))["LaunchTemplateData"]
			if dig(d, "MetadataOptions", "HttpTokens") != "required" {
				t.Errorf("%s %s: MetadataOptions.HttpTokens = %v, want required (IMDSv2 only)", name, ltName, dig(d, "MetadataOptions", "HttpTokens"))
			}
			if dig(d, "MetadataOptions", "HttpPutResponseHopLimit") != 1 {
				t.Errorf("%s %s: HttpPutResponseHopLimit = %v, want 1", name, ltName, dig(d, "MetadataOptions", "HttpPutResponseHopLimit"))
			}
			if dig(d, "NetworkInterfaces") != nil {
				t.Errorf("%s %s: NetworkInterfaces may assign public addresses; use SecurityGroupIds", name, ltName)
			}
			for _, bdm := range dig(d, "BlockDeviceMappings").([]any) {
				if dig(bdm, "Ebs", "Encrypted") != true {
					t.Errorf("%s %s: unencrypted volume %v", name, ltName, bdm)
				}
			}
			res, _ := getAtt(dig(d, "IamInstanceProfile", "Arn"))
			roles, _ := dig(tp.resource(t, res), "Properties", "Roles").([]any)
			if len(roles) != 1 {
				t.Fatalf("%s %s: instance profile roles %v", name, ltName, roles)
			}
			role := tp.resource(t, refName(roles[0]))
			e := newEnv(tp, withRequired(name, nil))
			if got := fmt.Sprint(e.mustEval(t, dig(role, "Properties", "ManagedPolicyArns"))); !strings.Contains(got, "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore") {
				t.Errorf("%s %s: role policies %s lack AmazonSSMManagedInstanceCore (Session Manager instead of SSH)", name, ltName, got)
			}
		}
	}
	a := load(t, "app.yaml")
	asg := props(a.resource(t, "AppGroup"))
	e := newEnv(a, withRequired("app.yaml", nil))
	if d := e.mustEval(t, asg["DesiredCapacity"]); d != "2" {
		t.Errorf("app DesiredCapacity = %v by default, want 2", d)
	}
	if asg["HealthCheckType"] != "ELB" {
		t.Errorf("app HealthCheckType = %v, want ELB", asg["HealthCheckType"])
	}
	tgs, _ := asg["TargetGroupARNs"].([]any)
	if len(tgs) != 1 || dig(a.section("Resources"), refName(tgs[0]), "Type") != "AWS::ElasticLoadBalancingV2::TargetGroup" {
		t.Errorf("app TargetGroupARNs = %v, want the NLB's target group", tgs)
	}
}

// policyStatements evaluates a role's inline policy statements.
func policyStatements(tb testing.TB, tp *tmpl, role string) []map[string]any {
	tb.Helper()
	e := newEnv(tp, withRequired(tp.name, nil))
	var out []map[string]any
	pols, _ := e.mustEval(tb, dig(tp.resource(tb, role), "Properties", "Policies")).([]any)
	for _, p := range pols {
		sts, _ := dig(p, "PolicyDocument", "Statement").([]any)
		for _, s := range sts {
			out = append(out, s.(map[string]any))
		}
	}
	return out
}

// allows reports whether a statement list allows action on resource.
func allows(sts []map[string]any, action, resource string) bool {
	for _, s := range sts {
		if s["Effect"] != "Allow" {
			continue
		}
		acts := fmt.Sprint(s["Action"])
		res := fmt.Sprint(s["Resource"])
		if strings.Contains(" "+strings.Trim(acts, "[]")+" ", " "+action+" ") && strings.Contains(res, resource) {
			return true
		}
	}
	return false
}

// TestKafkaAccess checks the MSK bootstrap broker lookup at boot, TLS with
// IAM on both fleets, and the roles' rights: the app writes the topic, the
// ingest reads it.
func TestKafkaAccess(t *testing.T) {
	cases := []struct {
		file, lt, role, envPath, prefix string
		needs                           map[string]string // action -> parameter holding the resource
	}{
		{"app.yaml", "AppLaunchTemplate", "AppRole", "/etc/originlens/app.env", "APP_", map[string]string{
			"kafka:GetBootstrapBrokers": "KafkaClusterArn", "kafka-cluster:Connect": "KafkaClusterArn",
			"kafka-cluster:WriteData": "KafkaTopicArn", "kafka-cluster:DescribeTopic": "KafkaTopicArn",
		}},
		{"ingest.yaml", "IngestLaunchTemplate", "IngestRole", "/etc/originlens/ingest.env", "INGEST_", map[string]string{
			"kafka:GetBootstrapBrokers": "KafkaClusterArn", "kafka-cluster:Connect": "KafkaClusterArn",
			"kafka-cluster:ReadData": "KafkaTopicArn", "kafka-cluster:AlterGroup": "KafkaGroupArn",
			"kafka-cluster:WriteData": "KafkaDeadLetterTopicArn",
			"es:ESHttpPost":           "OpenSearchDomainArn", "es:ESHttpPut": "OpenSearchDomainArn",
		}},
	}
	for _, c := range cases {
		t.Run(strings.TrimSuffix(c.file, ".yaml"), func(t *testing.T) {
			tp := load(t, c.file)
			ud := renderUserData(t, tp, c.lt, nil)
			cluster := requiredParams[c.file]["KafkaClusterArn"]
			if !strings.Contains(ud, "aws kafka get-bootstrap-brokers --region us-east-2 --cluster-arn "+cluster+" --query BootstrapBrokerStringSaslIam") {
				t.Errorf("user data does not fetch the IAM bootstrap brokers of %s:\n%s", cluster, ud)
			}
			env := envFile(t, heredoc(t, ud, c.envPath), map[string]string{"BROKERS": "b-1.example:9098,b-2.example:9098"})
			for k, want := range map[string]string{
				"KAFKA_BROKERS": "b-1.example:9098,b-2.example:9098", "KAFKA_TLS": "true",
				"KAFKA_SASL": "aws-msk-iam", "KAFKA_AWS_REGION": "us-east-2", "KAFKA_TOPIC": "conn-events",
			} {
				if env[c.prefix+k] != want {
					t.Errorf("%s%s = %q, want %q", c.prefix, k, env[c.prefix+k], want)
				}
			}
			sts := policyStatements(t, tp, c.role)
			for action, param := range c.needs {
				if !allows(sts, action, requiredParams[c.file][param]) {
					t.Errorf("%s may not %s on %s", c.role, action, param)
				}
			}
			if c.file == "app.yaml" && allows(sts, "kafka-cluster:ReadData", requiredParams[c.file]["KafkaTopicArn"]) {
				t.Error("the app role may read the topic; it only writes")
			}
			for _, s := range sts {
				if strings.Contains(fmt.Sprint(s["Action"]), "*") && !strings.HasPrefix(fmt.Sprint(s["Action"]), "es:ESHttp") {
					t.Errorf("%s: wildcard action %v", c.role, s["Action"])
				}
				if fmt.Sprint(s["Resource"]) == "*" {
					t.Errorf("%s: statement %v on every resource", c.role, s["Sid"])
				}
			}
			// The instance installs the release the stack names, and the
			// unit the repository ships.
			if !strings.Contains(ud, "aws s3 cp --region us-east-2 s3://originlens-artifacts-test/originlens/originlens-test-linux-amd64.tar.gz ") {
				t.Errorf("user data does not download the ArtifactKey tarball:\n%s", ud)
			}
			if !strings.Contains(ud, "tar -xzf /tmp/originlens.tar.gz -C /opt/originlens --strip-components=1") {
				t.Error("user data does not unpack the tarball into /opt/originlens")
			}
		})
	}
}

func TestMsk(t *testing.T) {
	an := load(t, "analytics.yaml")
	n := subnetCount(t)
	if n < 2 || n > 3 {
		t.Fatalf("%d private subnets; MSK needs 2 or 3 in distinct AZs", n)
	}
	for _, mode := range allowedValues(an, "MskMode") {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(an, map[string]string{"MskMode": mode})
			var active []string
			for _, typ := range []string{"AWS::MSK::Cluster", "AWS::MSK::ServerlessCluster"} {
				for _, name := range an.ofType(typ) {
					c, _ := dig(an.resource(t, name), "Condition").(string)
					if c == "" {
						active = append(active, name)
						continue
					}
					if ok, err := e.cond(c); err != nil {
						t.Fatal(err)
					} else if ok {
						active = append(active, name)
					}
				}
			}
			if len(active) != 1 {
				t.Fatalf("MskMode %s creates clusters %v, want exactly one", mode, active)
			}
			r := an.resource(t, active[0])
			p := props(r)
			if dig(p, "ClientAuthentication", "Sasl", "Iam", "Enabled") != true {
				t.Error("IAM authentication is not enabled")
			}
			if v := dig(p, "ClientAuthentication", "Unauthenticated", "Enabled"); v == true {
				t.Error("unauthenticated access is enabled")
			}
			if _, ok := p["Tags"].(map[string]any); p["Tags"] != nil && !ok {
				t.Errorf("MSK Tags = %v, want a map (not a Key/Value list)", p["Tags"])
			}
			if r["Type"] == "AWS::MSK::Cluster" {
				if dig(p, "EncryptionInfo", "EncryptionInTransit", "ClientBroker") != "TLS" {
					t.Errorf("ClientBroker = %v, want TLS", dig(p, "EncryptionInfo", "EncryptionInTransit", "ClientBroker"))
				}
				if dig(p, "EncryptionInfo", "EncryptionInTransit", "InCluster") != true {
					t.Error("InCluster encryption is off")
				}
				brokers, _ := p["NumberOfBrokerNodes"].(int)
				if brokers < n || brokers%n != 0 {
					t.Errorf("NumberOfBrokerNodes = %v with %d subnets; brokers spread evenly over the AZs", p["NumberOfBrokerNodes"], n)
				}
			}
			// Only the client security group reaches the brokers, on 9098.
			sgs := e.mustEval(t, dig(p, "BrokerNodeGroupInfo", "SecurityGroups"))
			if r["Type"] == "AWS::MSK::ServerlessCluster" {
				sgs = e.mustEval(t, dig(p, "VpcConfigs", "0", "SecurityGroups"))
			}
			if fmt.Sprint(sgs) != "[{{Ref KafkaSecurityGroup}}]" {
				t.Fatalf("broker security groups = %v, want KafkaSecurityGroup", sgs)
			}
			rules := ingressRules(t, e, an.resource(t, "KafkaSecurityGroup"))
			if len(rules) != 1 || refName(rules[0]["SourceSecurityGroupId"]) != "KafkaClientSecurityGroup" || rules[0]["FromPort"] != 9098 || rules[0]["ToPort"] != 9098 {
				t.Errorf("broker ingress = %v, want only 9098 from KafkaClientSecurityGroup", rules)
			}
			for _, c := range []struct{ file, lt string }{{"app.yaml", "AppLaunchTemplate"}, {"ingest.yaml", "IngestLaunchTemplate"}} {
				tp := load(t, c.file)
				found := false
				for _, sg := range dig(tp.resource(t, c.lt), "Properties", "LaunchTemplateData", "SecurityGroupIds").([]any) {
					if owner, name := source(t, tp, sg); owner == an && name == "KafkaClientSecurityGroup" {
						found = true
					}
				}
				if !found {
					t.Errorf("%s %s does not carry KafkaClientSecurityGroup", c.file, c.lt)
				}
			}
		})
	}
}

func TestOpenSearch(t *testing.T) {
	an := load(t, "analytics.yaml")
	domains := an.ofType("AWS::OpenSearchService::Domain")
	if len(domains) != 1 {
		t.Fatalf("domains = %v, want one", domains)
	}
	d := an.resource(t, domains[0])
	p := props(d)
	e := newEnv(an, nil)
	if v := fmt.Sprint(e.mustEval(t, p["EngineVersion"])); !regexp.MustCompile(`^OpenSearch_\d+\.\d+$`).MatchString(v) {
		t.Errorf("EngineVersion = %q, want OpenSearch_X.Y", v)
	}
	if dig(p, "AdvancedSecurityOptions", "Enabled") != true {
		t.Error("fine-grained access control is off")
	}
	// Fine-grained access control requires all three; cfn-lint does not check.
	if dig(p, "NodeToNodeEncryptionOptions", "Enabled") != true {
		t.Error("node-to-node encryption is off")
	}
	if dig(p, "EncryptionAtRestOptions", "Enabled") != true {
		t.Error("encryption at rest is off")
	}
	if dig(p, "DomainEndpointOptions", "EnforceHTTPS") != true {
		t.Error("EnforceHTTPS is off")
	}
	if pol, _ := dig(p, "DomainEndpointOptions", "TLSSecurityPolicy").(string); !strings.HasPrefix(pol, "Policy-Min-TLS-1-2") {
		t.Errorf("TLSSecurityPolicy = %q, want TLS 1.2 or later", pol)
	}
	if pw, _ := dig(p, "AdvancedSecurityOptions", "MasterUserOptions", "MasterUserPassword", "Fn::Sub").(string); !strings.HasPrefix(pw, "{{resolve:secretsmanager:") {
		t.Errorf("MasterUserPassword = %v, want a Secrets Manager dynamic reference", dig(p, "AdvancedSecurityOptions", "MasterUserOptions", "MasterUserPassword"))
	}
	// In a VPC, one subnet per AZ; more than one needs zone awareness over
	// exactly that many AZs.
	n := subnetCount(t)
	if refName(dig(p, "VPCOptions", "SubnetIds")) != "PrivateSubnets" {
		t.Fatalf("VPCOptions.SubnetIds = %v, want the private subnets", dig(p, "VPCOptions", "SubnetIds"))
	}
	if n > 1 {
		if dig(p, "ClusterConfig", "ZoneAwarenessEnabled") != true {
			t.Errorf("%d subnets without ZoneAwarenessEnabled", n)
		}
		if c := dig(p, "ClusterConfig", "ZoneAwarenessConfig", "AvailabilityZoneCount"); c != n {
			t.Errorf("AvailabilityZoneCount = %v, want %d (the subnet count)", c, n)
		}
		if c, _ := dig(p, "ClusterConfig", "InstanceCount").(int); c%n != 0 {
			t.Errorf("InstanceCount = %d, want a multiple of %d AZs", c, n)
		}
	}
	rules := ingressRules(t, e, an.resource(t, "OpenSearchSecurityGroup"))
	if len(rules) != 1 || refName(rules[0]["SourceSecurityGroupId"]) != "OpenSearchClientSecurityGroup" || rules[0]["FromPort"] != 443 {
		t.Errorf("domain ingress = %v, want only 443 from OpenSearchClientSecurityGroup", rules)
	}
	// The service-linked role is conditional (once per account) and the
	// domain waits for it.
	slrs := an.ofType("AWS::IAM::ServiceLinkedRole")
	if len(slrs) != 1 {
		t.Fatalf("service-linked roles = %v, want one", slrs)
	}
	slr := an.resource(t, slrs[0])
	if dig(slr, "Condition") == nil {
		t.Error("the service-linked role is not behind a condition")
	}
	if dig(slr, "Properties", "AWSServiceName") != "opensearchservice.amazonaws.com" {
		t.Errorf("AWSServiceName = %v", dig(slr, "Properties", "AWSServiceName"))
	}
	dep, _ := d["DependsOn"].(string)
	if dep == "" || !strings.Contains(fmt.Sprint(an.resource(t, dep)), "Ref:"+slrs[0]) {
		t.Errorf("the domain does not wait for %s (DependsOn %v)", slrs[0], d["DependsOn"])
	}
	tp := load(t, "ingest.yaml")
	found := false
	for _, sg := range dig(tp.resource(t, "IngestLaunchTemplate"), "Properties", "LaunchTemplateData", "SecurityGroupIds").([]any) {
		if owner, name := source(t, tp, sg); owner == an && name == "OpenSearchClientSecurityGroup" {
			found = true
		}
	}
	if !found {
		t.Error("the ingest instances do not carry OpenSearchClientSecurityGroup")
	}
	ud := renderUserData(t, tp, "IngestLaunchTemplate", nil)
	env := envFile(t, heredoc(t, ud, "/etc/originlens/ingest.env"), map[string]string{"BROKERS": "b-1.example:9098"})
	host := requiredParams["ingest.yaml"]["OpenSearchEndpoint"]
	if env["INGEST_OPENSEARCH_URL"] != "https://"+host || env["INGEST_AWS_SIGV4"] != "us-east-2" {
		t.Errorf("ingest OpenSearch settings = %q sigv4 %q, want https://%s signed for us-east-2",
			env["INGEST_OPENSEARCH_URL"], env["INGEST_AWS_SIGV4"], host)
	}
}

func TestOutputs(t *testing.T) {
	m := load(t, "main.yaml")
	for _, o := range []string{"AcceleratorDnsName", "AcceleratorStaticIps", "NlbDnsName", "DashboardsUrl", "ProbeCommand"} {
		if _, ok := m.section("Outputs")[o]; !ok {
			t.Errorf("main.yaml has no output %s", o)
		}
	}
	a := load(t, "app.yaml")
	e := newEnv(a, withRequired("app.yaml", nil))
	probe := fmt.Sprint(e.mustEval(t, dig(a.section("Outputs"), "ProbeCommand", "Value")))
	if !regexp.MustCompile(`^\./bin/nc-probe --expect-ip "\$\(curl -s https://checkip\.amazonaws\.com\)" .+:8080$`).MatchString(probe) {
		t.Errorf("ProbeCommand = %q", probe)
	}
	if ips := fmt.Sprint(dig(a.section("Outputs"), "AcceleratorStaticIps", "Value")); !strings.Contains(ips, "Accelerator Ipv4Addresses") {
		t.Errorf("AcceleratorStaticIps = %s, want the accelerator's Ipv4Addresses", ips)
	}
	an := load(t, "analytics.yaml")
	ae := newEnv(an, nil)
	if u := fmt.Sprint(ae.mustEval(t, dig(an.section("Outputs"), "DashboardsUrl", "Value"))); u != "https://{{GetAtt OpenSearchDomain.DomainEndpoint}}/_dashboards/" {
		t.Errorf("DashboardsUrl = %q", u)
	}
}

// TestLintSuppressions allows exactly one cfn-lint suppression: W3002 on
// nested stacks, whose local TemplateURL `aws cloudformation package`
// rewrites.
func TestLintSuppressions(t *testing.T) {
	for _, name := range templateFiles {
		tp := load(t, name)
		walk(tp.root, nil, func(path []string, v any) {
			if len(path) == 0 || path[len(path)-1] != "cfn-lint" {
				return
			}
			ok := name == "main.yaml" && len(path) == 4 && path[0] == "Resources" && path[2] == "Metadata" &&
				dig(tp.section("Resources"), path[1], "Type") == "AWS::CloudFormation::Stack" &&
				fmt.Sprint(v) == "map[config:map[ignore_checks:[W3002]]]"
			if !ok {
				t.Errorf("%s: cfn-lint suppression at %s: %v", name, strings.Join(path, "/"), v)
			}
		})
		if m, ok := tp.root["Metadata"].(map[string]any); ok && m["cfn-lint"] != nil {
			t.Errorf("%s: template-wide cfn-lint configuration", name)
		}
	}
}
