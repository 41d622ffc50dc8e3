package geo_test

import (
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
)

// TestNAT64WellKnownPrefix: an IPv4 client seen through a NAT64/SIIT
// translator has the address 64:ff9b::a.b.c.d (RFC 6052). GeoIP databases
// do not alias that prefix, so an embargoed (KP) client's translated
// address was "reserved", unplaced, and the default rules served it. The
// embedded IPv4 address is the client: it is looked up.
func TestNAT64WellKnownPrefix(t *testing.T) {
	db := open(t, geo.Config{CityPath: writeCity(t, t.TempDir(), cityEntries, built)})
	p := policy.Default()
	for _, s := range []string{"64:ff9b::198.51.100.1", "64:ff9b::c633:6401"} {
		a := netip.MustParseAddr(s)
		loc := db.Lookup(a)
		if loc.CountryISO != "KP" {
			t.Errorf("Lookup(%s) = %+v, want the KP record of 198.51.100.1", s, loc)
		}
		if d := p.Decide(a, loc); d.Decision != policy.Deny {
			t.Errorf("Decide(%s) = %+v, want deny (embargo)", s, d)
		}
	}
	// Only the well-known /96 embeds an address at a fixed place; the
	// local-use prefix 64:ff9b:1::/48 (RFC 8215) stays reserved.
	if loc := db.Lookup(netip.MustParseAddr("64:ff9b:1::c633:6401")); loc.Class != geo.ClassReserved || loc.CountryISO != "" {
		t.Errorf("Lookup(64:ff9b:1::c633:6401) = %+v, want reserved, unplaced", loc)
	}
}
