package geo_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/policy"
)

// bigEntries is cityEntries plus n filler /24 networks outside the
// documentation ranges, so that its file is much larger than cityEntries'.
func bigEntries(n int) []mmdb.Entry {
	es := append([]mmdb.Entry(nil), cityEntries...)
	seen := map[netip.Prefix]bool{}
	for i := range n {
		x := uint32(i) * 2654435761
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + x>>24%90), byte(x >> 16), byte(x >> 8), 0}), 24)
		if seen[p] {
			continue
		}
		seen[p] = true
		es = append(es, mmdb.Entry{Prefix: p, CountryISO: "BR", CountryName: "Brazil", ContinentCode: "SA",
			City: fmt.Sprintf("City %d", i), Lat: -23.5, Lon: -46.6, TimeZone: "America/Sao_Paulo"})
	}
	return es
}

// answer is what the app takes from a lookup: the location and the
// decision of the default rules.
type answer struct {
	loc geo.Location
	d   policy.Decision
}

// TestWriteInPlaceWhileServing rewrites the database file in place, every
// way an operator might (truncate, cp over it in chunks, overwrite a
// larger file with a smaller one, write half then the rest), while
// goroutines look addresses up and Watch polls every millisecond. The
// process must not crash (with a memory-mapped file it died of SIGBUS),
// and every answer must be one that a complete database gives: never the
// "unplaced, served" of a file seen half-written. Run it with -race.
func TestWriteInPlaceWhileServing(t *testing.T) {
	dir := t.TempDir()
	big := cityBytes(t, bigEntries(6000), built)
	small := cityBytes(t, withCountry("AT"), built.Add(time.Hour))
	if len(small)*10 > len(big) {
		t.Fatalf("the small database (%d bytes) is not much smaller than the big one (%d)", len(small), len(big))
	}
	path := filepath.Join(dir, "city.mmdb")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{
		netip.MustParseAddr("198.51.100.1"), // KP in both: denied by the embargo
		netip.MustParseAddr("203.0.113.7"),  // DE (big) or AT (small)
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("2001:db8:f::1"),
		netip.MustParseAddr("8.8.8.8"),
	}
	p := policy.Default()
	// What each complete database answers, from DBs of their own.
	valid := map[netip.Addr][]answer{}
	for name, data := range map[string][]byte{"big": big, "small": small} {
		f := filepath.Join(dir, name+".mmdb")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ref := open(t, geo.Config{CityPath: f})
		for _, a := range addrs {
			loc := ref.Lookup(a)
			valid[a] = append(valid[a], answer{loc, p.Decide(a, loc)})
		}
	}
	if kp := valid[addrs[0]]; kp[0].d.Decision != policy.Deny || kp[1].d.Decision != policy.Deny {
		t.Fatalf("198.51.100.1 is not denied by both databases: %+v", kp)
	}

	reg := prometheus.NewRegistry()
	db := open(t, geo.Config{CityPath: path, Registerer: reg, ReloadInterval: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // failure bound only
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = db.Watch(ctx) })

	stop := make(chan struct{})
	type result struct {
		n   int
		bad []string
	}
	results := make(chan result, 4)
	for w := range 4 {
		wg.Go(func() {
			var r result
			for i := 0; r.n < 5_000_000; i++ { // bounded even if stop never came
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				a := addrs[(i+w)%len(addrs)]
				loc := db.Lookup(a)
				got := answer{loc, p.Decide(a, loc)}
				r.n++
				if got != valid[a][0] && got != valid[a][1] && len(r.bad) < 5 {
					r.bad = append(r.bad, fmt.Sprintf("%v: %+v, which no complete database gives (want %+v or %+v)",
						a, got, valid[a][0], valid[a][1]))
				}
			}
			results <- r
		})
	}

	// in writes data into the file at off without truncating it, in n
	// chunks, reloading after each.
	in := func(data []byte, off int64, n int) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		step := (len(data) + n - 1) / n
		for i := 0; i < len(data); i += step {
			if _, err := f.WriteAt(data[i:min(i+step, len(data))], off+int64(i)); err != nil {
				t.Fatal(err)
			}
			_ = db.Reload() // a partial file is refused, and that is counted
		}
	}
	truncate := func(size int64) {
		t.Helper()
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		_ = db.Reload()
	}
	// settle makes sure the last write is seen as a change (a coarse
	// modification time could hide it) and waits for the database
	// placing 203.0.113.7 in cc.
	mtime := time.Now()
	settle := func(cc string) {
		t.Helper()
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for db.Lookup(addrs[1]).CountryISO != cc {
			if time.Now().After(deadline) {
				t.Fatalf("the rewritten database placing 203.0.113.7 in %s was not adopted", cc)
			}
			_ = db.Reload()
			time.Sleep(time.Millisecond)
		}
	}

	// `: > city.mmdb`, then `cat small > city.mmdb` in pieces.
	truncate(0)
	in(small, 0, 7)
	settle("AT")
	// `cp big city.mmdb` over the small one, in pieces.
	truncate(0)
	in(big, 0, 16)
	settle("DE")
	// The smaller file written over the larger one without truncating
	// first, then truncated to its size.
	in(small, 0, 3)
	truncate(int64(len(small)))
	settle("AT")
	// Half of the big file over the small one, then the rest.
	in(big[:len(big)/2], 0, 1)
	in(big[len(big)/2:], int64(len(big)/2), 1)
	settle("DE")
	// Garbage, then truncated halfway, then the big file again.
	in([]byte("this is not a MaxMind DB file"), 0, 1)
	truncate(int64(len(big) / 2))
	truncate(0)
	in(big, 0, 4)
	settle("DE")

	close(stop)
	total := 0
	for range 4 {
		r := <-results
		for _, b := range r.bad {
			t.Error(b)
		}
		total += r.n
	}
	cancel()
	wg.Wait()
	if total == 0 {
		t.Fatal("no lookups ran while the file was rewritten")
	}
	if got := metric(t, reg, "originlens_geo_reload_errors_total", "city"); got < 1 {
		t.Errorf("reload errors = %v, want >= 1 (the partial files)", got)
	}
	t.Logf("%d lookups while the file was rewritten in place; %v partial files refused, %v adopted", total,
		metric(t, reg, "originlens_geo_reload_errors_total", "city"), metric(t, reg, "originlens_geo_reloads_total", "city"))
}
