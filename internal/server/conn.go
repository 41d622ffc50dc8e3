package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/report"
)

// Connection states, for the drain.
const (
	stateActive int32 = iota // reading a first line or a request, or answering
	stateIdle                // HTTP keep-alive: waiting for the next request
	stateClosed              // closed by the drain
)

// conn is an accepted socket that counts its bytes, and everything its
// connection needs between two steps of the data path, so that a parked
// connection (see parkLot) can be continued by another goroutine.
//
// Ownership: exactly one goroutine owns a conn at a time, and only the
// owner reads or writes its fields other than state: the worker running
// handle, then, once it parked (before its first byte, or in the echo
// loop), the lot, then the worker that continues it (Server.resume). The
// hand-overs go through the lot's mutex and the pool's channel, which
// order the fields' writes before the next owner's reads. The drain may read state and close the embedded
// connection from another goroutine at any time (Close is safe for that);
// it takes a parked conn out of the lot before it closes it. The worker
// that ends a connection (finish) is its last owner: it reuses the conn
// for its next connection or leaves it to the garbage collector.
type conn struct {
	net.Conn       // the accepted socket
	in, out  int64 // bytes read from and written to the socket, PROXY header included
	state    atomic.Int32
	lr       limitedReader // between the resolved connection and the bufio.Reader
	// br is the pooled reader over lr (or over idle), nil while the line
	// protocol's echo loop waits without one; finish returns it.
	br *bufio.Reader
	// idle holds the first bytes that arrived while the echo loop waited
	// without a reader, and hands them to the next one before lr.
	idle idleReader
	ev   event.Event   // the connection's event, completed by publish
	rep  report.Fields // what the server answers (once located and decided)
	o    origin.Origin // who the client is (step 1), for the event

	release func() // gives back the per-source limit slot; nil when none was taken
	// deadline ends the wait c may park in: the line protocol's idle
	// deadline (also set on the socket), or firstBy.
	deadline time.Time
	// firstBy is the deadline of the connection's first read (the PROXY
	// header's or the first bytes', whichever handle reads first), fixed
	// by awaitFirstByte before the read starts; zero: the read sets its
	// own from its timeout. headerFirst: that read is Resolve's.
	firstBy     time.Time
	headerFirst bool
	// silent: c is parked (or handed back) before its first byte, so its
	// continuation is the data path from origin on (serve), not the echo
	// loop.
	silent bool

	// Parking (park_linux.go): the lot this connection may park in (nil:
	// it waits on its goroutine), and, while it is parked, its token, its
	// place in the lot's deadline heap and its descriptor.
	lot   *parkLot
	woken bool // handed back by the lot: the next wait reads at once
	token uint64
	index int
	fd    int
	sys   syscall.RawConn // the socket's, taken at its first park
}

// idleWait is how many bytes an echo loop without a reader reads when the
// client's next line starts to arrive; the reader it then takes reads the
// rest.
const idleWait = 32

// idleReader returns the bytes of buf[:n] (from off on) and then reads r.
type idleReader struct {
	buf    [idleWait]byte
	off, n int
	r      io.Reader
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.off < ir.n {
		k := copy(p, ir.buf[ir.off:ir.n])
		ir.off += k
		return k, nil
	}
	return ir.r.Read(p)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in += int64(n)
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out += int64(n)
	return n, err
}

// noLimit64 is the limitedReader budget that never runs out.
const noLimit64 = math.MaxInt64

// errHeaderTooLarge is returned by limitedReader when the HTTP header budget
// is spent.
var errHeaderTooLarge = errors.New("server: request header too large")

// limitedReader reads r until n bytes are spent, then fails with
// errHeaderTooLarge. It bounds an HTTP request's header like net/http's
// MaxHeaderBytes.
type limitedReader struct {
	r    io.Reader
	n    int64
	over bool // a Read found the budget spent
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.over = true
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// errLineTooLong: a line is longer than the reader's buffer allows.
var errLineTooLong = errors.New("server: line too long")

// isRetryableAccept reports accept errors that a pause may cure.
func isRetryableAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// readLine reads one line of at most max bytes (newline excluded). The
// returned slice, newline included when there was one, is valid until the
// next read from br. At EOF it returns the partial last line with io.EOF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errLineTooLong
	}
	if n := len(bytes.TrimRight(line, "\r\n")); n > max {
		return nil, errLineTooLong
	}
	return line, err
}

// httpMethods are the request methods whose request line marks an HTTP
// client; anything else is the line protocol.
var httpMethods = [...]string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// sniff waits for the client's first bytes and tells HTTP from the line
// protocol: HTTP is a first line that starts with a method and a space and
// ends with HTTP/1.0 or HTTP/1.1. It consumes nothing. It blocks until it
// can decide or the connection's read deadline passes; the error is the
// read's (io.EOF when the client sent nothing).
func sniff(br *bufio.Reader) (string, error) {
	n := 1
	for {
		b, err := br.Peek(n)
		if len(b) == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return "", err
		}
		full := len(b) >= br.Size()
		switch matchMethod(b) {
		case matchNone:
			return event.ProtocolLine, nil
		case matchPartial:
			if err != nil {
				// Closed after a method prefix: a line client (or a broken
				// one); the line protocol answers what arrived.
				if errors.Is(err, io.EOF) {
					return event.ProtocolLine, nil
				}
				return "", err
			}
		case matchFull:
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				if isHTTPVersion(b[:i]) {
					return event.ProtocolHTTP, nil
				}
				return event.ProtocolLine, nil
			}
			if full || errors.Is(err, io.EOF) {
				return event.ProtocolLine, nil
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return "", err
			}
		}
		n = min(len(b)+1, br.Size())
	}
}

const (
	matchNone = iota
	matchPartial
	matchFull
)

// matchMethod reports whether b starts with an HTTP method and a space, is
// a proper prefix of one, or neither.
func matchMethod(b []byte) int {
	partial := false
	for _, m := range httpMethods {
		if len(b) >= len(m) {
			if string(b[:len(m)]) == m {
				return matchFull
			}
		} else if string(b) == m[:len(b)] {
			partial = true
		}
	}
	if partial {
		return matchPartial
	}
	return matchNone
}

// isHTTPVersion reports whether a request line (CR optional) ends with
// " HTTP/1.0" or " HTTP/1.1".
func isHTTPVersion(line []byte) bool {
	line = bytes.TrimSuffix(line, []byte("\r"))
	return bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0"))
}
