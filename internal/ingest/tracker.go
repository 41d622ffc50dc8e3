package ingest

import (
	"sync"

	kafka "github.com/segmentio/kafka-go"
)

// tracker keeps, per partition, the fetched offsets in fetch order and
// which of them are done (indexed or dead-lettered), so that only the
// highest contiguous done offset is ever committed. It is safe for
// concurrent use.
type tracker struct {
	mu    sync.Mutex
	parts map[partKey]*partQueue
}

type partKey struct {
	topic     string
	partition int
}

type entry struct {
	offset int64
	done   bool
}

type partQueue struct {
	q    []*entry
	head int
}

func newTracker() *tracker { return &tracker{parts: map[partKey]*partQueue{}} }

// add registers a fetched message. Calls for one partition must come in
// fetch order.
func (t *tracker) add(msg *kafka.Message) *entry {
	e := &entry{offset: msg.Offset}
	k := partKey{msg.Topic, msg.Partition}
	t.mu.Lock()
	pq := t.parts[k]
	if pq == nil {
		pq = &partQueue{}
		t.parts[k] = pq
	}
	pq.q = append(pq.q, e)
	t.mu.Unlock()
	return e
}

// done marks entries done and returns, for each partition whose
// contiguous done prefix advanced, the message to commit (its offset is
// the last done one; kafka-go commits offset+1).
func (t *tracker) done(keys []partKey, entries []*entry) []kafka.Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	touched := map[partKey]bool{}
	for i, e := range entries {
		e.done = true
		touched[keys[i]] = true
	}
	var out []kafka.Message
	for k := range touched {
		pq := t.parts[k]
		last := int64(-1)
		for pq.head < len(pq.q) && pq.q[pq.head].done {
			last = pq.q[pq.head].offset
			pq.q[pq.head] = nil
			pq.head++
		}
		if pq.head > 1024 && pq.head*2 > len(pq.q) {
			pq.q = append([]*entry(nil), pq.q[pq.head:]...)
			pq.head = 0
		}
		if last >= 0 {
			out = append(out, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: last})
		}
	}
	return out
}
