package geo

import "sync"

// Cache bounds: a database generation keeps at most cacheShards *
// cacheShardMax decoded records (16384, a few MiB). A full shard is
// emptied and refills with what is looked up next, so the cache follows
// the traffic without bookkeeping on the hot path.
const (
	cacheShards   = 16
	cacheShardMax = 1024
)

// recordCache maps a record's offset in a database's data section to the
// decoded record. Offsets identify records only within one file, so each
// generation has its own cache. It is safe for concurrent use; its zero
// value is empty and ready.
type recordCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[uintptr]Location
}

func (c *recordCache) shard(off uintptr) *cacheShard {
	// Records are variable-length and laid out sequentially: mix the bits
	// so neighbours spread over the shards.
	return &c.shards[(off*0x9E3779B97F4A7C15)>>60%cacheShards]
}

func (c *recordCache) get(off uintptr) (Location, bool) {
	s := c.shard(off)
	s.mu.RLock()
	loc, ok := s.m[off]
	s.mu.RUnlock()
	return loc, ok
}

func (c *recordCache) put(off uintptr, loc Location) {
	s := c.shard(off)
	s.mu.Lock()
	if s.m == nil || len(s.m) >= cacheShardMax {
		s.m = make(map[uintptr]Location, 64)
	}
	s.m[off] = loc
	s.mu.Unlock()
}
