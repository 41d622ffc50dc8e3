package event

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// ids makes the events' ids: UUIDv7 (RFC 9562), laid out as
// github.com/google/uuid's NewV7 lays them out, which made them until
// now: unix_ts_ms (48 bits), version 7, rand_a holding the sub-millisecond
// time in 256 ns steps (12 bits), the variant, then rand_b: 62 bits from
// crypto/rand. unix_ts_ms<<12|rand_a is strictly increasing within the
// process (one more than the last when the clock has not moved on), so
// the ids are unique and sort in the order New was called.
//
// The random bytes are read from crypto/rand in blocks of randBlock (one
// getrandom per 512 ids, where uuid's pool read 256 bytes per 16 ids and
// its default a syscall per id), under the same mutex as the time, so one
// lock per id. The block is not cleared after use: like uuid's pool, the
// bytes of ids already made and still to come stay in memory.
var ids struct {
	mu   sync.Mutex
	last int64 // the last unix_ts_ms<<12|rand_a
	left int   // unused bytes at the end of rnd; 0: read a block
	rnd  [randBlock]byte
}

const randBlock = 4096

// newID returns a fresh UUIDv7 in its 36-character text form. It blocks
// only on the generator's mutex (and, once per 512 ids, crypto/rand); it
// is safe for concurrent use. crypto/rand.Read does not fail: it crashes
// the program instead.
func newID() string {
	ids.mu.Lock()
	nano := time.Now().UnixNano()
	milli := nano / 1e6
	now := milli<<12 + (nano-milli*1e6)>>8 // sub-millisecond: 0-3906
	if now <= ids.last {
		now = ids.last + 1
	}
	ids.last = now
	if ids.left == 0 {
		rand.Read(ids.rnd[:])
		ids.left = randBlock
	}
	rnd := binary.BigEndian.Uint64(ids.rnd[randBlock-ids.left:])
	ids.left -= 8
	ids.mu.Unlock()

	// unix_ts_ms, version 7, rand_a; variant 10, rand_b.
	hi := uint64(now>>12)<<16 | 0x7000 | uint64(now&0xfff)
	lo := rnd&(1<<62-1) | 1<<63
	var buf [36]byte
	binary.BigEndian.PutUint64(buf[0:], hex8(uint32(hi>>32)))
	h := hex8(uint32(hi))
	binary.BigEndian.PutUint32(buf[9:], uint32(h>>32))
	binary.BigEndian.PutUint32(buf[14:], uint32(h))
	h = hex8(uint32(lo >> 32))
	binary.BigEndian.PutUint32(buf[19:], uint32(h>>32))
	binary.BigEndian.PutUint32(buf[24:], uint32(h))
	binary.BigEndian.PutUint64(buf[28:], hex8(uint32(lo)))
	buf[8], buf[13], buf[18], buf[23] = '-', '-', '-', '-'
	return string(buf[:])
}

// hex8 returns v's eight lowercase hex digits, the first in the top byte.
func hex8(v uint32) uint64 {
	// One nibble per byte, in order, then '0'-'9' or 'a'-'f' for each:
	// n+6 carries into bit 4 exactly when n >= 10.
	x := uint64(v)
	x = (x | x<<16) & 0x0000ffff0000ffff
	x = (x | x<<8) & 0x00ff00ff00ff00ff
	x = (x | x<<4) & 0x0f0f0f0f0f0f0f0f
	letters := (x + 0x0606060606060606) >> 4 & 0x0101010101010101
	return x + 0x3030303030303030 + letters*('a'-'0'-10)
}
