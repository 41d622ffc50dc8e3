package event_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// TestParse: Parse reads back what Marshal writes and refuses anything
// that is not exactly one known event object.
func TestParse(t *testing.T) {
	ev := event.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	ev.Finish(ev.Timestamp.Add(time.Millisecond))
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := event.Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v", err)
	}
	if got.Event.ID != ev.Event.ID || !got.Timestamp.Equal(ev.Timestamp) {
		t.Errorf("Parse: id %q at %v, want %q at %v", got.Event.ID, got.Timestamp, ev.Event.ID, ev.Timestamp)
	}
	if _, err := event.Parse(append(append([]byte(" \n"), b...), " \r\n\t"...)); err != nil {
		t.Errorf("Parse with white space around: %v", err)
	}
	obj := string(b)
	for _, tc := range []struct {
		name, in, want string
		is             error
	}{
		{"trailing brace", obj + "}", "trailing data", nil},
		{"trailing bracket", obj + " ]", "trailing data", nil},
		{"second object", obj + obj, "trailing data", nil},
		{"unknown field", `{"x":1,` + obj[1:], "unknown field", nil},
		{"truncated", obj[:len(obj)-1], "decoding event", nil},
		{"no id", `{"@timestamp":"2026-11-27T10:00:00Z"}`, "", event.ErrMissingID},
		{"no timestamp", `{"event":{"id":"x"}}`, "", event.ErrMissingTimestamp},
		{"not an object", `[]`, "decoding event", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := event.Parse([]byte(tc.in))
			switch {
			case err == nil:
				t.Fatalf("Parse(%.60q...) accepted it", tc.in)
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("Parse: %v, want %v", err, tc.is)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("Parse: %v, want it to say %q", err, tc.want)
			}
		})
	}
}
