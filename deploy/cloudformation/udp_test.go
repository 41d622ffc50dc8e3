package cloudformation_test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// unconditional returns the resources of names that exist whatever the
// parameters (no Condition).
func unconditional(t *tmpl, names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := t.section("Resources")[n].(map[string]any)["Condition"]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// present reports whether resource name exists under e's parameters.
func present(tb testing.TB, e *env, name string) bool {
	tb.Helper()
	c, ok := e.t.section("Resources")[name].(map[string]any)["Condition"].(string)
	if !ok {
		return true
	}
	b, err := e.cond(c)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// coversUDP reports whether an ingress rule opens UDP port p.
func coversUDP(rule map[string]any, p int) bool {
	proto := fmt.Sprint(rule["IpProtocol"])
	if proto == "-1" || proto == "all" {
		return true
	}
	if proto != "udp" && proto != "17" {
		return false
	}
	from, err1 := strconv.Atoi(fmt.Sprint(rule["FromPort"]))
	to, err2 := strconv.Atoi(fmt.Sprint(rule["ToPort"]))
	if err1 != nil || err2 != nil || from == -1 {
		return true // unknown ports: assume the worst
	}
	return from <= p && p <= to
}

// TestUdp renders app.yaml with EnableUdp off and on, for each address
// type: with it on, a Global Accelerator UDP listener on the TCP listener's
// port sends to the NLB, the NLB listener and its target group are TCP_UDP
// with TCP health checks, every UDP listener port has a UDP rule from the
// clients on the NLB's security group, the instances take UDP from the
// NLB's security group only (never from a CIDR), the app listens on the
// target group's port, and the probe command gains a --udp line. With it
// off, nothing of that exists.
func TestUdp(t *testing.T) {
	a := load(t, "app.yaml")
	help := []byte{}
	if _, err := exec.LookPath("go"); err == nil {
		out, err := exec.Command(buildCmd(t, "app"), "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("app --help: %v\n%s", err, out)
		}
		help = out
	}
	nlbName := a.ofType("AWS::ElasticLoadBalancingV2::LoadBalancer")[0]
	for _, udp := range allowedValues(a, "EnableUdp") {
		for _, ipType := range allowedValues(a, "AcceleratorIpAddressType") {
			t.Run("udp="+udp+"/"+ipType, func(t *testing.T) {
				on := udp == "true"
				params := map[string]string{"EnableUdp": udp, "AcceleratorIpAddressType": ipType}
				e := newEnv(a, withRequired("app.yaml", params))

				// Accelerator: one TCP listener, and one UDP listener on the
				// same ports when on, each with an endpoint group to the NLB.
				byProto := map[any][]string{}
				for _, l := range a.ofType("AWS::GlobalAccelerator::Listener") {
					if present(t, e, l) {
						p := e.mustEval(t, props(a.resource(t, l))["Protocol"])
						byProto[p] = append(byProto[p], l)
					}
				}
				if len(byProto["TCP"]) != 1 || len(byProto["UDP"]) != map[bool]int{true: 1}[on] {
					t.Fatalf("accelerator listeners by protocol = %v, want one TCP and %d UDP", byProto, map[bool]int{true: 1}[on])
				}
				if on {
					tcpPorts := fmt.Sprint(e.mustEval(t, props(a.resource(t, byProto["TCP"][0]))["PortRanges"]))
					udpPorts := fmt.Sprint(e.mustEval(t, props(a.resource(t, byProto["UDP"][0]))["PortRanges"]))
					if tcpPorts != udpPorts {
						t.Errorf("UDP listener ports %s, TCP %s: want the same port", udpPorts, tcpPorts)
					}
					groups := 0
					for _, g := range a.ofType("AWS::GlobalAccelerator::EndpointGroup") {
						gp := props(a.resource(t, g))
						if !present(t, e, g) || refName(gp["ListenerArn"]) != byProto["UDP"][0] {
							continue
						}
						groups++
						eps, _ := gp["EndpointConfigurations"].([]any)
						if len(eps) != 1 || refName(dig(eps[0], "EndpointId")) != nlbName || dig(eps[0], "ClientIPPreservationEnabled") != true {
							t.Errorf("UDP endpoint group %s endpoints %v, want the NLB with ClientIPPreservationEnabled true", g, eps)
						}
					}
					if groups != 1 {
						t.Errorf("%d endpoint groups for the UDP listener, want 1", groups)
					}
				}

				// NLB listeners that carry UDP, and their target groups.
				var udpPorts, tgPorts []int
				for _, l := range a.ofType("AWS::ElasticLoadBalancingV2::Listener") {
					if !present(t, e, l) {
						continue
					}
					lp := props(a.resource(t, l))
					proto := e.mustEval(t, lp["Protocol"])
					if proto != "UDP" && proto != "TCP_UDP" {
						continue
					}
					udpPorts = append(udpPorts, lp["Port"].(int))
					acts, _ := lp["DefaultActions"].([]any)
					tg := props(a.resource(t, refName(dig(acts[0], "TargetGroupArn"))))
					tgProto := e.mustEval(t, tg["Protocol"])
					if (proto == "TCP_UDP" && tgProto != "TCP_UDP") || (proto == "UDP" && tgProto != "UDP" && tgProto != "TCP_UDP") {
						t.Errorf("NLB listener %s is %v, its target group %v", l, proto, tgProto)
					}
					if hc := tg["HealthCheckProtocol"]; hc != "TCP" {
						t.Errorf("UDP target group health check %v, want TCP (UDP cannot be checked)", hc)
					}
					tgPorts = append(tgPorts, tg["Port"].(int))
				}
				if len(udpPorts) != map[bool]int{true: 1}[on] {
					t.Fatalf("NLB listeners carrying UDP on ports %v, want %d", udpPorts, map[bool]int{true: 1}[on])
				}

				// Security groups: a UDP rule from the clients for every UDP
				// listener; instances: UDP only from the NLB's group.
				nlbSG := refName(props(a.resource(t, nlbName))["SecurityGroups"].([]any)[0])
				for _, p := range udpPorts {
					v4, v6 := false, false
					for _, r := range ingressRules(t, e, a.resource(t, nlbSG)) {
						if coversUDP(r, p) {
							v4 = v4 || r["CidrIp"] == e.params["ClientCidr"]
							v6 = v6 || r["CidrIpv6"] == e.params["ClientCidrIpv6"]
						}
					}
					if !v4 || (ipType == "DUAL_STACK") != v6 {
						t.Errorf("NLB security group: UDP %d from ClientCidr %v, from ClientCidrIpv6 %v (dual stack %v)", p, v4, v6, ipType == "DUAL_STACK")
					}
				}
				anyUDP := false
				for _, sg := range a.ofType("AWS::EC2::SecurityGroup") {
					for _, r := range ingressRules(t, e, a.resource(t, sg)) {
						if !coversUDP(r, -2) && !coversUDP(r, 80) && !coversUDP(r, 8080) {
							continue
						}
						anyUDP = true
						if sg != nlbSG && (r["CidrIp"] != nil || r["CidrIpv6"] != nil || r["SourceSecurityGroupId"] == nil) {
							t.Errorf("security group %s admits UDP from %v; instances take UDP from the NLB's security group only", sg, r)
						}
					}
				}
				for _, p := range tgPorts {
					ok := false
					for _, r := range ingressRules(t, e, a.resource(t, "AppSecurityGroup")) {
						ok = ok || coversUDP(r, p) && refName(r["SourceSecurityGroupId"]) == nlbSG
					}
					if !ok {
						t.Errorf("instances do not take UDP %d from the NLB's security group", p)
					}
				}
				if !on && anyUDP {
					t.Error("EnableUdp false, but a security group admits UDP")
				}
				if prefix := e.mustEval(t, props(a.resource(t, nlbName))["EnablePrefixForIpv6SourceNat"]); (prefix == "on") != (on && ipType == "DUAL_STACK") {
					t.Errorf("EnablePrefixForIpv6SourceNat = %v; a dual-stack NLB with UDP needs on", prefix)
				}

				// The app listens for UDP on the target group's port.
				env := envFile(t, heredoc(t, renderUserData(t, a, "AppLaunchTemplate", params), "/etc/originlens/app.env"), map[string]string{"BROKERS": ""})
				if want := map[bool]string{true: ":80"}[on]; env["APP_LISTEN_UDP"] != want {
					t.Errorf("APP_LISTEN_UDP = %q, want %q", env["APP_LISTEN_UDP"], want)
				}
				if len(help) > 0 {
					checkEnvFlags(t, help, "APP_", env)
				}

				// The probe command: one line per transport.
				e.attrs = map[string]any{"Accelerator.Ipv4Addresses": []any{"192.0.2.10"}}
				probe := fmt.Sprint(e.mustEval(t, dig(a.section("Outputs"), "ProbeCommand", "Value")))
				lines := strings.Split(probe, "\n")
				if len(lines) != map[bool]int{true: 2, false: 1}[on] || (on && !strings.HasPrefix(lines[1], "./bin/nc-probe --udp ")) {
					t.Errorf("ProbeCommand = %q", probe)
				}
				for _, l := range lines {
					if !strings.HasSuffix(l, " 192.0.2.10:8080") {
						t.Errorf("ProbeCommand line %q does not probe the accelerator's 8080", l)
					}
				}
			})
		}
	}

	// The NLB sends PROXY headers over TCP only: both templates refuse
	// EnableUdp with ProxyProtocolV2.
	for _, name := range []string{"app.yaml", "main.yaml"} {
		tp := load(t, name)
		rule, ok := tp.section("Rules")["UdpWithoutProxyProtocol"]
		if !ok {
			t.Errorf("%s: no rule UdpWithoutProxyProtocol", name)
			continue
		}
		for _, c := range []struct {
			udp, pp string
			ok      bool
		}{{"true", "true", false}, {"true", "false", true}, {"false", "true", true}} {
			e := newEnv(tp, withRequired(name, map[string]string{"EnableUdp": c.udp, "ProxyProtocolV2": c.pp}))
			applies := e.mustEval(t, dig(rule, "RuleCondition")) == true
			holds := true
			for _, as := range dig(rule, "Assertions").([]any) {
				holds = holds && e.mustEval(t, dig(as, "Assert")) == true
			}
			if got := !applies || holds; got != c.ok {
				t.Errorf("%s: EnableUdp %s with ProxyProtocolV2 %s accepted = %v, want %v", name, c.udp, c.pp, got, c.ok)
			}
		}
	}
}
