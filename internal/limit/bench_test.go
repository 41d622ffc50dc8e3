package limit_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/limit"
)

// BenchmarkAcquireRelease is the per-connection cost of both limits.
func BenchmarkAcquireRelease(b *testing.B) {
	l := mustNew(b, limit.Config{MaxConnsPerIP: 100, RatePerIP: 1e9, BurstPerIP: 1e6})
	addrs := make([]netip.Addr, 1024)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, r, err := l.Acquire(addrs[i%len(addrs)], now)
			if err != nil {
				b.Fatal(err)
			}
			r()
			i++
		}
	})
}
