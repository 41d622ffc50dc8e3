package event_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/originlens/originlens/internal/event"
)

// BenchmarkNew is the event's construction and its UUIDv7 id. The two
// runs were crypto/rand per event ("getrandom") and uuid's pool of random
// bytes ("randpool", uuid.EnableRandPool, which cmd/app turns on) while New
// used uuid.NewV7; New now has its own generator, which the pool setting
// does not change, and both are kept to compare with the old numbers.
func BenchmarkNew(b *testing.B) {
	for _, pool := range []bool{false, true} {
		name := "getrandom"
		if pool {
			name = "randpool"
		}
		b.Run(name, func(b *testing.B) {
			if pool {
				uuid.EnableRandPool()
				defer uuid.DisableRandPool()
			}
			b.ReportAllocs()
			for b.Loop() {
				if ev := event.New(time.Now()); ev.Event.ID == "" {
					b.Fatal("no id")
				}
			}
		})
	}
}

// TestNewIDs checks the ids New makes: RFC 9562 version 7, variant 10, the
// time of the call in unix_ts_ms, strictly increasing from one goroutine
// (also within one millisecond, where the sub-millisecond field and then a
// counter order them), and unique across goroutines.
func TestNewIDs(t *testing.T) {
	const goroutines, each = 4, 5000
	before := time.Now().UnixMilli()
	lists := make([][]string, goroutines)
	done := make(chan int)
	for g := range goroutines {
		go func() {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = event.New(time.Time{}).Event.ID
			}
			lists[g] = ids
			done <- g
		}()
	}
	for range goroutines {
		<-done
	}
	after := time.Now().UnixMilli()
	seen := make(map[string]bool, goroutines*each)
	randBits := make(map[uint64]bool, goroutines*each)
	for _, ids := range lists {
		for i, id := range ids {
			u, err := uuid.Parse(id)
			if err != nil || u.String() != id {
				t.Fatalf("id %q: not a UUID in canonical lowercase form (%v)", id, err)
			}
			if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
				t.Fatalf("id %s: version %d variant %v, want 7 and RFC 4122", id, u.Version(), u.Variant())
			}
			ms := int64(u[0])<<40 | int64(u[1])<<32 | int64(u[2])<<24 | int64(u[3])<<16 | int64(u[4])<<8 | int64(u[5])
			if ms < before || ms > after+1000 { // the counter may run ahead of the clock by a little
				t.Fatalf("id %s: unix_ts_ms %d outside the calls' [%d, %d]", id, ms, before, after)
			}
			if i > 0 && id <= ids[i-1] {
				t.Fatalf("ids not increasing: %s after %s", id, ids[i-1])
			}
			if seen[id] {
				t.Fatalf("id %s made twice", id)
			}
			seen[id] = true
			rb := uint64(u[8]&0x3f)<<56 | uint64(u[9])<<48 | uint64(u[10])<<40 | uint64(u[11])<<32 |
				uint64(u[12])<<24 | uint64(u[13])<<16 | uint64(u[14])<<8 | uint64(u[15])
			if randBits[rb] {
				t.Fatalf("id %s: rand_b %x repeated: not 62 random bits per id", id, rb)
			}
			randBits[rb] = true
		}
	}
}
