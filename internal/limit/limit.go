// Package limit enforces per-source connection limits: how many connections
// one client address may hold open and how fast it may open new ones.
//
// CONTRACT STUB: the signatures below are the contract internal/server
// builds against; the implementation is issue #3's.
package limit

import (
	"errors"
	"net/netip"
	"time"
)

// Errors returned by [Limiter.Acquire]; the server reports both as a deny
// with reason "rate-limited".
var (
	ErrTooManyConns = errors.New("limit: too many open connections from this address")
	ErrRateLimited  = errors.New("limit: connection rate exceeded for this address")
)

// Config configures a [Limiter]. Zero values disable each limit.
type Config struct {
	MaxConnsPerIP int     // open connections per address
	RatePerIP     float64 // new connections per second per address (token bucket)
	BurstPerIP    int     // bucket size; defaults to max(1, RatePerIP)
}

// Limiter is safe for concurrent use.
type Limiter struct{}

// New returns a limiter.
func New(cfg Config) *Limiter { return &Limiter{} }

// Acquire admits one connection from addr at now, or returns an error. On
// success the caller must call release exactly once when the connection ends.
func (l *Limiter) Acquire(addr netip.Addr, now time.Time) (release func(), err error) {
	return func() {}, nil
}
