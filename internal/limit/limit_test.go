package limit_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/limit"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// step is one Acquire at t0+at, or the release of the i-th admitted
// connection when release >= 0.
type step struct {
	addr    string
	at      time.Duration
	release int // index into the admitted connections; -1: acquire
	want    error
}

func acq(addr string, at time.Duration, want error) step {
	return step{addr: addr, at: at, release: -1, want: want}
}

func rel(i int) step { return step{release: i} }

func TestAcquire(t *testing.T) {
	a, b := "203.0.113.1", "203.0.113.2"
	tests := []struct {
		name  string
		cfg   limit.Config
		steps []step
	}{
		{"Disabled", limit.Config{}, []step{
			acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, nil), rel(0), rel(1),
		}},
		{"MaxConns", limit.Config{MaxConnsPerIP: 2}, []step{
			acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, limit.ErrTooManyConns),
			acq(b, 0, nil), // other address unaffected
			rel(0), acq(a, 0, nil), acq(a, 0, limit.ErrTooManyConns),
		}},
		{"MappedIsIPv4", limit.Config{MaxConnsPerIP: 1}, []step{
			acq(a, 0, nil), acq("::ffff:"+a, 0, limit.ErrTooManyConns),
		}},
		{"ReleaseTwiceCountsOnce", limit.Config{MaxConnsPerIP: 1}, []step{
			acq(a, 0, nil), acq(a, 0, limit.ErrTooManyConns), rel(0), rel(0),
			acq(a, 0, nil), acq(a, 0, limit.ErrTooManyConns),
		}},
		{"RateBurst", limit.Config{RatePerIP: 2, BurstPerIP: 3}, []step{
			acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, limit.ErrRateLimited),
			acq(b, 0, nil),
			acq(a, 400*time.Millisecond, limit.ErrRateLimited), // 0.8 token
			acq(a, 500*time.Millisecond, nil),                  // 1 token
			acq(a, 500*time.Millisecond, limit.ErrRateLimited),
			acq(a, 10*time.Second, nil), acq(a, 10*time.Second, nil), acq(a, 10*time.Second, nil), // refilled to burst, not more
			acq(a, 10*time.Second, limit.ErrRateLimited),
		}},
		{"RateDefaultBurst", limit.Config{RatePerIP: 0.5}, []step{
			acq(a, 0, nil), acq(a, time.Second, limit.ErrRateLimited), acq(a, 2*time.Second, nil),
		}},
		{"RateDefaultBurstIsRate", limit.Config{RatePerIP: 3}, []step{
			acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, nil), acq(a, 0, limit.ErrRateLimited),
		}},
		{"ClockBackwards", limit.Config{RatePerIP: 1}, []step{
			acq(a, 10*time.Second, nil), acq(a, 0, limit.ErrRateLimited), acq(a, 11*time.Second, nil),
		}},
		{"ConnsCheckedBeforeRate", limit.Config{MaxConnsPerIP: 1, RatePerIP: 1, BurstPerIP: 2}, []step{
			acq(a, 0, nil), acq(a, 0, limit.ErrTooManyConns), // no token taken
			rel(0), acq(a, 0, nil), rel(1), acq(a, 0, limit.ErrRateLimited),
		}},
		{"IPv6Full128", limit.Config{MaxConnsPerIP: 1, PrefixV6: 128}, []step{
			acq("2001:db8::1", 0, nil), acq("2001:db8::1", 0, limit.ErrTooManyConns), acq("2001:db8::2", 0, nil),
		}},
		// Issue #13.8: one host picks a new address in its /64 for each
		// connection; by default the /64 is the source.
		{"IPv6Default64", limit.Config{MaxConnsPerIP: 2}, []step{
			acq("2001:db8:1:2::1", 0, nil), acq("2001:db8:1:2:ffff:ffff:ffff:ffff", 0, nil),
			acq("2001:db8:1:2:abcd::9", 0, limit.ErrTooManyConns),
			acq("2001:db8:1:3::1", 0, nil), // the next /64 is another source
			rel(0), acq("2001:db8:1:2::77", 0, nil),
		}},
		{"IPv6RateBy64", limit.Config{RatePerIP: 1, BurstPerIP: 1}, []step{
			acq("2001:db8:1:2::1", 0, nil), acq("2001:db8:1:2::2", 0, limit.ErrRateLimited),
			acq("2001:db8:1:2::3", 500*time.Millisecond, limit.ErrRateLimited),
			acq("2001:db8:1:2::4", time.Second, nil), acq("2001:db8:1:3::1", time.Second, nil),
		}},
		{"IPv6Prefix48", limit.Config{MaxConnsPerIP: 1, PrefixV6: 48}, []step{
			acq("2001:db8:1:2::1", 0, nil), acq("2001:db8:1:ffff::1", 0, limit.ErrTooManyConns), acq("2001:db8:2::1", 0, nil),
		}},
		{"IPv6ZoneDropped", limit.Config{MaxConnsPerIP: 1}, []step{
			acq("fe80::1%eth0", 0, nil), acq("fe80::2%eth1", 0, limit.ErrTooManyConns),
		}},
		{"IPv4Default32", limit.Config{MaxConnsPerIP: 1}, []step{
			acq("198.51.100.1", 0, nil), acq("198.51.100.2", 0, nil), acq("198.51.100.1", 0, limit.ErrTooManyConns),
		}},
		{"IPv4Prefix24", limit.Config{MaxConnsPerIP: 2, PrefixV4: 24}, []step{
			acq("198.51.100.1", 0, nil), acq("::ffff:198.51.100.200", 0, nil), acq("198.51.100.3", 0, limit.ErrTooManyConns),
			acq("198.51.101.1", 0, nil),
		}},
		{"FamiliesApart", limit.Config{MaxConnsPerIP: 1, PrefixV4: 1, PrefixV6: 1}, []step{
			acq("0.0.0.1", 0, nil), acq("::1", 0, nil), acq("127.0.0.1", 0, limit.ErrTooManyConns),
			acq("ffff::1", 0, nil), // 0xffff and ::1 differ in the first bit
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustNew(t, tt.cfg)
			var releases []func()
			for i, s := range tt.steps {
				if s.release >= 0 {
					releases[s.release]()
					continue
				}
				addr := netip.MustParseAddr(s.addr)
				key, release, err := l.Acquire(addr, t0.Add(s.at))
				if !errors.Is(err, s.want) || (err == nil) != (s.want == nil) {
					t.Fatalf("step %d: Acquire(%s, +%v) = %v, want %v", i, s.addr, s.at, err, s.want)
				}
				want := l.Key(addr)
				if tt.cfg.MaxConnsPerIP == 0 && tt.cfg.RatePerIP == 0 {
					want = netip.Prefix{} // no limit, no source
				} else if !want.Contains(addr.Unmap().WithZone("")) {
					t.Fatalf("step %d: Key(%s) = %v does not contain the address", i, s.addr, want)
				}
				if key != want {
					t.Fatalf("step %d: Acquire(%s) key %v, want %v", i, s.addr, key, want)
				}
				if err == nil {
					if release == nil {
						t.Fatalf("step %d: Acquire returned a nil release", i)
					}
					releases = append(releases, release)
				}
			}
		})
	}
}

