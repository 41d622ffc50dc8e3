package kafka

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/spool"
	"github.com/twmb/franz-go/pkg/kfake"
)

// failingReaderAt fails every read of a segment while fails > 0 (a
// negative count: for ever), as a disk that returns EIO does.
type failingReaderAt struct {
	r     io.ReaderAt
	fails *atomic.Int64
	reads *atomic.Int64
}

func (f failingReaderAt) ReadAt(b []byte, off int64) (int, error) {
	f.reads.Add(1)
	if f.fails.Load() != 0 {
		f.fails.Add(-1)
		return 0, &os.PathError{Op: "read", Path: "segment", Err: syscall.EIO}
	}
	return f.r.ReadAt(b, off)
}

// segmentIDs returns the event ids of a segment's records.
func segmentIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := spool.NewReader(strings.NewReader(string(b)), int64(len(b)), path)
	var ids []string
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeMessage(rec)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := event.Parse(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.Event.ID)
	}
}

// TestProducerSpoolReadError: a spool segment the disk cannot read (EIO on
// every read, injected through spool.SetReadHook) is retried a bounded
// number of times, then moved aside with one ERROR line, its events counted
// in dropped{spool_read_error}; the events before and after it are
// delivered exactly once, and the producer never says Kafka is down.
// Before, the producer logged "kafka unavailable", went degraded and
// retried for ever: nothing after the segment was delivered. A read error
// that passes (two failures) loses nothing.
func TestProducerSpoolReadError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fails int64 // -1: lasting
	}{{"lasting", -1}, {"transient", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			port := reservePort(t)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			dir := t.TempDir()
			// An outage spools the events over several segments.
			h := newHarness(t, addr, ProducerConfig{SpoolDir: dir, SpoolSegmentBytes: 8 << 10})
			h.run(t)
			const n = 200
			ids := publishN(h.p, 0, n)
			waitFor(t, "spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == n })
			h.close(t)
			segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			if len(segs) < 3 {
				t.Fatalf("%d segments, want at least 3", len(segs))
			}
			bad := segs[len(segs)/2]
			badIDs := segmentIDs(t, bad)

			c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(2, testTopic))
			h2 := newHarness(t, addr, ProducerConfig{SpoolDir: dir, SpoolSegmentBytes: 8 << 10})
			// The disk fails after the spool was opened (it read every
			// segment then): the replay's reads fail.
			var fails, reads atomic.Int64
			fails.Store(tc.fails)
			spool.SetReadHook(func(path string, r io.ReaderAt) io.ReaderAt {
				if path != bad {
					return r
				}
				return failingReaderAt{r: r, fails: &fails, reads: &reads}
			})
			t.Cleanup(func() { spool.SetReadHook(nil) })
			h2.run(t)
			waitFor(t, "replayed", func() bool {
				return h2.metric(t, "originlens_kafka_spool_records") == 0 && h2.metric(t, "originlens_kafka_spool_bytes") == 0
			})
			if d := h2.metric(t, "originlens_kafka_degraded"); d != 0 {
				t.Errorf("degraded = %v: a disk error was taken for a broker outage", d)
			}
			h2.close(t)
			logs := h2.logs.String()
			if strings.Contains(logs, "kafka unavailable") {
				t.Errorf("the log says kafka is unavailable:\n%s", logs)
			}
			if e := h2.metric(t, "originlens_kafka_broker_errors_total"); e != 0 {
				t.Errorf("broker_errors_total = %v, want 0", e)
			}
			want := ids
			lost := 0
			if tc.fails < 0 {
				gone := map[string]bool{}
				for _, id := range badIDs {
					gone[id] = true
				}
				want = nil
				for _, id := range ids {
					if !gone[id] {
						want = append(want, id)
					}
				}
				lost = len(badIDs)
			}
			got := checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic))
			if dups := checkDelivered(t, want, got); dups != 0 {
				t.Errorf("%d duplicates, want none", dups)
			}
			if d := h2.metric(t, "originlens_kafka_events_dropped_total", "reason="+spool.LossReadError); d != float64(lost) {
				t.Errorf("dropped{%s} = %v, want %d", spool.LossReadError, d, lost)
			}
			lines := strings.Count(logs, "a segment cannot be read; moved aside")
			_, aerr := os.Stat(bad + ".corrupt")
			if tc.fails < 0 {
				if lines != 1 {
					t.Errorf("%d quarantine lines, want 1:\n%s", lines, logs)
				}
				if aerr != nil {
					t.Errorf("the unreadable segment was not moved aside: %v", aerr)
				}
				if r := reads.Load(); r != 3 {
					t.Errorf("%d reads of the unreadable segment, want %d (bounded retries)", r, 3)
				}
			} else if lines != 0 || aerr == nil {
				t.Errorf("a transient read error quarantined the segment (%d lines, %v)", lines, aerr)
			}
			t.Log(fmt.Sprintf("%d of %d events in the bad segment", len(badIDs), n))
		})
	}
}
