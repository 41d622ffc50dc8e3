// Package policy decides what the app does for a located client: serve it,
// redirect it to the region that holds its data, or deny it, and in which
// language to greet it. Rules come from a YAML file, first match wins.
//
// # Rules file
//
//	default: {decision: serve, region: us-east-2}
//	jurisdictions:               # named groups of ISO 3166-1 alpha-2 codes
//	  EU: [AT, BE, BG, ...]
//	rules:
//	  - name: eu-data-stays-in-eu
//	    when: {jurisdiction: [EU]}
//	    then: {decision: redirect, region: eu-central-1, reason: eu-data-residency}
//	  - name: embargo
//	    when: {country: [KP]}
//	    then: {decision: deny}
//	  - name: geo-lookup-error
//	    when: {geo: [error]}
//	    then: {decision: deny}
//	languages: {DE: de, AT: de, FR: fr}   # country -> language
//	greetings: {de: "Hallo!", fr: "Bonjour !", en: "Hello!"}
//	default_lang: en                      # optional, "en" by default
//
// A rule's `when` holds any of the keys country, jurisdiction, continent
// (AF AN AS EU NA OC SA), cidr, asn, class (a [geo] class such as
// "private") and geo: "error" when a GeoIP record for the client exists
// but did not decode ([geo.Location.Error]; the location then holds only
// what could be decoded, often the country), "ok" otherwise. Each key takes a list (or one value); a key matches when the
// client matches any of its values, and a rule matches when every key it
// gives matches. A rule with no `when` matches every client. A country is
// in a jurisdiction when the jurisdiction lists it; [Decision.Jurisdiction]
// is the first jurisdiction, in file order, that lists the client's
// country.
//
// `then` takes decision (serve, redirect or deny), region (required for
// redirect, not allowed for deny; serve defaults to the default's region)
// and reason (for redirect and deny; the rule's name by default).
//
// # Checks
//
// [Load] and [Parse] refuse, as an [*Error] naming the file, line and
// reason: YAML syntax errors, unknown or duplicate keys, unknown country,
// continent, class or geo values, invalid CIDRs (or with host bits set), AS
// number 0, unknown decisions, unknown jurisdictions, empty lists, a
// language without a greeting, a greeting with a line break, duplicate rule
// names, and a rule that can never match because an earlier rule matches
// every client it would match (an earlier rule without conditions, an
// identical earlier rule, or one whose every condition is a superset of
// the later rule's, e.g. jurisdiction EU before country DE).
//
// The embedded default rules deny a GeoIP lookup error (fail closed),
// after the embargo rule, so that an embargoed country still gets the
// embargo; a rules file may decide otherwise, e.g. serve lookup errors
// with a rule `when: {geo: error}` and `then: {decision: serve}`.
//
// A [Policy] is immutable, so reloading means loading a new one and
// swapping it in; a bad file leaves the caller with the old one.
package policy

import (
	_ "embed"
	"net/netip"
	"slices"

	"github.com/originlens/originlens/internal/geo"
)

// Decisions.
const (
	Serve    = "serve"
	Redirect = "redirect"
	Deny     = "deny"
)

// RuleDefault is [Decision.Rule] when no rule matched.
const RuleDefault = "default"

// Decision is the outcome of [Policy.Decide].
type Decision struct {
	Decision     string // Serve, Redirect or Deny
	Region       string // the region that serves the client's data
	Rule         string // the name of the matching rule; "default" when none matched
	Jurisdiction string // the first jurisdiction that holds the client's country
	Lang         string // greeting language, e.g. "de"; "en" by default
	Greeting     string // greeting text in Lang; empty for Deny
	Reason       string // why, for deny and redirect
}

// Policy is a parsed rules file. It is immutable and safe for concurrent use.
type Policy struct {
	source string
	def    outcome
	rules  []rule
	// jurOf and langOf map a country's [countryIndex] to an index into
	// jurNames and langs; 0 means none (jurNames[0] is "") and the default
	// language (langs[0]).
	jurOf    [26 * 26]uint16
	jurNames []string
	langOf   [26 * 26]uint16
	langs    []lang
}

type lang struct{ code, greeting string }

type outcome struct {
	decision, region, reason string
}

type rule struct {
	name string
	line int
	when conds
	then outcome
}

// Condition keys, as bits of conds.has.
const (
	keyCountry = 1 << iota
	keyJurisdiction
	keyContinent
	keyCIDR
	keyASN
	keyClass
	keyGeo
)

// Values of the geo condition: the lookup state of [geo.Location].
const (
	GeoError = "error" // a record exists but did not decode
	GeoOK    = "ok"    // no lookup error (placed or not)
)

type conds struct {
	has          uint8
	country      countrySet
	jurisdiction []string   // the names, for messages
	jurCountries countrySet // the union of their countries
	continent    []string
	cidr         []netip.Prefix
	asn          []uint32
	class        []string
	geo          []string // GeoError, GeoOK
}

