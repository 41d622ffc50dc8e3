package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/server"
)

// Ensure the echo loop, which gives its reader back while it waits for a
// next line, echoes lines that arrive in pieces after a wait: shorter and
// longer than its own first read, exactly MaxLine long, and a last line
// without a newline before EOF; an over-long line still ends it; and the
// byte counts include every byte.
func TestEchoAfterIdleWait(t *testing.T) {
	const maxLine = 100
	ts := startServer(t, func(c *server.Config) { c.MaxLine = maxLine })
	pause := func() { time.Sleep(20 * time.Millisecond) } // let the server wait without a reader

	c := newLineClient(t, ts.addr)
	c.report(t)
	c.readLine(t) // greeting
	sent := len("hello\n")
	lines := []string{"a", "short line", strings.Repeat("x", 40), strings.Repeat("m", maxLine)}
	for _, l := range lines {
		pause()
		// In three pieces: the server's wait read may end inside the line.
		third := len(l) / 3
		for _, piece := range []string{l[:third], l[third : 2*third], l[2*third:] + "\n"} {
			c.send(t, piece)
			sent += len(piece)
			pause()
		}
		if got := c.readLine(t); got != l {
			t.Errorf("echo = %q; want %q", got, l)
		}
	}
	pause()
	c.send(t, "two\nlines\n")
	sent += len("two\nlines\n")
	if a, b := c.readLine(t), c.readLine(t); a != "two" || b != "lines" {
		t.Errorf("echo = %q, %q; want two, lines", a, b)
	}
	pause()
	c.send(t, "last without newline")
	sent += len("last without newline")
	c.Conn.(interface{ CloseWrite() error }).CloseWrite()
	if got := c.readLine(t); got != "last without newline" {
		t.Errorf("echo = %q; want the last line", got)
	}
	expectEOF(t, c, c.br)

	long := newLineClient(t, ts.addr)
	long.report(t)
	long.readLine(t)
	pause()
	long.send(t, strings.Repeat("y", 10))
	pause()
	long.send(t, strings.Repeat("y", maxLine)+"\n")
	expectEOF(t, long, long.br)

	evs := bySource(ts.rec.wait(2))
	ev := evs[addrOf(t, c.LocalAddr())]
	if ev.Event.Action != event.ActionClosed || ev.Event.Reason != "served" {
		t.Errorf("echo client: %s/%s; want connection-closed/served", ev.Event.Action, ev.Event.Reason)
	}
	if ev.Source.Bytes != int64(sent) {
		t.Errorf("source.bytes = %d; want %d", ev.Source.Bytes, sent)
	}
	if ev := evs[addrOf(t, long.LocalAddr())]; ev.Event.Reason != "line-too-long" {
		t.Errorf("long: reason %s; want line-too-long", ev.Event.Reason)
	}
}
