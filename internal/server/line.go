package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
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
// holds no bufio.Reader (MaxLine+2 bytes, pooled): an idle netcat session
// costs its goroutine and a few hundred bytes.
func (s *Server) serveLine(c *conn, rep *report.Fields, d policy.Decision) ending {
	_, err := readLine(c.br, s.cfg.MaxLine)
	if err != nil && !errors.Is(err, io.EOF) {
		return s.readFailed(err, true)
	}
	eof := err != nil

	buf := replyBufs.Get().(*[]byte)
	out := rep.AppendLine((*buf)[:0])
	out = append(out, '\n')
	if d.Decision == policy.Serve || d.Decision == "" {
		out = append(out, d.Greeting...)
		out = append(out, '\n')
	}
	c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	_, err = c.Write(out)
	if cap(out) <= maxPooledReply {
		*buf = out[:0]
		replyBufs.Put(buf)
	}
	if err != nil {
		return s.readFailed(err, false)
	}
	if end := decided(d); end.reason != reasonServed || eof {
		return end
	}

	// Each wait for a line has IdleTimeout: the deadline set before the
	// reply covers the first, the one at the end of each echo the next.
	for {
		if c.br.Buffered() == 0 {
			if err := s.waitIdle(c); err != nil {
				return s.readFailed(err, false)
			}
		}
		line, err := readLine(c.br, s.cfg.MaxLine)
		if len(line) > 0 {
			if string(bytes.TrimRight(line, "\r\n")) == "quit" {
				return ending{event.ActionClosed, event.OutcomeSuccess, reasonServed}
			}
			if line[len(line)-1] != '\n' {
				line = append(line, '\n') // the last line before EOF; line is br's buffer, which is not read again
			}
			if _, werr := c.Write(line); werr != nil {
				return s.readFailed(werr, false)
			}
		}
		if err != nil {
			return s.readFailed(err, false)
		}
		c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	}
}

// replyBufs holds the buffers the report line and greeting are written
// from (one write per reply); a buffer goes back as soon as the write
// returns, so an idle connection holds none.
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledReply: a buffer grown past this (a very long greeting) is left
// to the garbage collector rather than kept in the pool.
const maxPooledReply = 4096

// waitIdle returns c.br to the pool, waits for the client's next bytes
// with a small read of its own, then takes a reader again whose first
// bytes are those. The caller has checked that c.br buffers nothing. It
// blocks until bytes arrive or the read fails (deadline, EOF, reset); on
// failure c.br stays nil and the error is the read's.
func (s *Server) waitIdle(c *conn) error {
	c.br.Reset(nil)
	s.readers.Put(c.br)
	c.br = nil
	n, err := c.lr.Read(c.idle.buf[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	// Bytes with an error (EOF after a last line): the reader sees the
	// bytes, then the error on its next read of lr.
	c.idle.off, c.idle.n, c.idle.r = 0, n, &c.lr
	c.br = s.readers.Get().(*bufio.Reader)
	c.br.Reset(&c.idle)
	return nil
}
