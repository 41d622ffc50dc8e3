package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
)

// serveLine speaks the line protocol: the client's first line is consumed,
// the server answers one report line and, when the decision is serve, a
// greeting in the client's language, then echoes every further line until
// EOF, "quit", the idle timeout or a line over MaxLine. Redirected and
// denied clients get the report line only. The first line must arrive
// within the first-bytes deadline that handle set. It reads with c.br.
//
// While it waits for a next line with nothing buffered, the connection
// holds no bufio.Reader (MaxLine+2 bytes, pooled), and after parkAfter no
// goroutine either: the echo loop parks it (parked true) and returns, and
// resumeLine continues the loop when the client's next bytes arrive, the
// idle deadline passes or the drain closes it. An idle netcat session then
// costs its conn and socket, about 2 KiB.
func (s *Server) serveLine(c *conn, rep *report.Fields, d policy.Decision) (end ending, parked bool) {
	_, err := readLine(c.br, s.cfg.MaxLine)
	if err != nil && !errors.Is(err, io.EOF) {
		return s.readFailed(err, true), false
	}
	eof := err != nil

	buf := replyBufs.Get().(*[]byte)
	out := rep.AppendLine((*buf)[:0])
	out = append(out, '\n')
	if d.Decision == policy.Serve || d.Decision == "" {
		out = append(out, d.Greeting...)
		out = append(out, '\n')
	}
	s.setIdleDeadline(c)
	_, err = c.Write(out)
	if cap(out) <= maxPooledReply {
		*buf = out[:0]
		replyBufs.Put(buf)
	}
	if err != nil {
		return s.readFailed(err, false), false
	}
	if end := decided(d); end.reason != reasonServed || eof {
		return end, false
	}
	return s.echo(c)
}

// resumeLine is the continuation of a parked line connection, on the worker
// the lot (or the drain) handed it to: the client's next bytes, EOF or a
// reset arrived, its idle deadline passed, or the drain closed it. It goes
// on with the echo loop where it parked, whose first read returns at once
// with the bytes or the error, and ends the connection as handle would
// have (finish: close, publish). It returns true when the connection has
// ended, false when it parked again.
func (s *Server) resumeLine(c *conn) (ended bool) {
	end, parked := s.echo(c)
	if parked {
		return false
	}
	s.finish(c, end)
	return true
}

// echo writes back every line the client sends until EOF, "quit", the
// idle deadline, a line over MaxLine or a failed write, and returns how
// the connection ended; or it parks the connection (parked true: c is the
// lot's, the caller must not touch it).
//
// Each wait for a line has IdleTimeout: the deadline set before the reply
// covers the first, the one at the end of each echo the next.
func (s *Server) echo(c *conn) (end ending, parked bool) {
	for {
		if c.br == nil || c.br.Buffered() == 0 {
			parked, err := s.waitLine(c)
			if parked {
				return ending{}, true
			}
			if err != nil {
				return s.readFailed(err, false), false
			}
		}
		line, err := readLine(c.br, s.cfg.MaxLine)
		if len(line) > 0 {
			if string(bytes.TrimRight(line, "\r\n")) == "quit" {
				return ending{event.ActionClosed, event.OutcomeSuccess, reasonServed}, false
			}
			if line[len(line)-1] != '\n' {
				line = append(line, '\n') // the last line before EOF; line is br's buffer, which is not read again
			}
			if _, werr := c.Write(line); werr != nil {
				return s.readFailed(werr, false), false
			}
		}
		if err != nil {
			return s.readFailed(err, false), false
		}
		s.setIdleDeadline(c)
	}
}

// setIdleDeadline starts a wait of IdleTimeout for the client's next line
// (reads and writes), and keeps its end in c for the lot.
func (s *Server) setIdleDeadline(c *conn) {
	c.deadline = time.Now().Add(s.cfg.IdleTimeout)
	c.SetDeadline(c.deadline)
}

