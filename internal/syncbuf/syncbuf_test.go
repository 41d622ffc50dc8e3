package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/originlens/originlens/internal/syncbuf"
)

// TestConcurrent: writers and readers at once (run with -race); every
// line written is there once at the end.
func TestConcurrent(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", w, i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Errorf("line %q twice", l)
		}
		seen[l] = true
	}
}
