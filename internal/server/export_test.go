package server

// Workers returns the connection goroutines running now and started so
// far, for tests.
func Workers(s *Server) (running, started int64) { return s.workers.Load(), s.started.Load() }
