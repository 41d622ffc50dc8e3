package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/originlens/originlens/internal/opensearch"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// FuzzBulkLine: whatever a Kafka message holds, either parse rejects it
// (it goes to the DLQ) or it becomes exactly one create action line and one
// source line, both single-line JSON, with _id = event.id and the daily
// index of its UTC @timestamp.
func FuzzBulkLine(f *testing.F) {
	ev := opensearchtest.SampleEvent(7, time.Date(2026, 11, 27, 23, 30, 0, 0, time.FixedZone("x", 3600)))
	good, _ := ev.Marshal()
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, good, "", "  ")
	f.Add(good)
	f.Add(pretty.Bytes())
	f.Add([]byte(`{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"a\"b\\c\u2028\n"}}`))
	f.Add([]byte(`{"@timestamp":"2026-11-27T10:00:00Z","event":{"id":"x"}} {}`))
	f.Add([]byte(`{"event":{"id":"x"}}`))
	f.Add([]byte(`not json`))
	p := New(Config{}, nil, unusedIndexer{}, nil, nil) // an indexer: appendItem builds bulk lines
	f.Fuzz(func(t *testing.T, value []byte) {
		msg := kafka.Message{Topic: "t", Value: value}
		e, err := parse(&msg)
		if err != nil {
			return
		}
		it := &item{msg: msg, ev: &e}
		b := &batch{}
		p.appendItem(b, it)
		lines := bytes.Split(bytes.TrimSuffix(b.buf, []byte("\n")), []byte("\n"))
		if len(lines) != 2 || !bytes.HasSuffix(b.buf, []byte("\n")) {
			t.Fatalf("bulk lines for %q = %q, want two newline-terminated lines", value, b.buf)
		}
		var action struct {
			Create struct {
				Index string `json:"_index"`
				ID    string `json:"_id"`
			} `json:"create"`
		}
		if err := json.Unmarshal(lines[0], &action); err != nil {
			t.Fatalf("action line %q: %v", lines[0], err)
		}
		if action.Create.ID != e.ID {
			t.Errorf("_id = %q, want %q", action.Create.ID, e.ID)
		}
		if want := "conn-events-" + e.Timestamp.UTC().Format("2006.01.02"); action.Create.Index != want {
			t.Errorf("_index = %q, want %q", action.Create.Index, want)
		}
		if !json.Valid(lines[1]) {
			t.Errorf("source line %q is not JSON", lines[1])
		}
		if b.buf[it.start] != '{' || it.end != len(b.buf) {
			t.Errorf("item range [%d,%d) of %d bytes", it.start, it.end, len(b.buf))
		}
	})
}

// unusedIndexer makes a pipeline build bulk lines (a pipeline without an
// indexer builds none); its Bulk is never called by these tests.
type unusedIndexer struct{}

func (unusedIndexer) Bulk(context.Context, []byte) (opensearch.BulkResponse, error) {
	return opensearch.BulkResponse{}, errors.New("unusedIndexer: not for sending")
}
