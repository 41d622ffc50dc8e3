package relay

import (
	"context"
	"testing"
	"time"
)

// Ensure dials from context.Background share a deadline only within
// the window, each ending at most the dial timeout after its start and at
// most the window earlier; and a cancelable context keeps its own.
func TestDialContextShared(t *testing.T) {
	d := &Dialer{timeout: 3 * time.Second}
	window := min(d.timeout/16, maxDialShare)
	check := func(ctx context.Context, start time.Time) {
		t.Helper()
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("dial context without a deadline")
		}
		// Measured around the call: the deadline is between start's
		// timeout minus the window and the timeout after the call.
		if lo, hi := start.Add(d.timeout-window), time.Now().Add(d.timeout); dl.Before(lo) || dl.After(hi) {
			t.Fatalf("deadline %v after the start, want within [%v, %v]", dl.Sub(start), d.timeout-window, d.timeout)
		}
	}
	start := time.Now()
	a, cancel := d.dialContext(context.Background())
	cancel()
	check(a, start)
	start = time.Now()
	b, cancel := d.dialContext(context.Background())
	cancel()
	check(b, start)
	if a.Err() != nil {
		t.Fatalf("a dial's cancel ended the shared context: %v", a.Err())
	}
	if b != a {
		// Only a slow machine lets the window pass between the calls.
		t.Logf("second dial got its own context (%v apart)", time.Since(start))
	}
	time.Sleep(window + time.Millisecond)
	start = time.Now()
	c, cancel := d.dialContext(context.Background())
	cancel()
	check(c, start)
	if c == a {
		t.Fatal("a dial after the window shares the earlier context: it would end early")
	}

	parent, stop := context.WithCancel(context.Background())
	p, cancel := d.dialContext(parent)
	if p == c {
		t.Fatal("a cancelable context's dial took the shared context")
	}
	stop()
	if p.Err() == nil {
		t.Fatal("cancelling the caller's context did not end its dial context")
	}
	cancel()
	if c.Err() != nil {
		t.Fatal("cancelling another dial ended the shared context")
	}
}

// Ensure a short dial timeout still ends the shared context on time.
func TestDialContextSharedEnds(t *testing.T) {
	d := &Dialer{timeout: 50 * time.Millisecond}
	ctx, cancel := d.dialContext(context.Background())
	defer cancel()
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the shared dial context did not end 30 s after its 50 ms deadline")
	}
}

// Ensure a caller context with values, though never canceled, keeps its
// own dial context: a shared one would carry another dial's values.
func TestDialContextValuesNotShared(t *testing.T) {
	d := &Dialer{timeout: 3 * time.Second}
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "a")
	c, cancel := d.dialContext(ctx)
	defer cancel()
	if c.Value(key{}) != "a" {
		t.Fatal("the dial context lost the caller's value")
	}
	s, cancel2 := d.dialContext(context.Background())
	defer cancel2()
	if s.Value(key{}) != nil || s == c {
		t.Fatal("the shared dial context carries a caller's value")
	}
}
