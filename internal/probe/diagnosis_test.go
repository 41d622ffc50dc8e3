package probe_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/report"
)

// TestDiagnoseSourceNATKinds: the source-nat sentence says what the
// address the server saw looks like. (The loopback and netns tests cover
// the codes end to end; these are the AWS shapes they cannot build.)
func TestDiagnoseSourceNATKinds(t *testing.T) {
	for _, tc := range []struct {
		name, want, saw, server, via, says string
	}{
		{"NLBNode", "198.51.100.7", "10.0.1.200", "10.0.1.15:80", "direct", "in the server's own network, looks like a load balancer node"},
		{"PrivateElsewhere", "198.51.100.7", "10.9.0.4", "10.0.1.15:80", "direct", "a private address, looks like a load balancer or NAT node"},
		{"Hairpin", "10.0.1.15", "10.0.1.200", "10.0.1.15:80", "direct", "a hairpin"},
		{"IPv6ClientIPv4Path", "2001:db8::10", "10.0.1.200", "10.0.1.15:80", "direct", "an IPv4 address for an IPv6 client"},
		{"ProxyInFront", "198.51.100.7", "192.0.2.9", "10.0.1.15:80", "proxy-v2", "a proxy in front sent a PROXY header"},
		{"Public", "198.51.100.7", "192.0.2.9", "10.0.1.15:80", "direct", "neither private nor in the server's network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saw := netip.AddrPortFrom(netip.MustParseAddr(tc.saw), 4000)
			want := netip.MustParseAddr(tc.want)
			a := probe.Attempt{
				Target: "target:80", Saw: saw, Expected: want, Verdict: probe.Judge(saw.Addr(), want, probe.ExpectFlag),
				Report: report.Report{report.KeyClient: saw.String(), report.KeyVia: tc.via, report.KeyPeer: saw.String(), report.KeyServer: tc.server},
			}
			d, s := probe.Diagnose(a, 0)
			if d != probe.DiagSourceNAT || !strings.Contains(s, tc.says) || !strings.Contains(s, "preserve_client_ip.enabled") {
				t.Errorf("Diagnose = %s, %q; want source-nat saying %q and the setting", d, s, tc.says)
			}
		})
	}
}
