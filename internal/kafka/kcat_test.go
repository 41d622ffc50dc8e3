package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKcatReadsTopic reads what the producer wrote with kcat (librdkafka),
// an independent Kafka client, and checks the JSON, keys and headers.
func TestKcatReadsTopic(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (Debian package kcat): skipping the independent-client check")
	}
	c := startCluster(t, kfake.SeedTopics(2, testTopic))
	addr := c.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{})
	h.run(t)
	const n = 200
	ids := publishN(h.p, 0, n)
	waitFor(t, "acknowledged", func() bool { return h.metric(t, "originlens_kafka_events_sent_total") == n })
	h.close(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", testTopic, "-e", "-q", "-J").Output()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	type kcatMsg struct {
		Partition int      `json:"partition"`
		Key       string   `json:"key"`
		Payload   string   `json:"payload"`
		Headers   []string `json:"headers"` // name, value, name, value...
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := map[string]int{}
	for dec.More() {
		var m kcatMsg
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("kcat -J output: %v", err)
		}
		ev, err := event.Parse([]byte(m.Payload))
		if err != nil {
			t.Errorf("event.Parse(kcat payload): %v", err)
			continue
		}
		seen[ev.Event.ID]++
		if m.Key != ev.Source.IP.String() {
			t.Errorf("kcat key %q, want %s", m.Key, ev.Source.IP)
		}
		if len(m.Headers) != 2 || m.Headers[0] != event.HeaderSchemaVersion || m.Headers[1] != event.SchemaVersion {
			t.Errorf("kcat headers %q, want [%s %s]", m.Headers, event.HeaderSchemaVersion, event.SchemaVersion)
		}
	}
	if dups := checkDelivered(t, ids, seen); dups != 0 {
		t.Errorf("kcat saw %d duplicates", dups)
	}
}
