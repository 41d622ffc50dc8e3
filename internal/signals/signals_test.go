package signals

import (
	"context"
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

// Ensure SIGHUP is caught from the package's initialization on, before any
// Catch (a program's main runs ~10 ms after exec; a SIGHUP then killed
// it): the test process survives SIGHUPs and they wait in the buffer.
// Runs before TestCatchSIGHUP, whose Catch would take them.
func TestEarlySIGHUP(t *testing.T) {
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-early:
		if s != syscall.SIGHUP {
			t.Errorf("early got %v; want SIGHUP", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no SIGHUP in the early buffer within 30 s")
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

// Ensure OnReload passes each request with whether the drain has begun,
// and returns when ctx is done.
func TestOnReload(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	stopping := make(chan struct{})
	got := make(chan bool)
	done := make(chan struct{})
	go func() {
		defer close(done)
		OnReload(ctx, reload, stopping, func(draining bool) { got <- draining })
	}()
	reload <- struct{}{}
	if d := <-got; d {
		t.Error("draining before stopping closed")
	}
	close(stopping)
	reload <- struct{}{}
	if d := <-got; !d {
		t.Error("not draining after stopping closed")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("OnReload did not return after cancel")
	}
}
