package policy_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
)

func loc(class, country, continent string, asn uint32) geo.Location {
	return geo.Location{Class: class, CountryISO: country, ContinentCode: continent, ASN: asn}
}

func lookupErr(l geo.Location) geo.Location {
	l.Error = "city record: decoding field location: ..."
	return l
}

// TestGeoCondition checks a rules file that serves lookup errors (the
// default denies them) and one that matches only error-free lookups.
func TestGeoCondition(t *testing.T) {
	p, err := policy.Parse("g.yaml", []byte(`
default: {decision: deny, reason: closed}
rules:
  - name: errors-served
    when: {geo: error}
    then: {decision: serve, region: r1}
  - name: ok-only
    when: {geo: [ok], class: [public]}
    then: {decision: redirect, region: r2}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	a := netip.MustParseAddr("198.51.100.1")
	for _, c := range []struct {
		loc  geo.Location
		rule string
	}{
		{lookupErr(loc("public", "KP", "AS", 0)), "errors-served"},
		{lookupErr(loc("reserved", "", "", 0)), "errors-served"},
		{loc("public", "KP", "AS", 0), "ok-only"},
		{loc("private", "", "", 0), "default"},
	} {
		if got := p.Decide(a, c.loc); got.Rule != c.rule {
			t.Errorf("Decide(%+v) rule = %q (%+v), want %q", c.loc, got.Rule, got, c.rule)
		}
	}
}

func TestDefaultDecide(t *testing.T) {
	p := policy.Default()
	tests := []struct {
		name string
		addr string
		loc  geo.Location
		want policy.Decision
	}{
		{"GermanyRedirected", "203.0.113.7", loc("public", "DE", "EU", 0), policy.Decision{
			Decision: "redirect", Region: "eu-central-1", Rule: "eu-data-stays-in-eu", Jurisdiction: "EU",
			Lang: "de", Greeting: "Hallo!", Reason: "eu-data-residency"}},
		{"FranceRedirected", "203.0.113.8", loc("public", "FR", "EU", 0), policy.Decision{
			Decision: "redirect", Region: "eu-central-1", Rule: "eu-data-stays-in-eu", Jurisdiction: "EU",
			Lang: "fr", Greeting: "Bonjour !", Reason: "eu-data-residency"}},
		{"NorthKoreaDenied", "198.51.100.1", loc("public", "KP", "AS", 0), policy.Decision{
			Decision: "deny", Rule: "embargo", Lang: "en", Reason: "embargo"}},
		{"JapanServed", "192.0.2.1", loc("public", "JP", "AS", 0), policy.Decision{
			Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "ja", Greeting: "こんにちは"}},
		{"BrazilServedPortuguese", "2001:db8::1", loc("public", "BR", "SA", 0), policy.Decision{
			Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "pt", Greeting: "Olá!"}},
		{"SwitzerlandGermanNotEU", "203.0.113.9", loc("public", "CH", "EU", 0), policy.Decision{
			Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "de", Greeting: "Hallo!"}},
		{"LoopbackNoCountry", "127.0.0.1", loc("loopback", "", "", 0), policy.Decision{
			Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "en", Greeting: "Hello!"}},
		{"GarbageCountry", "127.0.0.1", loc("public", "d", "", 0), policy.Decision{
			Decision: "serve", Region: "us-east-2", Rule: "default", Lang: "en", Greeting: "Hello!"}},
		// A record that did not decode: denied (fail closed), but the
		// country that could be decoded still gets its own rule first.
		{"LookupErrorDenied", "203.0.113.7", lookupErr(loc("documentation", "", "", 0)), policy.Decision{
			Decision: "deny", Rule: "geo-lookup-error", Lang: "en", Reason: "geo-lookup-error"}},
		{"LookupErrorGermanyDenied", "203.0.113.7", lookupErr(loc("public", "DE", "EU", 0)), policy.Decision{
			Decision: "deny", Rule: "geo-lookup-error", Jurisdiction: "EU", Lang: "de", Reason: "geo-lookup-error"}},
		{"LookupErrorNorthKoreaEmbargo", "198.51.100.1", lookupErr(loc("public", "KP", "AS", 0)), policy.Decision{
			Decision: "deny", Rule: "embargo", Lang: "en", Reason: "embargo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Decide(netip.MustParseAddr(tt.addr), tt.loc)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Decide(%s, %+v) mismatch (-want +got):\n%s", tt.addr, tt.loc, d)
			}
		})
	}
	if !strings.Contains(string(policy.DefaultRules()), "eu-data-stays-in-eu") {
		t.Error("DefaultRules() does not hold the embedded file")
	}
	if got := p.Source(); !strings.Contains(got, "default.yaml") {
		t.Errorf("Default().Source() = %q", got)
	}
}

const custom = `
default: {decision: deny, reason: not-on-the-list}
default_lang: fr
jurisdictions:
  EU: [DE, FR, AT]
  DACH: [DE, AT, CH]
rules:
  - name: office
    when: {cidr: [10.0.0.0/8, "2001:db8:1::/48"], class: [private, documentation]}
    then: {decision: serve, region: on-prem}
  - name: carrier
    when: {asn: [AS64500, 64501]}
    then: {decision: redirect, region: carrier-region}
  - name: dach-outside-eu
    when: {jurisdiction: DACH, continent: [EU]}
    then: {decision: redirect, region: eu-central-2}
  - name: americas
    when:
      continent: [NA, SA]
    then: {decision: serve}
  - name: loopback
    when: {class: loopback}
    then: {decision: deny}
languages: {DE: de, CH: de, US: en}
greetings: {de: "Hallo!", fr: "Bonjour !", en: "Hello!"}
`

func TestCustomDecide(t *testing.T) {
	p, err := policy.Parse("custom.yaml", []byte(custom))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tests := []struct {
		name string
		addr string
		loc  geo.Location
		want policy.Decision
	}{
		{"OfficeV4", "10.1.2.3", loc("private", "", "", 0), policy.Decision{
			Decision: "serve", Region: "on-prem", Rule: "office", Lang: "fr", Greeting: "Bonjour !"}},
		{"OfficeMapped", "::ffff:10.1.2.3", loc("private", "", "", 0), policy.Decision{
			Decision: "serve", Region: "on-prem", Rule: "office", Lang: "fr", Greeting: "Bonjour !"}},
		{"OfficeV6", "2001:db8:1::5", loc("documentation", "", "", 0), policy.Decision{
			Decision: "serve", Region: "on-prem", Rule: "office", Lang: "fr", Greeting: "Bonjour !"}},
		{"OfficeRangeWrongClass", "10.1.2.3", loc("public", "", "", 0), policy.Decision{
			Decision: "deny", Rule: "default", Lang: "fr", Reason: "not-on-the-list"}},
		{"Carrier", "8.8.8.8", loc("public", "US", "NA", 64501), policy.Decision{
			Decision: "redirect", Region: "carrier-region", Rule: "carrier", Lang: "en", Greeting: "Hello!", Reason: "carrier"}},
		{"SwissInDACHNotEU", "8.8.8.8", loc("public", "CH", "EU", 1), policy.Decision{
			Decision: "redirect", Region: "eu-central-2", Rule: "dach-outside-eu", Jurisdiction: "DACH",
			Lang: "de", Greeting: "Hallo!", Reason: "dach-outside-eu"}},
		{"GermanFirstJurisdictionEU", "8.8.8.8", loc("public", "DE", "EU", 0), policy.Decision{
			Decision: "redirect", Region: "eu-central-2", Rule: "dach-outside-eu", Jurisdiction: "EU",
			Lang: "de", Greeting: "Hallo!", Reason: "dach-outside-eu"}},
		{"DACHWrongContinent", "8.8.8.8", loc("public", "AT", "AS", 0), policy.Decision{
			Decision: "deny", Rule: "default", Jurisdiction: "EU", Lang: "fr", Reason: "not-on-the-list"}},
		{"AmericasServeDefaultRegionEmpty", "8.8.8.8", loc("public", "BR", "SA", 0), policy.Decision{
			Decision: "serve", Rule: "americas", Lang: "fr", Greeting: "Bonjour !"}},
		{"LoopbackDenied", "127.0.0.1", loc("loopback", "", "", 0), policy.Decision{
			Decision: "deny", Rule: "loopback", Lang: "fr", Reason: "loopback"}},
		{"NoASN", "8.8.8.8", loc("public", "JP", "AS", 0), policy.Decision{
			Decision: "deny", Rule: "default", Lang: "fr", Reason: "not-on-the-list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Decide(netip.MustParseAddr(tt.addr), tt.loc)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Decide(%s, %+v) mismatch (-want +got):\n%s", tt.addr, tt.loc, d)
			}
		})
	}
}

func TestMinimalFile(t *testing.T) {
	p, err := policy.Parse("min.yaml", []byte("rules: []\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := policy.Decision{Decision: "serve", Rule: "default", Lang: "en", Greeting: "Hello!"}
	if got := p.Decide(netip.MustParseAddr("192.0.2.1"), loc("public", "DE", "EU", 0)); got != want {
		t.Errorf("Decide = %+v, want %+v", got, want)
	}
	p, err = policy.Parse("redirect.yaml", []byte("default: {decision: redirect, region: r1}\n# comment\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want = policy.Decision{Decision: "redirect", Region: "r1", Rule: "default", Lang: "en", Greeting: "Hello!", Reason: "default"}
	if got := p.Decide(netip.MustParseAddr("192.0.2.1"), geo.Location{}); got != want {
		t.Errorf("Decide = %+v, want %+v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"Empty", "", "f.yaml: empty rules file"},
		{"Syntax", "default: {decision: serve\nrules: [\n", "f.yaml:1: YAML: did not find expected"},
		{"ControlChar", "rules: [\x01]\n", "f.yaml: YAML: control characters"},
		{"Tab", "default:\n\t- x\n", "f.yaml:2: YAML: "},
		{"TwoDocuments", "rules: []\n---\nrules: []\n", "f.yaml:2: a second YAML document"},
		{"BadSecondDocument", "rules: []\n---\n[\n", "f.yaml"},
		{"TopNotMapping", "- a\n", "f.yaml:1: rules file: want a mapping, got a list"},
		{"UnknownTopKey", "rules: []\nlanguage: {DE: de}\n", `f.yaml:2: rules file: unknown key "language"`},
		{"DuplicateTopKey", "rules: []\nrules: []\n", `f.yaml:2: rules file: duplicate key "rules"`},
		{"NonScalarKey", "? [a]\n: b\n", "f.yaml:1: rules file: want a plain key"},
		{"JurisdictionsNotMapping", "jurisdictions: [EU]\n", "f.yaml:1: jurisdictions: want a mapping"},
		{"JurisdictionEmptyName", "jurisdictions: {'': [DE]}\n", "f.yaml:1: jurisdictions: empty name"},
		{"JurisdictionUnknownCountry", "jurisdictions:\n  EU: [DE, XY]\n", `f.yaml:2: jurisdiction EU: unknown country code "XY"`},
		{"JurisdictionLowerCase", "jurisdictions:\n  EU: [de]\n", `unknown country code "de"`},
		{"JurisdictionEmpty", "jurisdictions:\n  EU: []\n", "f.yaml:2: jurisdiction EU: empty list"},
		{"JurisdictionNull", "jurisdictions:\n  EU:\n", "jurisdiction EU: want a list, got nothing"},
		{"JurisdictionNested", "jurisdictions:\n  EU: [[DE]]\n", "jurisdiction EU: want a value, got a list"},
		{"DefaultLangBad", "default_lang: English\n", `default_lang: "English" is not a language code`},
		{"DefaultLangNull", "default_lang:\n", "default_lang: want a value, got nothing"},
		{"DefaultLangNoGreeting", "default_lang: fr\n", `f.yaml:1: greetings: no greeting for the default language "fr"`},
		{"GreetingsMissingEn", "greetings: {de: Hallo}\n", `f.yaml:1: greetings: no greeting for the default language "en"`},
		{"GreetingsNotMapping", "greetings: hello\n", "greetings: want a mapping"},
		{"GreetingBadLang", "greetings: {EN: Hello}\n", `greetings: "EN" is not a language code`},
		{"GreetingNotText", "greetings: {en: [a]}\n", "greeting en: want a value"},
		{"GreetingNewline", "greetings: {en: \"Hello\\nworld\"}\n", "f.yaml:1: greeting en: want one line"},
		{"GreetingEmpty", "greetings: {en: ''}\n", "greeting en: want one line"},
		{"LanguagesNotMapping", "languages: [de]\n", "languages: want a mapping"},
		{"LanguagesUnknownCountry", "languages: {GER: de}\n", `languages: unknown country code "GER"`},
		{"LanguagesBadLang", "languages: {DE: Deutsch}\n", `languages DE: "Deutsch" is not a language code`},
		{"LanguagesNoGreeting", "languages:\n  DE: de\n", `f.yaml:2: languages DE: no greeting for language "de"`},
		{"DefaultNotMapping", "default: serve\n", "default: want a mapping"},
		{"DefaultUnknownKey", "default: {decision: serve, regoin: x}\n", `default: unknown key "regoin"`},
		{"DefaultBadDecision", "default: {decision: allow}\n", `f.yaml:1: default: invalid decision "allow"`},
		{"DefaultNoDecision", "default: {region: x}\n", "default: missing decision"},
		{"DefaultDecisionList", "default: {decision: [serve]}\n", "default decision: want a value"},
		{"RedirectNoRegion", "default: {decision: redirect}\n", "default: redirect needs a region"},
		{"DenyWithRegion", "default: {decision: deny, region: x}\n", "default: deny takes no region"},
		{"ServeWithReason", "default: {decision: serve, reason: x}\n", "reason is for redirect and deny only"},
		{"RulesNotList", "rules: {a: b}\n", "f.yaml:1: rules: want a list"},
		{"RuleNotMapping", "rules:\n  - embargo\n", "f.yaml:2: rule: want a mapping"},
		{"RuleUnknownKey", "rules:\n  - name: a\n    if: {}\n", `f.yaml:3: rule: unknown key "if"`},
		{"RuleNoName", "rules:\n  - then: {decision: deny}\n", "f.yaml:2: rule: missing name"},
		{"RuleEmptyName", "rules:\n  - name: ' '\n    then: {decision: deny}\n", "rule name: want a non-empty"},
		{"RuleNameList", "rules:\n  - name: [a]\n", "rule name: want a value"},
		{"RuleNoThen", "rules:\n  - name: a\n    when: {country: [DE]}\n", `f.yaml:2: rule "a": missing then`},
		{"RuleBadThen", "rules:\n  - name: a\n    then: {decision: maybe}\n", `f.yaml:3: rule "a" then: invalid decision "maybe"`},
		{"RuleWhenNotMapping", "rules:\n  - name: a\n    when: [DE]\n    then: {decision: deny}\n", `rule "a" when: want a mapping`},
		{"RuleUnknownCondition", "rules:\n  - name: a\n    when: {city: [Berlin]}\n    then: {decision: deny}\n",
			`f.yaml:3: rule "a" when: unknown key "city" (want one of country, jurisdiction, continent, cidr, asn, class, geo)`},
		{"RuleUnknownGeoState", "rules:\n  - name: a\n    when: {geo: [failed]}\n    then: {decision: deny}\n",
			`f.yaml:3: rule "a": unknown geo lookup state "failed" (want one of error, ok)`},
		{"RuleEmptyGeo", "rules:\n  - name: a\n    when: {geo: []}\n    then: {decision: deny}\n", `f.yaml:3: rule "a" geo: empty list`},
		{"GeoErrorTwice", "rules:\n  - name: a\n    when: {geo: [error, ok]}\n    then: {decision: deny}\n" +
			"  - name: b\n    when: {geo: error, country: [DE]}\n    then: {decision: serve}\n",
			`f.yaml:5: rule "b" can never match: rule "a" (line 2) matches every client it would match`},
		{"RuleUnknownCountry", "rules:\n  - name: a\n    when: {country: [UK]}\n    then: {decision: deny}\n",
			`f.yaml:3: rule "a" country: unknown country code "UK"`},
		{"RuleEmptyCountry", "rules:\n  - name: a\n    when: {country: []}\n    then: {decision: deny}\n", `rule "a" country: empty list`},
		{"RuleUnknownJurisdiction", "rules:\n  - name: a\n    when: {jurisdiction: [EU]}\n    then: {decision: deny}\n",
			`f.yaml:3: rule "a": unknown jurisdiction "EU"`},
		{"RuleUnknownContinent", "rules:\n  - name: a\n    when: {continent: [Europe]}\n    then: {decision: deny}\n",
			`rule "a": unknown continent "Europe"`},
		{"RuleInvalidCIDR", "rules:\n  - name: a\n    when: {cidr: [10.0.0.0/33]}\n    then: {decision: deny}\n",
			`f.yaml:3: rule "a": invalid CIDR "10.0.0.0/33"`},
		{"RuleCIDRHostBits", "rules:\n  - name: a\n    when: {cidr: [10.0.0.1/8]}\n    then: {decision: deny}\n",
			"has host bits set (the network is 10.0.0.0/8)"},
		{"RuleCIDRMapped", "rules:\n  - name: a\n    when: {cidr: [\"::ffff:10.0.0.0/104\"]}\n    then: {decision: deny}\n",
			"is IPv4-mapped"},
		{"RuleASNZero", "rules:\n  - name: a\n    when: {asn: [0]}\n    then: {decision: deny}\n", `invalid AS number "0"`},
		{"RuleASNText", "rules:\n  - name: a\n    when: {asn: [ASX]}\n    then: {decision: deny}\n", `invalid AS number "ASX"`},
		{"RuleUnknownClass", "rules:\n  - name: a\n    when: {class: [lan]}\n    then: {decision: deny}\n", `rule "a": unknown class "lan"`},
		{"RuleDuplicateName", "rules:\n  - name: a\n    when: {country: [DE]}\n    then: {decision: deny}\n" +
			"  - name: a\n    when: {country: [FR]}\n    then: {decision: deny}\n", `f.yaml:5: rule "a": duplicate name (first at line 2)`},
		{"AfterCatchAll", "rules:\n  - name: all\n    then: {decision: serve}\n  - name: later\n    when: {country: [DE]}\n    then: {decision: deny}\n",
			`f.yaml:4: rule "later" can never match: rule "all" (line 2) has no conditions and matches every client`},
		{"AfterEmptyWhen", "rules:\n  - name: all\n    when: {}\n    then: {decision: serve}\n  - name: later\n    then: {decision: deny}\n",
			`f.yaml:5: rule "later" can never match: rule "all" (line 2) has no conditions`},
		{"AfterNullWhen", "rules:\n  - name: all\n    when:\n    then: {decision: serve}\n  - name: later\n    then: {decision: deny}\n",
			`rule "later" can never match`},
		{"Identical", "rules:\n  - name: a\n    when: {country: [DE, FR]}\n    then: {decision: deny}\n" +
			"  - name: b\n    when: {country: [FR, DE]}\n    then: {decision: serve}\n",
			`f.yaml:5: rule "b" can never match: rule "a" (line 2) matches every client it would match`},
		{"CountryInEarlierJurisdiction", "jurisdictions: {EU: [DE, FR]}\nrules:\n  - name: eu\n    when: {jurisdiction: [EU]}\n    then: {decision: deny}\n" +
			"  - name: de\n    when: {country: DE, asn: [1]}\n    then: {decision: serve}\n", `f.yaml:6: rule "de" can never match: rule "eu" (line 3)`},
		{"JurisdictionInEarlierCountries", "jurisdictions: {EU: [DE, FR]}\nrules:\n  - name: c\n    when: {country: [DE, FR, IT]}\n    then: {decision: deny}\n" +
			"  - name: eu\n    when: {jurisdiction: [EU]}\n    then: {decision: serve}\n", `rule "eu" can never match: rule "c"`},
		{"DisjointCountryAndJurisdiction", "jurisdictions: {EU: [DE]}\nrules:\n  - name: c\n    when: {country: [JP]}\n    then: {decision: deny}\n" +
			"  - name: never\n    when: {country: [US], jurisdiction: [EU]}\n    then: {decision: serve}\n", `rule "never" can never match`},
		{"NarrowerCIDR", "rules:\n  - name: wide\n    when: {cidr: [10.0.0.0/8, \"2001:db8::/32\"]}\n    then: {decision: deny}\n" +
			"  - name: narrow\n    when: {cidr: [10.1.0.0/16, \"2001:db8:1::/48\"], class: [private]}\n    then: {decision: serve}\n",
			`rule "narrow" can never match: rule "wide"`},
		{"SubsetEverything", "rules:\n  - name: wide\n    when: {continent: [EU, AS], asn: [1, 2], class: [public, private]}\n    then: {decision: deny}\n" +
			"  - name: narrow\n    when: {continent: EU, asn: 2, class: public, country: [DE]}\n    then: {decision: serve}\n",
			`rule "narrow" can never match: rule "wide"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse("f.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error containing %q", tt.in, p, tt.want)
			}
			var pe *policy.Error
			if !errors.As(err, &pe) {
				t.Errorf("Parse(%q) error %T is not a *policy.Error", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

// TestNotShadowed lists later rules that look like earlier ones but can
// match clients the earlier rules do not.
func TestNotShadowed(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"WiderCountries", "rules:\n  - name: a\n    when: {country: [DE]}\n    then: {decision: deny}\n  - name: b\n    when: {country: [DE, FR]}\n    then: {decision: serve}\n"},
		{"NoCountryKey", "rules:\n  - name: a\n    when: {country: [DE]}\n    then: {decision: deny}\n  - name: b\n    when: {asn: [1]}\n    then: {decision: serve}\n"},
		{"JurisdictionWider", "jurisdictions: {EU: [DE, FR]}\nrules:\n  - name: a\n    when: {country: [DE], jurisdiction: [EU]}\n    then: {decision: deny}\n  - name: b\n    when: {country: [DE, FR]}\n    then: {decision: serve}\n"},
		{"JurisdictionNotCovering", "jurisdictions: {EU: [DE, FR]}\nrules:\n  - name: a\n    when: {jurisdiction: [EU]}\n    then: {decision: deny}\n  - name: b\n    when: {country: [DE, JP]}\n    then: {decision: serve}\n"},
		{"ContinentMissing", "rules:\n  - name: a\n    when: {continent: [EU]}\n    then: {decision: deny}\n  - name: b\n    when: {country: [DE]}\n    then: {decision: serve}\n"},
		{"ContinentWider", "rules:\n  - name: a\n    when: {continent: [EU]}\n    then: {decision: deny}\n  - name: b\n    when: {continent: [EU, AS]}\n    then: {decision: serve}\n"},
		{"ASNMissing", "rules:\n  - name: a\n    when: {asn: [1]}\n    then: {decision: deny}\n  - name: b\n    when: {class: [public]}\n    then: {decision: serve}\n"},
		{"ClassWider", "rules:\n  - name: a\n    when: {class: [private]}\n    then: {decision: deny}\n  - name: b\n    when: {class: [private, loopback]}\n    then: {decision: serve}\n"},
		{"CIDRMissing", "rules:\n  - name: a\n    when: {cidr: [10.0.0.0/8]}\n    then: {decision: deny}\n  - name: b\n    when: {class: [private]}\n    then: {decision: serve}\n"},
		{"CIDRWider", "rules:\n  - name: a\n    when: {cidr: [10.0.0.0/16]}\n    then: {decision: deny}\n  - name: b\n    when: {cidr: [10.0.0.0/8]}\n    then: {decision: serve}\n"},
		{"CIDROtherFamily", "rules:\n  - name: a\n    when: {cidr: [10.0.0.0/8]}\n    then: {decision: deny}\n  - name: b\n    when: {cidr: [\"2001:db8::/32\"]}\n    then: {decision: serve}\n"},
		{"GeoMissing", "rules:\n  - name: a\n    when: {geo: [error]}\n    then: {decision: deny}\n  - name: b\n    when: {country: [DE]}\n    then: {decision: serve}\n"},
		{"GeoOtherState", "rules:\n  - name: a\n    when: {geo: [error], country: [KP]}\n    then: {decision: deny}\n  - name: b\n    when: {geo: ok, country: [KP]}\n    then: {decision: serve}\n"},
		{"CatchAllLast", "rules:\n  - name: a\n    when: {cidr: [10.0.0.0/8]}\n    then: {decision: deny}\n  - name: rest\n    then: {decision: serve}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := policy.Parse("f.yaml", []byte(tt.in)); err != nil {
				t.Errorf("Parse = %v, want success", err)
			}
		})
	}
}

