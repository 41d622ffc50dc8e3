package kafka

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestSpoolLossesLoggedWithTheirCount: with the broker down and the spool's
// disk full, every event is lost (and counted in dropped_total), but the
// log said "events=1": the first loss's line, and the rate limit (one
// error line a second, shared by every message) swallowed the rest, so an
// operator reading the log saw one lost event where hundreds were. The
// loss lines must add up to the count: each says how many were lost since
// the last one, and Close logs what no line has said yet.
func TestSpoolLossesLoggedWithTheirCount(t *testing.T) {
	dir := tinyTmpfs(t)
	for _, buf := range []string{BufferMemory, BufferDisk} {
		t.Run(buf, func(t *testing.T) {
			sub := dir + "/" + buf
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			dead := fmt.Sprintf("127.0.0.1:%d", reservePort(t))
			h := newHarness(t, dead, ProducerConfig{Buffer: buf, SpoolDir: sub, SpoolMaxBytes: 1 << 30, BatchSize: 100})
			h.run(t)
			publishN(h.p, 0, 1000) // ~600 KB: far more than the 64 KiB disk
			h.close(t)
			os.RemoveAll(sub)
			dropped := h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error")
			if dropped < 500 {
				t.Fatalf("dropped_total{spool_error} = %v; the full disk refused too little for the test to prove anything", dropped)
			}
			logged := 0
			re := regexp.MustCompile(`msg="kafka: the spool refused events; they are lost" .*?\bevents=(\d+)`)
			for _, m := range re.FindAllStringSubmatch(h.logs.String(), -1) {
				n, _ := strconv.Atoi(m[1])
				logged += n
			}
			if float64(logged) != dropped {
				t.Errorf("the loss lines say %d events lost, dropped_total{spool_error} = %v", logged, dropped)
			}
		})
	}
}
