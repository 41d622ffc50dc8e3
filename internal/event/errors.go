package event

import (
	"bytes"
	"errors"
	"io"
)

// Errors returned by [Parse] for events the ingest must dead-letter.
var (
	ErrMissingID        = errors.New("event: missing event.id")
	ErrMissingTimestamp = errors.New("event: missing @timestamp")
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
