package policy_test

import (
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
)

// BenchmarkDecide is rule evaluation alone with the default rules, over a
// mix of clients that hit each rule and the default.
func BenchmarkDecide(b *testing.B) {
	p := policy.Default()
	cases := []struct {
		addr netip.Addr
		loc  geo.Location
	}{
		{netip.MustParseAddr("203.0.113.1"), geo.Location{Class: "public", CountryISO: "DE", ContinentCode: "EU"}},
		{netip.MustParseAddr("198.51.100.1"), geo.Location{Class: "public", CountryISO: "KP", ContinentCode: "AS"}},
		{netip.MustParseAddr("192.0.2.1"), geo.Location{Class: "public", CountryISO: "JP", ContinentCode: "AS"}},
		{netip.MustParseAddr("127.0.0.1"), geo.Location{Class: "loopback"}},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := cases[i%len(cases)]
		if p.Decide(c.addr, c.loc).Decision == "" {
			b.Fatal("no decision")
		}
	}
}
