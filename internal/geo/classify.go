package geo

import "net/netip"

// Address classes reported in [Location.Class].
const (
	ClassPublic        = "public"        // globally routable, or placed by a database
	ClassLoopback      = "loopback"      // 127.0.0.0/8, ::1
	ClassPrivate       = "private"       // RFC 1918, fc00::/7
	ClassShared        = "shared"        // 100.64.0.0/10 (RFC 6598, carrier-grade NAT)
	ClassLinkLocal     = "link-local"    // 169.254.0.0/16, fe80::/10
	ClassDocumentation = "documentation" // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20
	ClassMulticast     = "multicast"     // 224.0.0.0/4, ff00::/8
	ClassUnspecified   = "unspecified"   // 0.0.0.0, ::, and the invalid zero netip.Addr
	ClassReserved      = "reserved"      // other special-purpose space (IANA registries), and IPv6 outside 2000::/3
)

var (
	shared4        = netip.MustParsePrefix("100.64.0.0/10")
	documentation4 = []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
	}
	documentation6 = []netip.Prefix{
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("3fff::/20"), // RFC 9637
	}
	reserved4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
		netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
		netip.MustParsePrefix("192.88.99.0/24"), // deprecated 6to4 relay anycast
		netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and 255.255.255.255
	}
	global6 = netip.MustParsePrefix("2000::/3")
	ietf6   = netip.MustParsePrefix("2001::/23") // IETF protocol assignments, but 2001::/32 is Teredo
	teredo6 = netip.MustParsePrefix("2001::/32")
)

// Classify returns the class of addr (see the Class constants): what the
// address is by the IANA special-purpose registries, without any database.
// An IPv4-mapped IPv6 address is classified as the IPv4 address it holds.
// It is pure and safe for concurrent use.
func Classify(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid() || addr.IsUnspecified():
		return ClassUnspecified
	case addr.IsLoopback():
		return ClassLoopback
	case addr.IsMulticast():
		return ClassMulticast
	case addr.IsLinkLocalUnicast():
		return ClassLinkLocal
	case addr.IsPrivate():
		return ClassPrivate
	}
	if addr.Is4() {
		if shared4.Contains(addr) {
			return ClassShared
		}
		if in(documentation4, addr) {
			return ClassDocumentation
		}
		if in(reserved4, addr) {
			return ClassReserved
		}
		return ClassPublic
	}
	if in(documentation6, addr) {
		return ClassDocumentation
	}
	if !global6.Contains(addr) {
		return ClassReserved
	}
	if ietf6.Contains(addr) && !teredo6.Contains(addr) {
		return ClassReserved
	}
	return ClassPublic
}

func in(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