func mustNew(t testing.TB, cfg limit.Config) *limit.Limiter {
	t.Helper()
	l, err := limit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestKey(t *testing.T) {
	tests := []struct {
		v4, v6 int
		addr   string
		want   string
	}{
		{0, 0, "203.0.113.77", "203.0.113.77/32"},
		{0, 0, "::ffff:203.0.113.77", "203.0.113.77/32"},
		{0, 0, "2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"},
		{0, 0, "fe80::1%eth0", "fe80::/64"},
		{24, 56, "203.0.113.77", "203.0.113.0/24"},
		{24, 56, "2001:db8:aa:bb:1:2:3:4", "2001:db8:aa::/56"},
		{32, 128, "2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb:1:2:3:4/128"},
		{1, 1, "255.1.1.1", "128.0.0.0/1"},
	}
	for _, tt := range tests {
		l := mustNew(t, limit.Config{MaxConnsPerIP: 1, PrefixV4: tt.v4, PrefixV6: tt.v6})
		if got := l.Key(netip.MustParseAddr(tt.addr)); got.String() != tt.want {
			t.Errorf("/%d /%d: Key(%s) = %v, want %s", tt.v4, tt.v6, tt.addr, got, tt.want)
		}
	}
	if got := mustNew(t, limit.Config{MaxConnsPerIP: 1}).Key(netip.Addr{}); got.IsValid() {
		t.Errorf("Key(zero Addr) = %v, want the zero Prefix", got)
	}
	if key, _, _ := mustNew(t, limit.Config{}).Acquire(netip.MustParseAddr("2001:db8::1"), t0); key.IsValid() {
		t.Errorf("Acquire with no limit: key %v, want the zero Prefix", key)
	}
}

func TestNewRejectsBadPrefix(t *testing.T) {
	for _, cfg := range []limit.Config{{PrefixV4: 33}, {PrefixV4: -1}, {PrefixV6: 129}, {PrefixV6: -64}} {
		if _, err := limit.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestIdleEntriesEvicted(t *testing.T) {
	t.Run("ConnsOnlyDroppedOnRelease", func(t *testing.T) {
		l := mustNew(t, limit.Config{MaxConnsPerIP: 3})
		var rs []func()
		for i := range 100 {
			_, r, err := l.Acquire(addrN(i), t0)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		if got := l.Len(); got != 100 {
			t.Errorf("Len with 100 open = %d, want 100", got)
		}
		for _, r := range rs {
			r()
		}
		if got := l.Len(); got != 0 {
			t.Errorf("Len after releasing all = %d, want 0", got)
		}
	})
	t.Run("RateSweptWhenFull", func(t *testing.T) {
		l := mustNew(t, limit.Config{RatePerIP: 10, BurstPerIP: 10})
		for i := range 5000 {
			_, r, err := l.Acquire(addrN(i), t0)
			if err != nil {
				t.Fatal(err)
			}
			r()
		}
		if got := l.Len(); got < 4000 {
			t.Errorf("Len right after 5000 addresses = %d, want them tracked (buckets not full yet)", got)
		}
		// A second later every bucket is full: the next admissions sweep.
		later := t0.Add(time.Second)
		for i := range 5000 {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i), 15: 1}) // one per /64
			_, r, err := l.Acquire(a, later)
			if err != nil {
				t.Fatalf("Acquire %d: %v", i, err)
			}
			r()
			later = later.Add(100 * time.Millisecond)
		}
		// Each shard sweeps after max(64, half its size) admissions: what
		// remains is at most 64 recent entries per shard, not the 10000 seen.
		if got := l.Len(); got > 64*64 {
			t.Errorf("Len after sweeps = %d, want at most %d", got, 64*64)
		}
		l.Sweep(later.Add(time.Second))
		if got := l.Len(); got != 0 {
			t.Errorf("Len after Sweep = %d, want 0", got)
		}
	})
	t.Run("OpenAndEmptyBucketKept", func(t *testing.T) {
		l := mustNew(t, limit.Config{MaxConnsPerIP: 1, RatePerIP: 1})
		_, open, err := l.Acquire(addrN(1), t0)
		if err != nil {
			t.Fatal(err)
		}
		_, r, err := l.Acquire(addrN(2), t0)
		if err != nil {
			t.Fatal(err)
		}
		r()
		l.Sweep(t0.Add(100 * time.Millisecond))
		if got := l.Len(); got != 2 {
			t.Errorf("Len = %d, want 2 (one open, one bucket still refilling)", got)
		}
		if _, _, err := l.Acquire(addrN(2), t0.Add(200*time.Millisecond)); !errors.Is(err, limit.ErrRateLimited) {
			t.Errorf("Acquire after Sweep = %v, want ErrRateLimited (bucket kept)", err)
		}
		open()
		l.Sweep(t0.Add(2 * time.Second))
		if got := l.Len(); got != 0 {
			t.Errorf("Len after release and refill = %d, want 0", got)
		}
	})
}

func TestMaxEntries(t *testing.T) {
	l := mustNew(t, limit.Config{MaxConnsPerIP: 1, MaxEntries: 64}) // one per shard
	admitted := 0
	for i := range 1000 {
		if _, r, err := l.Acquire(addrN(i), t0); err == nil {
			admitted++
			defer r()
		}
	}
	if admitted != 1000 {
		t.Errorf("admitted %d of 1000 new addresses, want all (untracked past the cap)", admitted)
	}
	if got := l.Len(); got > 64 {
		t.Errorf("Len = %d, want at most MaxEntries 64", got)
	}
}

// TestConcurrent hammers a few addresses from many goroutines (run with
// -race) and checks that no address ever holds more than the cap.
func TestConcurrent(t *testing.T) {
	const maxConns = 3
	l := mustNew(t, limit.Config{MaxConnsPerIP: maxConns, RatePerIP: 1e6, BurstPerIP: 1000})
	addrs := []netip.Addr{addrN(1), addrN(2), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("::ffff:10.0.0.1")}
	var open [4]atomic.Int32
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	var over atomic.Value
	deadline := time.Now().Add(5 * time.Second)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
				k := (g + i) % len(addrs)
				if k == 3 {
					k = 0 // ::ffff:10.0.0.1 is 10.0.0.1, addrN(1) is 10.0.0.1 too
				}
				_, r, err := l.Acquire(addrs[(g+i)%len(addrs)], time.Now())
				if err != nil {
					refused.Add(1)
					continue
				}
				admitted.Add(1)
				if n := open[k].Add(1); n > maxConns {
					over.Store(fmt.Sprintf("address %v had %d open", addrs[k], n))
				}
				open[k].Add(-1)
				r()
			}
		}()
	}
	wg.Wait()
	if v := over.Load(); v != nil {
		t.Error(v)
	}
	if admitted.Load() == 0 {
		t.Error("nothing admitted")
	}
	l.Sweep(time.Now().Add(time.Second)) // every bucket full again
	if got := l.Len(); got != 0 {
		t.Errorf("Len after all released and Sweep = %d, want 0", got)
	}
	t.Logf("admitted %d, refused %d", admitted.Load(), refused.Load())
}
