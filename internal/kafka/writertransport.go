package kafka

import (
	"context"
	"net"
	"sync"

	kafkago "github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// writerTransport is the writer's kafka-go transport, with one addition:
// within one batch (newBatch to newBatch) it answers the metadata request
// for the topic from the batch's first answer. kafka-go's Writer asks for
// the topic's partition count once per message (Writer.partitions in
// WriteMessages), and each ask allocated a Client, the request, and a
// filtered copy of the transport's cached answer, behind the transport's
// lock: ~4.4 of the app's ~30 allocations per connection. The first ask of
// a batch still goes to the transport, so what the writer learns about the
// cluster, and when, is what it learned before at batch granularity.
// Everything else passes through. Safe for concurrent use.
type writerTransport struct {
	*kafkago.Transport
	topic string

	mu     sync.Mutex
	answer kafkago.Response // the batch's metadata answer for topic; nil: ask
}

// newBatch makes the next metadata request for the topic go to the
// transport.
func (t *writerTransport) newBatch() {
	t.mu.Lock()
	t.answer = nil
	t.mu.Unlock()
}

// RoundTrip implements kafkago.RoundTripper.
func (t *writerTransport) RoundTrip(ctx context.Context, addr net.Addr, req kafkago.Request) (kafkago.Response, error) {
	m, ok := req.(*metadataAPI.Request)
	if !ok || len(m.TopicNames) != 1 || m.TopicNames[0] != t.topic || m.AllowAutoTopicCreation {
		return t.Transport.RoundTrip(ctx, addr, req)
	}
	t.mu.Lock()
	answer := t.answer
	t.mu.Unlock()
	if answer != nil {
		return answer, nil
	}
	r, err := t.Transport.RoundTrip(ctx, addr, req)
	if err == nil {
		t.mu.Lock()
		t.answer = r
		t.mu.Unlock()
	}
	return r, err
}