//go:embed default.yaml
var defaultRules []byte

// DefaultRules returns the embedded default rules file, for users to copy.
func DefaultRules() []byte { return slices.Clone(defaultRules) }

var defaultPolicy = func() *Policy {
	p, err := Parse("default.yaml (embedded)", defaultRules)
	if err != nil {
		panic(err) // a test parses it; unreachable in a built binary
	}
	return p
}()

// Default returns the embedded default rules: EU clients are redirected to
// eu-central-1, embargoed countries denied, everyone else served from
// us-east-2, with greetings in a dozen languages.
func Default() *Policy { return defaultPolicy }

// Source returns the name of the file the policy was read from.
func (p *Policy) Source() string { return p.source }

// Decide applies the rules to a client address and its location. It is
// pure, allocation-free and safe for concurrent use. An IPv4-mapped addr is
// matched as the IPv4 address it holds.
func (p *Policy) Decide(addr netip.Addr, loc geo.Location) Decision {
	addr = addr.Unmap()
	d := Decision{Rule: RuleDefault}
	out := p.def
	for i := range p.rules {
		if p.rules[i].when.match(addr, &loc) {
			d.Rule, out = p.rules[i].name, p.rules[i].then
			break
		}
	}
	d.Decision, d.Region, d.Reason = out.decision, out.region, out.reason
	l := p.langs[0]
	if i := countryIndex(loc.CountryISO); i >= 0 {
		d.Jurisdiction = p.jurNames[p.jurOf[i]]
		l = p.langs[p.langOf[i]]
	}
	d.Lang = l.code
	if d.Decision != Deny {
		d.Greeting = l.greeting
	}
	return d
}

func (c *conds) match(addr netip.Addr, loc *geo.Location) bool {
	if c.has&keyCountry != 0 && !c.country.has(loc.CountryISO) {
		return false
	}
	if c.has&keyJurisdiction != 0 && !c.jurCountries.has(loc.CountryISO) {
		return false
	}
	if c.has&keyContinent != 0 && !slices.Contains(c.continent, loc.ContinentCode) {
		return false
	}
	if c.has&keyCIDR != 0 && !containsAddr(c.cidr, addr) {
		return false
	}
	if c.has&keyASN != 0 && (loc.ASN == 0 || !slices.Contains(c.asn, loc.ASN)) {
		return false
	}
	if c.has&keyClass != 0 && !slices.Contains(c.class, loc.Class) {
		return false
	}
	if c.has&keyGeo != 0 && !slices.Contains(c.geo, geoState(loc)) {
		return false
	}
	return true
}

// geoState is the value the geo condition matches for loc.
func geoState(loc *geo.Location) string {
	if loc.Error != "" {
		return GeoError
	}
	return GeoOK
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// countryConstraint returns the countries a client must be in to match c,
// and whether c constrains the country at all.
func (c *conds) countryConstraint() (countrySet, bool) {
	switch {
	case c.has&keyCountry != 0 && c.has&keyJurisdiction != 0:
		var s countrySet
		for i := range s {
			s[i] = c.country[i] & c.jurCountries[i]
		}
		return s, true
	case c.has&keyCountry != 0:
		return c.country, true
	case c.has&keyJurisdiction != 0:
		return c.jurCountries, true
	}
	return countrySet{}, false
}

// covers reports whether every client that matches b also matches c, so
// that a rule b after a rule c can never match.
func (c *conds) covers(b *conds) bool {
	if c.has&(keyCountry|keyJurisdiction) != 0 {
		bs, ok := b.countryConstraint()
		if !ok {
			return false
		}
		if c.has&keyCountry != 0 && !bs.subsetOf(&c.country) {
			return false
		}
		if c.has&keyJurisdiction != 0 && !bs.subsetOf(&c.jurCountries) {
			return false
		}
	}
	if c.has&keyContinent != 0 && (b.has&keyContinent == 0 || !subset(b.continent, c.continent)) {
		return false
	}
	if c.has&keyASN != 0 && (b.has&keyASN == 0 || !subset(b.asn, c.asn)) {
		return false
	}
	if c.has&keyClass != 0 && (b.has&keyClass == 0 || !subset(b.class, c.class)) {
		return false
	}
	if c.has&keyGeo != 0 && (b.has&keyGeo == 0 || !subset(b.geo, c.geo)) {
		return false
	}
	if c.has&keyCIDR != 0 {
		if b.has&keyCIDR == 0 {
			return false
		}
		for _, bp := range b.cidr {
			if !slices.ContainsFunc(c.cidr, func(cp netip.Prefix) bool {
				return cp.Bits() <= bp.Bits() && cp.Contains(bp.Addr())
			}) {
				return false
			}
		}
	}
	return true
}

func subset[T comparable](small, big []T) bool {
	for _, v := range small {
		if !slices.Contains(big, v) {
			return false
		}
	}
	return true
}
