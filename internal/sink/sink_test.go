package sink_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/sink"
	"github.com/prometheus/client_golang/prometheus"
)

// chunkWriter records each Write call separately, so that a line split
// over two writes or two lines in one write would show.
type chunkWriter struct {
	mu     sync.Mutex
	chunks [][]byte
	err    error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.chunks = append(w.chunks, bytes.Clone(p))
	return len(p), nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Ensure concurrent publishers produce one complete JSON line per Write and
// per event, every event exactly once.
func TestConcurrentLines(t *testing.T) {
	w := &chunkWriter{}
	reg := prometheus.NewRegistry()
	s, err := sink.New(w, sink.Config{Logger: quiet(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				s.Publish(finished())
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(w.chunks) != writers*each {
		t.Fatalf("%d writes; want %d", len(w.chunks), writers*each)
	}
	ids := map[string]bool{}
	for _, c := range w.chunks {
		if bytes.Count(c, []byte("\n")) != 1 || c[len(c)-1] != '\n' {
			t.Fatalf("write %q is not exactly one line", c)
		}
		var ev event.Event
		sc := bufio.NewScanner(bytes.NewReader(c))
		sc.Buffer(nil, 1<<20)
		sc.Scan()
		ev, err := event.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("line %q: %v", c, err)
		}
		if ids[ev.Event.ID] {
			t.Fatalf("event %s written twice", ev.Event.ID)
		}
		ids[ev.Event.ID] = true
	}
	if got := counter(t, reg, "ok"); got != writers*each {
		t.Errorf("ok = %v; want %d", got, writers*each)
	}
}

// Ensure a failing writer and a closed sink are counted, not silent, and
// that Close is idempotent.
func TestFailuresCounted(t *testing.T) {
	w := &chunkWriter{err: errors.New("broken pipe")}
	reg := prometheus.NewRegistry()
	s, err := sink.New(w, sink.Config{Logger: quiet(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s.Publish(finished())
	s.Publish(finished())
	if got := counter(t, reg, "error"); got != 2 {
		t.Errorf("error = %v; want 2", got)
	}
	w.err = nil
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s.Publish(finished())
	if got := counter(t, reg, "closed"); got != 1 || len(w.chunks) != 0 {
		t.Errorf("closed = %v, writes %d; want 1 and 0", got, len(w.chunks))
	}
}

// Ensure Close flushes a buffered writer.
func TestCloseFlushes(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	s, err := sink.New(bw, sink.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s.Publish(finished())
	if out.Len() != 0 {
		t.Fatalf("written before Close: %q", out.String())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := event.Parse(bytes.TrimSpace(out.Bytes())); err != nil {
		t.Errorf("after Close: %q: %v", out.String(), err)
	}
}

// counter reads originlens_sink_events_total{result} from reg.
func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "originlens_sink_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no originlens_sink_events_total{result=%q}", result)
	return 0
}

// finished returns a complete event.
func finished() event.Event {
	ev := event.New(time.Now())
	ev.Finish(time.Now())
	return ev
}

// BenchmarkPublish measures one event written as a JSON line (to
// io.Discard): the encoding and the sink's own work.
//
//	go test -run '^$' -bench Publish -benchmem ./internal/sink
func BenchmarkPublish(b *testing.B) {
	s, err := sink.New(io.Discard, sink.Config{Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	ev := finished()
	b.ReportAllocs()
	for b.Loop() {
		s.Publish(ev)
	}
}

// TestPublishLongLineNotPooled checks that an event larger than the pooled
// buffers is written whole, and the events after it too.
func TestPublishLongLineNotPooled(t *testing.T) {
	var w chunkWriter
	s, err := sink.New(&w, sink.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	big := finished()
	big.Source.Geo.CityName = strings.Repeat("x", 100<<10)
	small := finished()
	for _, ev := range []event.Event{small, big, small, big} {
		s.Publish(ev)
	}
	if len(w.chunks) != 4 {
		t.Fatalf("%d writes, want 4", len(w.chunks))
	}
	for i, line := range w.chunks {
		ev, err := event.Parse(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil || line[len(line)-1] != '\n' {
			t.Fatalf("line %d: %v (ends %q)", i, err, line[len(line)-1:])
		}
		if want := i%2 == 1; (len(ev.Source.Geo.CityName) == 100<<10) != want {
			t.Fatalf("line %d: city of %d bytes", i, len(ev.Source.Geo.CityName))
		}
	}
}
