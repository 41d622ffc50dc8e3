package geo_test

import (
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/geo"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		ip   string
		want string
	}{
		{"8.8.8.8", geo.ClassPublic},
		{"1.1.1.1", geo.ClassPublic},
		{"127.0.0.1", geo.ClassLoopback},
		{"127.255.255.254", geo.ClassLoopback},
		{"10.0.0.1", geo.ClassPrivate},
		{"172.16.5.4", geo.ClassPrivate},
		{"172.32.0.1", geo.ClassPublic},
		{"192.168.1.1", geo.ClassPrivate},
		{"100.64.0.1", geo.ClassShared},
		{"100.127.255.255", geo.ClassShared},
		{"100.128.0.1", geo.ClassPublic},
		{"169.254.169.254", geo.ClassLinkLocal},
		{"192.0.2.1", geo.ClassDocumentation},
		{"198.51.100.200", geo.ClassDocumentation},
		{"203.0.113.9", geo.ClassDocumentation},
		{"224.0.0.1", geo.ClassMulticast},
		{"239.255.255.250", geo.ClassMulticast},
		{"0.0.0.0", geo.ClassUnspecified},
		{"0.1.2.3", geo.ClassReserved},
		{"192.0.0.9", geo.ClassReserved},
		{"198.18.0.1", geo.ClassReserved},
		{"240.0.0.1", geo.ClassReserved},
		{"255.255.255.255", geo.ClassReserved},
		{"::ffff:8.8.8.8", geo.ClassPublic},
		{"::ffff:127.0.0.1", geo.ClassLoopback},
		{"::ffff:10.1.1.1", geo.ClassPrivate},
		{"::ffff:203.0.113.1", geo.ClassDocumentation},
		{"2a00:1450:4001::1", geo.ClassPublic},
		{"2001::1", geo.ClassPublic}, // Teredo
		{"2002:c000:201::1", geo.ClassPublic},
		{"::1", geo.ClassLoopback},
		{"::", geo.ClassUnspecified},
		{"fd00::1", geo.ClassPrivate},
		{"fc00::1", geo.ClassPrivate},
		{"fe80::1", geo.ClassLinkLocal},
		{"ff02::1", geo.ClassMulticast},
		{"2001:db8::1", geo.ClassDocumentation},
		{"3fff:1::1", geo.ClassDocumentation},
		{"2001:2::1", geo.ClassReserved},
		{"100::1", geo.ClassReserved},
		{"64:ff9b:1::1", geo.ClassReserved},
		{"4000::1", geo.ClassReserved},
	}
	for _, tt := range tests {
		if got := geo.Classify(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Classify(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
	if got := geo.Classify(netip.Addr{}); got != geo.ClassUnspecified {
		t.Errorf("Classify(zero Addr) = %q, want %q", got, geo.ClassUnspecified)
	}
}
