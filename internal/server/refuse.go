package server

import (
	"bufio"
	"io"
	"net"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
)

// refusalWait bounds how long a refused connection is kept to drain the
// client's bytes after the refusal line, so that closing it sends a FIN
// and not a reset that could drop the line before the client reads it.
const refusalWait = 500 * time.Millisecond

// refuse writes the refusal line for a Resolve error on c (see
// docs/protocol.md), half-closes, and reads what the client still sends
// for at most refusalWait (and 64 KiB). It blocks for at most about
// refusalWait plus one write.
func refuse(c net.Conn, raw net.Conn, peer string, err error) {
	code := report.RefusalFor(origin.Kind(err))
	if code == "" {
		return
	}
	line := report.AppendRefusal(make([]byte, 0, 96), code, peer)
	line = append(line, '\n')
	_ = c.SetDeadline(time.Now().Add(refusalWait))
	if _, werr := c.Write(line); werr != nil {
		return
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// markIgnoredHeader sets rep's proxy key when the payload buffered in br
// starts with a PROXY signature: the server reads it as data, and the
// client learns that the header it (or a proxy) sent was not used.
func markIgnoredHeader(rep *report.Fields, br *bufio.Reader) {
	b, _ := br.Peek(min(br.Buffered(), 12))
	if report.HasProxySignature(b) {
		rep.Proxy = report.ProxyIgnored
	}
}
