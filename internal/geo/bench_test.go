package geo_test

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/oschwald/geoip2-golang/v2"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/policy"
)

// benchDB writes a City database of about 20000 /24 networks, each with
// its own record, spread over the IPv4 space (tree depth like a real
// database's) and returns its path and one address in each network,
// shuffled. The first 1000 are the hot set of most benchmarks; all of
// them are more records than geo's record cache holds.
func benchDB(b *testing.B) (string, []netip.Addr) {
	b.Helper()
	countries := []struct{ iso, name, cont, city, tz string }{
		{"DE", "Germany", "EU", "Berlin", "Europe/Berlin"},
		{"JP", "Japan", "AS", "Tokyo", "Asia/Tokyo"},
		{"US", "United States", "NA", "Columbus", "America/New_York"},
		{"BR", "Brazil", "SA", "São Paulo", "America/Sao_Paulo"},
		{"FR", "France", "EU", "Paris", "Europe/Paris"},
	}
	var es []mmdb.Entry
	var addrs []netip.Addr
	for i := range 20000 {
		// Spread over 1.0.0.0-126.255.255.0 with a multiplicative step.
		x := uint32(i) * 2654435761
		a := netip.AddrFrom4([4]byte{byte(1 + x>>24%126), byte(x >> 16), byte(x >> 8), 0})
		p := netip.PrefixFrom(a, 24)
		c := countries[i%len(countries)]
		es = append(es, mmdb.Entry{Prefix: p, CountryISO: c.iso, CountryName: c.name, ContinentCode: c.cont,
			RegionISO: "R1", RegionName: "Region", City: c.city + " " + strconv.Itoa(i), Lat: 10 + float64(i%50), Lon: 20 + float64(i%90)/7,
			AccuracyRadius: 20, TimeZone: c.tz})
		addrs = append(addrs, a.Next())
	}
	// mmdbwriter refuses duplicate prefixes through mmdb; drop them.
	seen := map[netip.Prefix]bool{}
	uniq := es[:0]
	for _, e := range es {
		if !seen[e.Prefix] {
			seen[e.Prefix] = true
			uniq = append(uniq, e)
		}
	}
	path := filepath.Join(b.TempDir(), "city.mmdb")
	if err := mmdb.WriteCityFile(path, uniq, built); err != nil {
		b.Fatal(err)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return path, addrs
}

const hot = 1000

// BenchmarkLookupAndDecide is the app's per-connection cost: geo.DB.Lookup
// plus policy.Policy.Decide with the default rules. Compare it with
// BenchmarkBareGeoip2 on the same database.
func BenchmarkLookupAndDecide(b *testing.B) {
	path, addrs := benchDB(b)
	db, err := geo.Open(geo.Config{CityPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	p := policy.Default()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		a := addrs[i%hot]
		d := p.Decide(a, db.Lookup(a))
		if d.Decision == "" {
			b.Fatal("no decision")
		}
	}
}

// BenchmarkLookup is geo.DB.Lookup alone.
func BenchmarkLookup(b *testing.B) {
	path, addrs := benchDB(b)
	db, err := geo.Open(geo.Config{CityPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if db.Lookup(addrs[i%hot]).CountryISO == "" {
			b.Fatal("not placed")
		}
	}
}

// BenchmarkLookupAndDecideCold cycles through all of benchDB's ~20000
// records, more than the record cache holds: mostly decoding.
func BenchmarkLookupAndDecideCold(b *testing.B) {
	path, addrs := benchDB(b)
	db, err := geo.Open(geo.Config{CityPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	p := policy.Default()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		a := addrs[i%len(addrs)]
		if p.Decide(a, db.Lookup(a)).Decision == "" {
			b.Fatal("no decision")
		}
	}
}

// BenchmarkBareGeoip2 is a bare geoip2-golang City lookup on the same
// database, the floor for BenchmarkLookupAndDecide.
func BenchmarkBareGeoip2(b *testing.B) {
	path, addrs := benchDB(b)
	r, err := geoip2.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c, err := r.City(addrs[i%hot])
		if err != nil || c.Country.ISOCode == "" {
			b.Fatal("not placed", err)
		}
	}
}

// BenchmarkClassify is the fallback for addresses no database places.
func BenchmarkClassify(b *testing.B) {
	addrs := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.0.0.1")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if geo.Classify(addrs[i%len(addrs)]) == "" {
			b.Fatal("no class")
		}
	}
}

// BenchmarkLookupParallel measures contention on the per-generation lock.
func BenchmarkLookupParallel(b *testing.B) {
	path, addrs := benchDB(b)
	db, err := geo.Open(geo.Config{CityPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			db.Lookup(addrs[i%hot])
			i++
		}
	})
}

// BenchmarkOpenMemory measures what holding a City database costs: the
// live heap after Open minus before, per byte of the file (about 1: the
// file is read whole into memory), and the file's size. A 60 MB
// GeoLite2-City costs file-bytes times heap/file-byte. Run it with
// -benchtime 3x: each iteration reads the whole file.
func BenchmarkOpenMemory(b *testing.B) {
	path, _ := benchDB(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var heap float64
	for b.Loop() {
		before := liveHeap()
		db, err := geo.Open(geo.Config{CityPath: path})
		if err != nil {
			b.Fatal(err)
		}
		heap = float64(liveHeap() - before)
		runtime.KeepAlive(db)
		db.Close()
	}
	b.ReportMetric(float64(fi.Size()), "file-bytes")
	b.ReportMetric(heap/float64(fi.Size()), "heap/file-byte")
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
