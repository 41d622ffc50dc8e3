package geo

import (
	"sync"
	"testing"
)

func TestRecordCache(t *testing.T) {
	var c recordCache
	if _, ok := c.get(42); ok {
		t.Fatal("empty cache returned a record")
	}
	c.put(42, Location{CountryISO: "DE"})
	if loc, ok := c.get(42); !ok || loc.CountryISO != "DE" {
		t.Fatalf("get(42) = %+v, %v; want DE", loc, ok)
	}
	// Far more records than the cache holds: it stays bounded and every
	// record it still returns is the right one.
	const n = 10 * cacheShards * cacheShardMax
	for off := range uintptr(n) {
		c.put(off, Location{AccuracyRadius: uint16(off)})
	}
	total, hits := 0, 0
	for i := range c.shards {
		if l := len(c.shards[i].m); l > cacheShardMax {
			t.Errorf("shard %d holds %d records, want at most %d", i, l, cacheShardMax)
		} else {
			total += l
		}
	}
	for off := range uintptr(n) {
		if loc, ok := c.get(off); ok {
			hits++
			if loc.AccuracyRadius != uint16(off) {
				t.Fatalf("get(%d) = %+v: another record", off, loc)
			}
		}
	}
	if total == 0 || hits != total {
		t.Errorf("cache holds %d records, %d found", total, hits)
	}
}

func TestRecordCacheConcurrent(t *testing.T) {
	var c recordCache
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				off := uintptr(i*4 + g)
				c.put(off, Location{AccuracyRadius: uint16(off)})
				if loc, ok := c.get(off); ok && loc.AccuracyRadius != uint16(off) {
					t.Errorf("get(%d) = %+v: another record", off, loc)
					return
				}
			}
		}()
	}
	wg.Wait()
}
