package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
)

// Spool payload layout: one Kafka message, exactly as it was to be sent.
//
//	version  byte (1)
//	key      uvarint length, bytes
//	headers  uvarint count, then per header: uvarint length, key bytes,
//	         uvarint length, value bytes
//	value    the rest (the event JSON)
const recordVersion = 1

// errBadRecord is wrapped by decodeMessage errors.
var errBadRecord = errors.New("kafka: bad spool record")

// maxHeaders bounds the header count a spooled record may claim.
const maxHeaders = 64

// appendMessage encodes m onto dst.
func appendMessage(dst []byte, m *kafkago.Message) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(m.Key)))
	dst = append(dst, m.Key...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Headers)))
	for _, h := range m.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return append(dst, m.Value...)
}

// decodeMessage decodes a spool payload. The message's slices alias b.
func decodeMessage(b []byte) (kafkago.Message, error) {
	var m kafkago.Message
	if len(b) == 0 || b[0] != recordVersion {
		return m, fmt.Errorf("%w: unknown version", errBadRecord)
	}
	b = b[1:]
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: truncated field", errBadRecord)
		}
		field := b[k : k+int(n)]
		b = b[k+int(n):]
		return field, nil
	}
	var err error
	if m.Key, err = next(); err != nil {
		return m, err
	}
	if len(m.Key) == 0 {
		m.Key = nil
	}
	count, k := binary.Uvarint(b)
	if k <= 0 || count > maxHeaders {
		return m, fmt.Errorf("%w: bad header count", errBadRecord)
	}
	b = b[k:]
	for range count {
		hk, err := next()
		if err != nil {
			return m, err
		}
		hv, err := next()
		if err != nil {
			return m, err
		}
		if count == 1 && string(hk) == schemaHeaders[0].Key && bytes.Equal(hv, schemaHeaders[0].Value) {
			// Every event's header: share the live path's (kafka-go only
			// reads it), instead of a slice and a key string per replayed
			// event.
			m.Headers = schemaHeaders
			continue
		}
		m.Headers = append(m.Headers, kafkago.Header{Key: string(hk), Value: hv})
	}
	m.Value = b
	return m, nil
}
