package kafka

import (
	"context"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestWriterTransportOneMetadataAnswerPerBatch: within a batch, the
// writer's metadata asks for the topic get the batch's first answer (the
// same value, no new request); after newBatch the next ask goes to the
// transport again; asks for another topic always do.
func TestWriterTransportOneMetadataAnswerPerBatch(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, testTopic, "other"))
	addr := kafkago.TCP(c.ListenAddrs()...)
	wt := &writerTransport{Transport: &kafkago.Transport{}, topic: testTopic}
	defer wt.CloseIdleConnections()
	ctx := context.Background()
	ask := func(topic string) *metadataAPI.Response {
		t.Helper()
		r, err := wt.RoundTrip(ctx, addr, &metadataAPI.Request{TopicNames: []string{topic}})
		if err != nil {
			t.Fatalf("metadata for %s: %v", topic, err)
		}
		m := r.(*metadataAPI.Response)
		if len(m.Topics) != 1 || m.Topics[0].Name != topic || len(m.Topics[0].Partitions) != 3 {
			t.Fatalf("metadata for %s: %+v", topic, m.Topics)
		}
		return m
	}
	wt.newBatch()
	first := ask(testTopic)
	if again := ask(testTopic); again != first {
		t.Errorf("second ask within a batch was not answered from the batch's answer")
	}
	if o1, o2 := ask("other"), ask("other"); o1 == o2 || o1 == first {
		t.Errorf("asks for another topic were answered from the cache")
	}
	wt.newBatch()
	if next := ask(testTopic); next == first {
		t.Errorf("the first ask of a new batch was answered from the last batch's answer")
	}
}
