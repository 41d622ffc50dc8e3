package signals

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/syncbuf"
)

// Ensure SIGHUPs become merged reload requests that wait to be taken, the
// first SIGTERM or SIGINT stops, and only a second one exits.
func TestHandle(t *testing.T) {
	for _, term := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		var stderr syncbuf.Buffer
		exits := []int{}
		h := newHandler("prog", &stderr, func(code int) { exits = append(exits, code) })
		for range 3 {
			h.handle(syscall.SIGHUP)
		}
		select {
		case <-h.Reload():
		default:
			t.Fatal("no reload request after SIGHUP")
		}
		select {
		case <-h.Reload():
			t.Fatal("three SIGHUPs before a reload gave two requests; want them merged")
		default:
		}
		if h.Stopping().Err() != nil {
			t.Fatal("stopping before any SIGTERM")
		}
		h.handle(term)
		if h.Stopping().Err() == nil || len(exits) != 0 {
			t.Fatalf("after one %v: stopping %v, exits %v; want stopping and no exit", term, h.Stopping().Err(), exits)
		}
		h.handle(syscall.SIGHUP) // during the drain: a request nobody may take, no exit
		if len(exits) != 0 {
			t.Fatalf("SIGHUP during the drain exited %v", exits)
		}
		h.handle(term)
		if len(exits) != 1 || exits[0] != 1 || !strings.Contains(stderr.String(), "prog: second ") {
			t.Errorf("second %v: exits %v, stderr %q; want exit 1 with one line", term, exits, stderr.String())
		}
	}
}

// Ensure Catch takes SIGHUP for real: the test process gets SIGHUPs (which
// would kill it by default), survives, and sees a reload request.
func TestCatchSIGHUP(t *testing.T) {
	h := Catch("test")
	for range 3 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-h.Reload():
	case <-time.After(30 * time.Second):
		t.Fatal("no reload request within 30s of SIGHUP")
	}
}
