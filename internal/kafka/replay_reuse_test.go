package kafka

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// randomEvent is event i with a city name of random length and bytes, so
// that consecutive records differ in size and content: a payload that
// aliased a buffer reused too early would carry another event's bytes.
func randomEvent(rng *rand.Rand, i int) (event.Event, []byte) {
	ev := testEvent(i)
	city := make([]byte, 1+rng.IntN(1500))
	for j := range city {
		city[j] = byte('a' + rng.IntN(26))
	}
	ev.Source.Geo.CityName = string(city)
	want, err := ev.AppendJSON(nil)
	if err != nil {
		panic(err)
	}
	return ev, want
}

// TestReplayReusedBufferValuesExact replays many batches of distinct
// random events through the spool, whose payloads are read into one
// buffer reused across batches (replayBatch), and checks every value the
// broker received byte for byte against the event's own encoding: none
// missing, none overwritten by a later batch. Disk mode sends every event
// through the replay; memory mode replays what an outage spooled. In both,
// the broker fails some produce requests (the connection closed) and
// answers one only after the write timed out (kafka-go's WriteMessages
// returned while its batch was in flight): a failed write drops the
// buffer instead of reusing it.
func TestReplayReusedBufferValuesExact(t *testing.T) {
	for _, mode := range []string{BufferDisk, BufferMemory} {
		t.Run(mode, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(mode))))
			const n = 3000
			port := reservePort(t)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			cfg := ProducerConfig{Buffer: mode, BatchSize: 37, SpoolSegmentBytes: 64 << 10, Compression: "lz4", WriteTimeout: time.Second}
			want := map[string][]byte{}
			var ids []string
			publish := func(p *Producer) {
				for i := range n {
					ev, v := randomEvent(rng, i)
					want[ev.Event.ID] = v
					ids = append(ids, ev.Event.ID)
					p.Publish(ev)
				}
			}
			start := func() *kfake.Cluster {
				c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
				var produces atomic.Int32
				c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					switch produces.Add(1) {
					case 5, 17:
						return nil, errors.New("injected produce failure"), true
					case 9:
						c.SleepControl(func() { time.Sleep(2 * cfg.WriteTimeout) })
					}
					return nil, nil, false
				})
				return c
			}
			var c *kfake.Cluster
			var h *harness
			if mode == BufferMemory {
				// An outage: everything goes to the spool first.
				h = newHarness(t, addr, cfg)
				h.run(t)
				publish(h.p)
				waitFor(t, "spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == n })
				c = start()
				waitFor(t, "replayed", func() bool { return h.metric(t, "originlens_kafka_spool_records") == 0 })
			} else {
				c = start()
				h = newHarness(t, addr, cfg)
				h.run(t)
				publish(h.p)
				waitFor(t, "sent", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") >= n })
			}
			h.close(t)
			if e := h.metric(t, "originlens_kafka_broker_errors_total"); e == 0 {
				t.Errorf("broker_errors_total = 0: the injected failures did not happen")
			}
			msgs := readTopic(t, c.ListenAddrs()[0], testTopic)
			checkDelivered(t, ids, checkMessages(t, msgs))
			bad := 0
			for _, m := range msgs {
				ev, err := event.Parse(m.Value)
				if err != nil {
					continue // reported by checkMessages
				}
				if w, ok := want[ev.Event.ID]; !ok || !bytes.Equal(m.Value, w) {
					if bad++; bad <= 3 {
						t.Errorf("event %s: value differs from its encoding (%d vs %d bytes)", ev.Event.ID, len(m.Value), len(w))
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values corrupted", bad, len(msgs))
			}
		})
	}
}
