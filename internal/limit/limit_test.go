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
		{"IPv6", limit.Config{MaxConnsPerIP: 1}, []step{
			acq("2001:db8::1", 0, nil), acq("2001:db8::1", 0, limit.ErrTooManyConns), acq("2001:db8::2", 0, nil),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := limit.New(tt.cfg)
			var releases []func()
			for i, s := range tt.steps {
				if s.release >= 0 {
					releases[s.release]()
					continue
				}
				release, err := l.Acquire(netip.MustParseAddr(s.addr), t0.Add(s.at))
				if !errors.Is(err, s.want) || (err == nil) != (s.want == nil) {
					t.Fatalf("step %d: Acquire(%s, +%v) = %v, want %v", i, s.addr, s.at, err, s.want)
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

func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestIdleEntriesEvicted(t *testing.T) {
	t.Run("ConnsOnlyDroppedOnRelease", func(t *testing.T) {
		l := limit.New(limit.Config{MaxConnsPerIP: 3})
		var rs []func()
		for i := range 100 {
			r, err := l.Acquire(addrN(i), t0)
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
		l := limit.New(limit.Config{RatePerIP: 10, BurstPerIP: 10})
		for i := range 5000 {
			r, err := l.Acquire(addrN(i), t0)
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
			r, err := l.Acquire(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), later)
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
		l := limit.New(limit.Config{MaxConnsPerIP: 1, RatePerIP: 1})
		open, err := l.Acquire(addrN(1), t0)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Acquire(addrN(2), t0)
		if err != nil {
			t.Fatal(err)
		}
		r()
		l.Sweep(t0.Add(100 * time.Millisecond))
		if got := l.Len(); got != 2 {
			t.Errorf("Len = %d, want 2 (one open, one bucket still refilling)", got)
		}
		if _, err := l.Acquire(addrN(2), t0.Add(200*time.Millisecond)); !errors.Is(err, limit.ErrRateLimited) {
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
	l := limit.New(limit.Config{MaxConnsPerIP: 1, MaxEntries: 64}) // one per shard
	admitted := 0
	for i := range 1000 {
		if r, err := l.Acquire(addrN(i), t0); err == nil {
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
	l := limit.New(limit.Config{MaxConnsPerIP: maxConns, RatePerIP: 1e6, BurstPerIP: 1000})
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
				r, err := l.Acquire(addrs[(g+i)%len(addrs)], time.Now())
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
