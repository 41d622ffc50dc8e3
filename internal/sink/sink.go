// Package sink is the default event publisher: one JSON object per line on
// an io.Writer (the app's stdout when no Kafka broker is configured).
package sink

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/originlens/originlens/internal/event"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is counted (result "closed") for an event published after
// [JSONLines.Close].
var ErrClosed = errors.New("sink: closed")

// JSONLines writes each event as one JSON line with a single Write call, so
// that lines never interleave. It is safe for concurrent use: events are
// encoded concurrently and written one at a time. Publish blocks while the
// writer blocks; it never drops an event it could write.
type JSONLines struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
	failed bool // a write failed; logged once

	log                *slog.Logger
	results            *prometheus.CounterVec
	okC, errC, closedC prometheus.Counter
	bufs               sync.Pool // *[]byte: a line's encoding buffer
}

// maxPooledLine bounds the buffers Publish keeps in its pool: an event with
// huge fields does not pin a huge buffer.
const maxPooledLine = 64 << 10

// Config configures [New].
type Config struct {
	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: no metrics
}

// New returns a sink writing to w. The metric
// originlens_sink_events_total{sink="stdout",result} counts ok, error and
// closed results.
func New(w io.Writer, cfg Config) (*JSONLines, error) {
	s := &JSONLines{
		w:   w,
		log: cfg.Logger,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "originlens_sink_events_total",
			Help:        "Events handed to the event sink, by result (ok, error, closed).",
			ConstLabels: prometheus.Labels{"sink": "stdout"},
		}, []string{"result"}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.okC = s.results.WithLabelValues("ok")
	s.errC = s.results.WithLabelValues("error")
	s.closedC = s.results.WithLabelValues("closed")
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.results); err != nil {
			return nil, fmt.Errorf("sink: registering metrics: %w", err)
		}
	}
	s.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	return s, nil
}

// Publish writes ev as one line. It is safe for concurrent use. The line
// is encoded straight into a pooled buffer: no allocation per event once
// the pool is warm.
func (s *JSONLines) Publish(ev event.Event) {
	bp := s.bufs.Get().(*[]byte)
	b, err := ev.AppendJSON((*bp)[:0])
	if err != nil {
		s.bufs.Put(bp)
		s.errC.Inc()
		s.log.Error("event sink", "err", err, "event.id", ev.Event.ID)
		return
	}
	b = append(b, '\n')
	if cap(b) <= maxPooledLine {
		*bp = b
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.bufs.Put(bp)
		s.closedC.Inc()
		s.log.Error("event sink", "err", ErrClosed, "event.id", ev.Event.ID)
		return
	}
	_, err = s.w.Write(b)
	first := err != nil && !s.failed
	if err != nil {
		s.failed = true
	}
	s.mu.Unlock()
	s.bufs.Put(bp)
	if err != nil {
		s.errC.Inc()
		if first {
			s.log.Error("event sink: write failed; further failures are only counted", "err", err, "event.id", ev.Event.ID)
		}
		return
	}
	s.okC.Inc()
}

// Close flushes the writer when it has a Flush() error method and marks the
// sink closed; it does not close the writer. Later events are counted as
// "closed" and not written. Close is safe to call more than once.
func (s *JSONLines) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if f, ok := s.w.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("sink: flushing: %w", err)
		}
	}
	return nil
}