func TestAliases(t *testing.T) {
	in := "jurisdictions:\n  EU: &eu [DE, FR]\nrules:\n  - name: a\n    when: {country: *eu}\n    then: {decision: deny}\n"
	p, err := policy.Parse("f.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse with an alias: %v", err)
	}
	if got := p.Decide(netip.MustParseAddr("192.0.2.1"), loc("public", "FR", "EU", 0)); got.Decision != policy.Deny {
		t.Errorf("Decide(FR) = %+v, want deny through the aliased list", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(good, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(good)
	if err != nil {
		t.Fatalf("Load(default rules copy): %v", err)
	}
	if p.Source() != good {
		t.Errorf("Source() = %q, want %q", p.Source(), good)
	}
	if got := p.Decide(netip.MustParseAddr("203.0.113.1"), loc("public", "AT", "EU", 0)); got.Rule != "eu-data-stays-in-eu" {
		t.Errorf("Decide(AT) rule = %q, want eu-data-stays-in-eu", got.Rule)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - name: x\n    when: {country: [ZZ]}\n    then: {decision: deny}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(bad); err == nil || err.Error() != bad+`:3: rule "x" country: unknown country code "ZZ" (want ISO 3166-1 alpha-2, upper case, e.g. DE)` {
		t.Errorf("Load(bad) = %v", err)
	}

	if _, err := policy.Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
	if _, err := policy.Load(dir); err == nil {
		t.Error("Load(a directory) succeeded, want error")
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", policy.MaxFileBytes)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want size error", err)
	}
}

// FuzzParse checks that Parse never panics, that every error names the
// file, and that an accepted policy decides without panicking.
func FuzzParse(f *testing.F) {
	f.Add(string(policy.DefaultRules())) // the embedded default
	f.Add(custom)                        // every condition key
	f.Add("rules: []\n")                 // minimal
	f.Add("a: &a [*a]\n")                // self-referencing alias
	f.Add("default: {decision: deny}\nrules:\n  - name: x\n")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := policy.Parse("fuzz.yaml", []byte(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not start with the file name", err)
			}
			return
		}
		for _, a := range []string{"203.0.113.1", "2001:db8::1", "10.0.0.1"} {
			d := p.Decide(netip.MustParseAddr(a), loc("public", "DE", "EU", 64500))
			if d.Decision != policy.Serve && d.Decision != policy.Redirect && d.Decision != policy.Deny {
				t.Fatalf("Decide = %+v: not a decision", d)
			}
			if d.Decision == policy.Deny && d.Greeting != "" {
				t.Fatalf("Decide = %+v: deny with a greeting", d)
			}
		}
	})
}
