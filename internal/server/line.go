package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
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
// within the first-bytes deadline that handle set.
func (s *Server) serveLine(c *conn, br *bufio.Reader, rep *report.Fields, d policy.Decision) ending {
	_, err := readLine(br, s.cfg.MaxLine)
	if err != nil && !errors.Is(err, io.EOF) {
		return s.readFailed(err, true)
	}
	eof := err != nil

	out := make([]byte, 0, 512)
	out = rep.AppendLine(out)
	out = append(out, '\n')
	if d.Decision == policy.Serve || d.Decision == "" {
		out = append(out, d.Greeting...)
		out = append(out, '\n')
	}
	c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if _, err := c.Write(out); err != nil {
		return s.readFailed(err, false)
	}
	if end := decided(d); end.reason != reasonServed || eof {
		return end
	}

	for {
		c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := readLine(br, s.cfg.MaxLine)
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
	}
}
