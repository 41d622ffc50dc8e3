package probe

import (
	"fmt"
	"net/netip"
)

// Verdict is the judgement on what the server saw of the client.
type Verdict int

const (
	// NoReport: no attempt got a report, so nothing can be said.
	NoReport Verdict = iota
	// Preserved: the server saw the expected client address.
	Preserved
	// NotPreserved: the server saw another address, e.g. a load balancer's.
	NotPreserved
	// Unknown: the probe is behind NAT (its own address is private), was not
	// told its public address, and the server saw a public address: it may
	// be the probe's NAT gateway (preserved) or a proxy (not preserved).
	Unknown
)

// String returns a lowercase name: "no-report", "preserved",
// "not-preserved" or "unknown".
func (v Verdict) String() string {
	switch v {
	case Preserved:
		return "preserved"
	case NotPreserved:
		return "not-preserved"
	case Unknown:
		return "unknown"
	}
	return "no-report"
}

// ExpectSource says where the expected client address came from.
type ExpectSource int

const (
	// ExpectLocal: the probe socket's own local address (the default).
	ExpectLocal ExpectSource = iota
	// ExpectFlag: given by the user (--expect-ip).
	ExpectFlag
	// ExpectProxySrc: the source address of the PROXY header the probe sent.
	ExpectProxySrc
)

// String describes the source for humans.
func (s ExpectSource) String() string {
	switch s {
	case ExpectFlag:
		return "given with --expect-ip"
	case ExpectProxySrc:
		return "the PROXY header's source"
	}
	return "the probe's local address"
}

// cgnat is RFC 6598 shared address space, used by carrier-grade NAT.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// BehindNAT reports whether a is an address a NAT would rewrite on the way
// to the internet: RFC 1918, RFC 6598 (CGNAT) or IPv6 ULA (fc00::/7).
func BehindNAT(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || cgnat.Contains(a)
}

// Judge compares the address the server saw with the expected one (both
// are unmapped first). When the expectation is only the probe's local
// address, that address is behind NAT, and the server saw a different
// address that is not behind NAT itself, the answer is [Unknown]: the
// probe cannot know its public address.
func Judge(saw, expected netip.Addr, src ExpectSource) Verdict {
	saw, expected = saw.Unmap(), expected.Unmap()
	switch {
	case !saw.IsValid():
		return NoReport
	case saw == expected:
		return Preserved
	case src == ExpectLocal && BehindNAT(expected) && !BehindNAT(saw) && !saw.IsLoopback():
		return Unknown
	}
	return NotPreserved
}

// Explain returns a one-line explanation of a verdict for target.
func Explain(v Verdict, saw, expected netip.Addr, src ExpectSource, peer string) string {
	switch v {
	case Preserved:
		return fmt.Sprintf("preserved: the server saw %s, the client's own address (%s)", saw, src)
	case NotPreserved:
		hop := ""
		if pa, err := netip.ParseAddrPort(peer); err == nil && pa.Addr().Unmap() != saw {
			hop = ", through the immediate peer " + pa.Addr().Unmap().String()
		}
		return fmt.Sprintf("not preserved: the server saw %s instead of %s (%s): a load balancer or proxy replaced the client address%s", saw, expected, src, hop)
	case Unknown:
		return fmt.Sprintf("cannot tell: the probe's own address %s is private (behind NAT), so it cannot know its public address; the server saw %s: rerun with --expect-ip YOUR.PUBLIC.IP", expected, saw)
	}
	return "no report: no attempt got the server's report line"
}
