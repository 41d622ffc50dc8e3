// Package limit enforces per-source connection limits: how many connections
// one client address may hold open and how fast it may open new ones.
//
// The rate is a token bucket per address: it holds up to the burst, one
// token is taken per admitted connection and tokens come back at the rate.
// An address is tracked only while it matters: an entry whose connections
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
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by [Limiter.Acquire]; the server reports both as a deny
// with reason "rate-limited".
var (
	ErrTooManyConns = errors.New("limit: too many open connections from this address")
	ErrRateLimited  = errors.New("limit: connection rate exceeded for this address")
)

// DefaultMaxEntries is [Config.MaxEntries] when zero.
const DefaultMaxEntries = 1 << 20

// Config configures a [Limiter]. Zero values disable each limit.
type Config struct {
	MaxConnsPerIP int     // open connections per address
	RatePerIP     float64 // new connections per second per address (token bucket)
	BurstPerIP    int     // bucket size; defaults to max(1, RatePerIP)
	// MaxEntries caps the addresses tracked at once (zero:
	// [DefaultMaxEntries]). When it is reached, connections from new
	// addresses are admitted untracked rather than refused: the cap
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
	maxShard int // entries per shard
	shards   [shardCount]shard
}

type shard struct {
	mu  sync.Mutex
	m   map[netip.Addr]*entry
	ops int // admissions since the last sweep
}

type entry struct {
	open   int       // connections admitted and not released
	tokens float64   // bucket level at last
	last   time.Time // when tokens was computed
}

// New returns a limiter. Negative values count as zero.
func New(cfg Config) *Limiter {
	l := &Limiter{maxConns: max(cfg.MaxConnsPerIP, 0), rate: max(cfg.RatePerIP, 0)}
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
	return l
}

func noop() {}

// Acquire admits one connection from addr at now, or returns an error. On
// success the caller must call release exactly once when the connection ends
// (further calls do nothing). A refused connection takes no token and needs
// no release. An IPv4-mapped addr counts as the IPv4 address it holds.
func (l *Limiter) Acquire(addr netip.Addr, now time.Time) (release func(), err error) {
	if l.maxConns == 0 && l.rate == 0 {
		return noop, nil
	}
	addr = addr.Unmap()
	s := &l.shards[shardOf(addr)]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops++
	if s.ops >= max(len(s.m)/2, 64) {
		l.sweep(s, now)
	}
	e := s.m[addr]
	if e == nil {
		if len(s.m) >= l.maxShard {
			return noop, nil // untracked; see Config.MaxEntries
		}
		e = &entry{tokens: l.burst, last: now}
		s.m[addr] = e
	}
	if l.maxConns > 0 && e.open >= l.maxConns {
		return nil, ErrTooManyConns
	}
	if l.rate > 0 {
		e.refill(now, l.rate, l.burst)
		if e.tokens < 1 {
			return nil, ErrRateLimited
		}
		e.tokens--
	}
	e.open++
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			l.release(s, addr)
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

// Len returns the number of addresses tracked.
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
