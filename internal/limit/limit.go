// Package limit enforces per-source connection limits: how many connections
// one source may hold open and how fast it may open new ones.
//
// A source is a prefix of the client address, one length per family
// ([Config.PrefixV4], default /32, and [Config.PrefixV6], default /64): an
// IPv6 host usually holds a whole /64 and can pick a new address in it for
// every connection, so keying on the /128 would limit nothing.
//
// The rate is a token bucket per source: it holds up to the burst, one
// token is taken per admitted connection and tokens come back at the rate.
// A source is tracked only while it matters: an entry whose connections
// are all closed and whose bucket is full again behaves exactly like a new
// one, so it is dropped, on release (no rate limit) or by a sweep of its
// shard that runs after half as many admissions as the shard holds
// entries (amortised constant time). Memory is therefore proportional to the
// addresses active within one bucket refill time, and capped by
// [Config.MaxEntries].
package limit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by [Limiter.Acquire]; the server reports both as a deny
// with reason "rate-limited".
var (
	ErrTooManyConns = errors.New("limit: too many open connections from this source")
	ErrRateLimited  = errors.New("limit: connection rate exceeded for this source")
)

// Defaults for the zero values of [Config].
const (
	DefaultMaxEntries = 1 << 20
	DefaultPrefixV4   = 32 // one IPv4 address
	DefaultPrefixV6   = 64 // one IPv6 subnet, what a single host or home usually holds
)

// Config configures a [Limiter]. Zero values disable each limit.
type Config struct {
	MaxConnsPerIP int     // open connections per source
	RatePerIP     float64 // new connections per second per source (token bucket)
	BurstPerIP    int     // bucket size; defaults to max(1, RatePerIP)
	// PrefixV4 and PrefixV6 are the prefix lengths that make a source:
	// addresses that share them are counted together. Zero: /32 and /64.
	PrefixV4, PrefixV6 int
	// MaxEntries caps the sources tracked at once (zero:
	// [DefaultMaxEntries]). When it is reached, connections from new
	// sources are admitted untracked rather than refused: the cap
	// protects the limiter's memory, the server's global connection
	// limit protects the server.
	MaxEntries int
}

const shardCount = 64

// Limiter is safe for concurrent use. Its methods never block other than
// on a short per-shard mutex.
type Limiter struct {
	maxConns int
	rate     float64 // tokens per second; 0: no rate limit
	burst    float64
	bits4    int // source prefix lengths
	bits6    int
	maxShard int // entries per shard
	shards   [shardCount]shard
}

type shard struct {
	mu  sync.Mutex
	m   map[netip.Addr]*entry // by the source prefix's (masked) address
	ops int                   // admissions since the last sweep
}

type entry struct {
	open   int       // connections admitted and not released
	tokens float64   // bucket level at last
	last   time.Time // when tokens was computed
}

// New returns a limiter. Negative limits count as zero; a prefix length
// outside 0 (the default) to 32 or 128 is an error.
func New(cfg Config) (*Limiter, error) {
	l := &Limiter{maxConns: max(cfg.MaxConnsPerIP, 0), rate: max(cfg.RatePerIP, 0)}
	var err error
	if l.bits4, err = prefixLen(cfg.PrefixV4, DefaultPrefixV4, 32); err != nil {
		return nil, fmt.Errorf("limit: IPv4 %w", err)
	}
	if l.bits6, err = prefixLen(cfg.PrefixV6, DefaultPrefixV6, 128); err != nil {
		return nil, fmt.Errorf("limit: IPv6 %w", err)
	}
	l.burst = float64(cfg.BurstPerIP)
	if l.burst <= 0 {
		l.burst = max(1, l.rate)
	}
	maxEntries := cfg.MaxEntries
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	l.maxShard = max(1, maxEntries/shardCount)
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*entry)
	}
	return l, nil
}

// prefixLen returns n, or def when n is zero, checking that it is a prefix
// length of at most hi bits.
func prefixLen(n, def, hi int) (int, error) {
	if n == 0 {
		return def, nil
	}
	if n < 1 || n > hi {
		return 0, fmt.Errorf("source prefix length must be 1-%d, got %d", hi, n)
	}
	return n, nil
}

func noop() {}

// Key returns the source addr counts as: its prefix of the configured
// length for its family. An IPv4-mapped addr counts as the IPv4 address it
// holds; a zone is dropped. The zero Addr gives the zero Prefix.
func (l *Limiter) Key(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := l.bits6
	if addr.Is4() {
		bits = l.bits4
	}
	p, _ := addr.Prefix(bits) // bits is in range for the family; the zero Addr fails to the zero Prefix
	return p
}

// Acquire admits one connection from addr at now, or returns an error. key
// is the source it was counted as ([Limiter.Key]), refused or not, or the
// zero Prefix when no limit is configured. On success the caller must call
// release exactly once when the connection ends (further calls do
// nothing). A refused connection takes no token and needs no release.
func (l *Limiter) Acquire(addr netip.Addr, now time.Time) (key netip.Prefix, release func(), err error) {
	if l.maxConns == 0 && l.rate == 0 {
		return netip.Prefix{}, noop, nil
	}
	key = l.Key(addr)
	src := key.Addr()
	s := &l.shards[shardOf(src)]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops++
	if s.ops >= max(len(s.m)/2, 64) {
		l.sweep(s, now)
	}
	e := s.m[src]
	if e == nil {
		if len(s.m) >= l.maxShard {
			return key, noop, nil // untracked; see Config.MaxEntries
		}
		e = &entry{tokens: l.burst, last: now}
		s.m[src] = e
	}
	if l.maxConns > 0 && e.open >= l.maxConns {
		return key, nil, ErrTooManyConns
	}
	if l.rate > 0 {
		e.refill(now, l.rate, l.burst)
		if e.tokens < 1 {
			return key, nil, ErrRateLimited
		}
		e.tokens--
	}
	e.open++
	var done atomic.Bool
	return key, func() {
		if done.CompareAndSwap(false, true) {
			l.release(s, src)
		}
	}, nil
}

func (l *Limiter) release(s *shard, addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[addr]
	if e == nil {
		return // unreachable: entries with open connections are kept
	}
	e.open--
	if e.open == 0 && l.rate == 0 {
		delete(s.m, addr)
	}
}

// refill adds the tokens earned since e.last, up to burst. A clock that
// went backwards earns nothing.
func (e *entry) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(e.last); d > 0 {
		e.tokens = min(burst, e.tokens+d.Seconds()*rate)
		e.last = now
	}
}

// sweep drops the entries of s that are as good as new at now. s.mu must
// be held.
func (l *Limiter) sweep(s *shard, now time.Time) {
	s.ops = 0
	for a, e := range s.m {
		if e.open > 0 {
			continue
		}
		if l.rate > 0 {
			e.refill(now, l.rate, l.burst)
			if e.tokens < l.burst {
				continue
			}
		}
		delete(s.m, a)
	}
}

// Sweep drops every idle entry now. Acquire sweeps as it goes; Sweep is for
// callers that want memory back after traffic stops.
func (l *Limiter) Sweep(now time.Time) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.sweep(s, now)
		s.mu.Unlock()
	}
}

// Len returns the number of sources tracked.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	x := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])
	x *= 0x9E3779B97F4A7C15
	return int(x >> (64 - 6)) // shardCount == 1<<6
}