// replyBufs holds the buffers the report line and greeting are written
// from (one write per reply); a buffer goes back as soon as the write
// returns, so an idle connection holds none.
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledReply: a buffer grown past this (a very long greeting) is left
// to the garbage collector rather than kept in the pool.
const maxPooledReply = 4096

// parkAfter is how long the echo loop waits for a next line on its own
// goroutine before it parks the connection. A short connection (netcat
// sends a line, reads the answer and closes) ends within it, on the
// goroutine, at the cost of a timer; parking and waking costs two
// epoll_ctl calls and a hand-over between goroutines.
const parkAfter = 200 * time.Millisecond

// maxGraceWaits bounds the echo loops that wait out parkAfter on their
// goroutine (8 KiB of stack each): past it, a waiting connection parks at
// once. A burst of clients that connect and stay silent then holds at
// most this many goroutines (and leaves at most this many idle workers),
// not one per client.
const maxGraceWaits = 256

// waitLine returns c.br (if any) to the pool, waits for the client's next
// bytes with a small read of its own, then takes a reader again whose
// first bytes are those. The caller has checked that c.br buffers nothing.
//
// With a lot, it waits on its goroutine for parkAfter at most (graceWait);
// then, if the lot takes c, it returns parked true at once and c is the
// lot's. Otherwise (no lot, a deadline nearer than parkAfter, the lot
// refused) it blocks until bytes arrive or the read fails (deadline, EOF,
// reset); on failure c.br stays nil and the error is the read's. Called on
// a parked connection's resumption (c.woken), it reads at once: what woke
// c is there to read.
func (s *Server) waitLine(c *conn) (parked bool, err error) {
	if c.br != nil {
		c.br.Reset(nil)
		s.readers.Put(c.br)
		c.br = nil
	}
	var n int
	if !c.woken && c.lot != nil {
		if parked, n, err = s.graceWait(c); parked {
			return true, nil
		}
	}
	c.woken = false
	if n == 0 && err == nil {
		n, err = c.lr.Read(c.idle.buf[:])
	}
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return false, err
	}
	// Bytes with an error (EOF after a last line): the reader sees the
	// bytes, then the error on its next read of lr.
	c.idle.off, c.idle.n, c.idle.r = 0, n, &c.lr
	c.br = s.readers.Get().(*bufio.Reader)
	c.br.Reset(&c.idle)
	return false, nil
}

// graceWait reads the client's next bytes into c.idle.buf if they arrive
// within parkAfter (not at all when maxGraceWaits goroutines already wait
// so), and parks c if they do not. It returns what the read got; or
// parked true; or nothing (false, 0, nil) when it neither got bytes nor
// parked c (the idle deadline is nearer than the grace, the lot refused):
// the caller then reads as before. The socket's read deadline is
// c.deadline again when it returns bytes or parks: the rest of a line, and
// the read after a wake, have the idle deadline, which reports today's
// idle-timeout when it has passed.
func (s *Server) graceWait(c *conn) (parked bool, n int, err error) {
	grace := time.Now().Add(time.Duration(s.parkAfter.Load()))
	if !grace.Before(c.deadline) || pending(c) {
		return false, 0, nil
	}
	if s.graceWaits.Add(1) <= maxGraceWaits {
		c.SetReadDeadline(grace)
		n, err = c.lr.Read(c.idle.buf[:])
		if n > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			c.SetReadDeadline(c.deadline)
		}
		if n > 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			s.graceWaits.Add(-1)
			return false, n, err
		}
	}
	s.graceWaits.Add(-1)
	return c.lot.park(c), 0, nil
}

// pending reports bytes that were read from the socket but not yet by the
// echo loop: the resolved connection's copy of what arrived with the PROXY
// header (origin.Conn), or c.idle's. The socket's epoll readiness knows
// nothing of them, so such a connection must read, not park. (Today br's
// first fill takes all of them, as origin's header reader is no larger
// than br; this keeps parking correct if the sizes change.)
func pending(c *conn) bool {
	b, ok := c.lr.r.(interface{ Buffered() int })
	return ok && b.Buffered() > 0 || c.idle.off < c.idle.n
}
