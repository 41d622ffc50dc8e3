package event_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/originlens/originlens/internal/event"
)

// BenchmarkNew is the event's construction, its UUIDv7 id from
// crypto/rand per event ("getrandom") or from uuid's pool of random bytes
// ("randpool", uuid.EnableRandPool).
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
