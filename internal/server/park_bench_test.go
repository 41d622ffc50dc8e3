//go:build linux

package server_test

import (
	"testing"
	"time"

	"github.com/originlens/originlens/internal/server"
)

// BenchmarkIdleEcho is one echoed line on a connection that waited for it:
// parked, every wait parks the connection at once (registration in the
// lot, the wake, the hand-over to a worker, the read); goroutine, the
// echo loop waits on its goroutine as it did before parking.
func BenchmarkIdleEcho(b *testing.B) {
	for _, bc := range []struct {
		name      string
		parkAfter time.Duration
	}{{"parked", 0}, {"goroutine", time.Hour}} {
		b.Run(bc.name, func(b *testing.B) {
			ts := startServer(b, nil)
			server.SetParkAfter(ts.srv, bc.parkAfter, time.Hour)
			c := newLineClient(b, ts.addr)
			c.report(b)
			c.readLine(b)
			line := []byte("ping\n")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(line); err != nil {
					b.Fatal(err)
				}
				if _, err := c.br.ReadSlice('\n'); err != nil {
					b.Fatal(err)
				}
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
		})
	}
}
