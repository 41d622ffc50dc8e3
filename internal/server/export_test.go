package server

import "time"

// Workers returns the connection goroutines running now and started so
// far, for tests.
func Workers(s *Server) (running, started int64) { return s.workers.Load(), s.started.Load() }

// Parked returns the connections parked now.
func Parked(s *Server) int64 { return s.parked.Load() }

// SetParkAfter sets how long an echo loop waits on its goroutine before it
// parks, and how long an idle worker waits for a next connection.
func SetParkAfter(s *Server, parkAfter, workerIdle time.Duration) {
	s.parkAfter.Store(int64(parkAfter))
	s.workerIdle.Store(int64(workerIdle))
}
