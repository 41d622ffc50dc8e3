// Package policy decides what the app does for a located client: serve it,
// redirect it to the region that holds its data, or deny it, and in which
// language to greet it. Rules come from a YAML file, first match wins.
//
// CONTRACT STUB: the signatures below are the contract cmd/app and
// internal/server build against; the implementation is issue #3's.
package policy

import (
	"net/netip"

	"github.com/originlens/originlens/internal/geo"
)

// Decisions.
const (
	Serve    = "serve"
	Redirect = "redirect"
	Deny     = "deny"
)

// Decision is the outcome of [Policy.Decide].
type Decision struct {
	Decision     string // Serve, Redirect or Deny
	Region       string // the region that serves the client's data
	Rule         string // the name of the matching rule; "default" when none matched
	Jurisdiction string // the first jurisdiction that holds the client's country
	Lang         string // greeting language, e.g. "de"; "en" by default
	Greeting     string // greeting text in Lang
	Reason       string // why, for deny and redirect
}

// Policy is a parsed rules file. It is immutable and safe for concurrent use.
type Policy struct{}

// Default returns the embedded default rules.
func Default() *Policy { return &Policy{} }

// Load reads and checks a rules file. Errors name the file, line and reason.
func Load(path string) (*Policy, error) { return &Policy{}, nil }

// Decide applies the rules to a client address and its location.
func (p *Policy) Decide(addr netip.Addr, loc geo.Location) Decision {
	return Decision{Decision: Serve, Rule: "default", Lang: "en", Greeting: "Hello!"}
}
