package kafka

import (
	"bytes"
	"errors"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
)

func TestMessageRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    kafkago.Message
	}{
		{"Event", kafkago.Message{Key: []byte("192.0.2.1"), Value: []byte(`{"a":1}`), Headers: schemaHeaders}},
		{"NoKeyNoHeaders", kafkago.Message{Value: []byte("v")}},
		{"EmptyValue", kafkago.Message{Key: []byte("k"), Headers: []kafkago.Header{{Key: "a", Value: nil}, {Key: "", Value: []byte("x")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMessage(appendMessage(nil, &tt.m))
			if err != nil {
				t.Fatalf("decodeMessage: %v", err)
			}
			if !bytes.Equal(got.Key, tt.m.Key) || !bytes.Equal(got.Value, tt.m.Value) || len(got.Headers) != len(tt.m.Headers) {
				t.Fatalf("round trip = %+v, want %+v", got, tt.m)
			}
			for i := range got.Headers {
				if got.Headers[i].Key != tt.m.Headers[i].Key || !bytes.Equal(got.Headers[i].Value, tt.m.Headers[i].Value) {
					t.Errorf("header %d = %+v, want %+v", i, got.Headers[i], tt.m.Headers[i])
				}
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"Empty", nil},
		{"Version", []byte{2, 0, 0}},
		{"KeyTooLong", []byte{1, 10, 'a'}},
		{"NoHeaderCount", []byte{1, 0}},
		{"TooManyHeaders", []byte{1, 0, 100}},
		{"TruncatedHeader", []byte{1, 0, 1, 3, 'a'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeMessage(tt.b); !errors.Is(err, errBadRecord) {
				t.Errorf("decodeMessage(%x) = %v, want errBadRecord", tt.b, err)
			}
		})
	}
}

// FuzzDecodeMessage: arbitrary spool payloads never panic, and whatever
// decodes survives a re-encode and decode unchanged.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(appendMessage(nil, &kafkago.Message{Key: []byte("192.0.2.1"), Value: []byte(`{}`), Headers: schemaHeaders}))
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 0x80, 0x00, 0, 'v'})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		m2, err := decodeMessage(appendMessage(nil, &m))
		if err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", b, err)
		}
		if !bytes.Equal(m.Key, m2.Key) || !bytes.Equal(m.Value, m2.Value) || len(m.Headers) != len(m2.Headers) {
			t.Fatalf("round trip of %x: %+v != %+v", b, m, m2)
		}
		for i := range m.Headers {
			if m.Headers[i].Key != m2.Headers[i].Key || !bytes.Equal(m.Headers[i].Value, m2.Headers[i].Value) {
				t.Fatalf("round trip of %x: header %d differs", b, i)
			}
		}
	})
}

// TestDecodeMessageSharesSchemaHeader checks that a record whose only
// header is the schema version decodes to the shared schemaHeaders (no
// allocation per replayed event), and that any other header still gets its
// own copy.
func TestDecodeMessageSharesSchemaHeader(t *testing.T) {
	b := appendMessage(nil, &kafkago.Message{Key: []byte("k"), Value: []byte("v"), Headers: schemaHeaders})
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := decodeMessage(b); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("decodeMessage of an event record: %v allocations, want 0", allocs)
	}
	m, _ := decodeMessage(b)
	if len(m.Headers) != 1 || &m.Headers[0] != &schemaHeaders[0] {
		t.Errorf("headers %+v are not the shared schemaHeaders", m.Headers)
	}
	other := appendMessage(nil, &kafkago.Message{Value: []byte("v"), Headers: []kafkago.Header{{Key: schemaHeaders[0].Key, Value: []byte("0")}}})
	m, err := decodeMessage(other)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Headers) != 1 || string(m.Headers[0].Value) != "0" {
		t.Errorf("another schema version decoded as %+v", m.Headers)
	}
}

// BenchmarkDecodeMessage decodes one spooled event record, as the replay
// does for every event in disk mode.
func BenchmarkDecodeMessage(b *testing.B) {
	rec := appendMessage(nil, &kafkago.Message{Key: []byte("192.0.2.1"), Value: bytes.Repeat([]byte("x"), 400), Headers: schemaHeaders})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeMessage(rec); err != nil {
			b.Fatal(err)
		}
	}
}
