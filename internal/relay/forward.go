package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Ends: how a relayed connection ended (the event's relay.end).
const (
	EndClientClosed        = "client-closed"        // the client's side ended first (FIN or reset)
	EndUpstreamClosed      = "upstream-closed"      // the upstream's side ended first
	EndUpstreamRefused     = "upstream-refused"     // dial: the upstream reset the connection (nothing listens)
	EndUpstreamUnreachable = "upstream-unreachable" // dial: no answer, no route, or no transparent socket
	EndIdleTimeout         = "idle-timeout"         // no byte either way for the idle timeout
	EndDenied              = "denied"               // the rules denied the client: the upstream was not contacted
	EndShutdown            = "shutdown"             // the server closed it at the end of its drain
)

// DialEnd returns EndUpstreamRefused or EndUpstreamUnreachable for an error
// of [Dialer.Dial].
func DialEnd(err error) string {
	if errors.Is(err, ErrRefused) {
		return EndUpstreamRefused
	}
	return EndUpstreamUnreachable
}

// Result is what [Forward] did.
type Result struct {
	FromClient int64  // bytes forwarded from the client to the upstream, pending bytes included
	ToClient   int64  // bytes forwarded from the upstream to the client
	End        string // EndClientClosed, EndUpstreamClosed or EndIdleTimeout
	Err        error  // the first error other than a clean end of stream, if any
}

// Forward copies bytes between client and up until both directions have
// ended, then returns; it does not close either connection. pending (bytes
// already read from the client, e.g. after its PROXY header) goes to the
// upstream first. Each direction is an io.Copy between the two
// *net.TCPConn, which Linux serves with splice(2). When a direction reaches
// a clean end of stream its destination is half-closed (CloseWrite) and the
// other direction goes on. An error in either direction, or no byte either
// way for idle, ends both. Forward blocks; it runs one goroutine of its own,
// which has returned when Forward returns.
func Forward(client *net.TCPConn, pending []byte, up *net.TCPConn, idle time.Duration) Result {
	// One allocation holds all the state of both directions (the second
	// goroutine's included): a relayed connection is short, and each
	// allocation shows in its cost.
	f := &forwarder{idle: idle, tick: max(idle/4, time.Millisecond), client: client, up: up,
		start: time.Now()}
	f.last.Store(f.start.UnixNano())
	f.first.Store(-1)
	f.wg.Add(1)
	go f.fromUpstream()
	f.run(0, up, client, pending)
	f.wg.Wait()
	first := int(f.first.Load())
	halves := &f.halves
	r := Result{FromClient: halves[0].n, ToClient: halves[1].n}
	switch {
	case halves[0].idle || halves[1].idle:
		// Also after one side half-closed: the other then went silent,
		// and the idle timeout, not that side, ended the connection.
		r.End = EndIdleTimeout
	case first == 0:
		r.End = EndClientClosed
	default:
		r.End = EndUpstreamClosed
	}
	r.Err = halves[first].err
	if r.Err == nil {
		r.Err = halves[1-first].err
	}
	return r
}

// copyRound bounds the bytes of one io.Copy round of [forwarder.copy]: a
// destination that takes less than this in the idle timeout counts as
// stopped (a splice round could otherwise move a whole 1 MiB pipe under
// one write deadline, with no progress seen until it ends).
const copyRound = 128 << 10

// forwarder is the state the two directions of one Forward share.
type forwarder struct {
	idle, tick time.Duration
	client, up *net.TCPConn
	start      time.Time    // when Forward began: the first rounds' deadlines count from it
	last       atomic.Int64 // unix nanoseconds of the last progress either way
	stopped    atomic.Bool  // abort was called: deadline errors are not idleness
	first      atomic.Int32 // the direction that ended first (0: from the client), -1 before
	wg         sync.WaitGroup
	halves     [2]half // how each direction ended, written by its goroutine
	lrs        [2]io.LimitedReader
}

// fromUpstream is the upstream-to-client direction, on its own goroutine.
func (f *forwarder) fromUpstream() {
	defer f.wg.Done()
	f.run(1, f.client, f.up, nil)
}

// run copies one direction (i: 0 from the client, 1 from the upstream)
// and records how it ended. A direction that fails or goes idle ends both
// at once: the other may be blocked reading a silent peer (an upstream
// reset while the client says nothing must not wait for the idle timeout).
func (f *forwarder) run(i int, dst, src *net.TCPConn, pending []byte) {
	h := f.copy(i, dst, src, pending)
	if h.err != nil || h.idle {
		f.abort(f.client, f.up)
	}
	f.halves[i] = h
	f.first.CompareAndSwap(-1, int32(i))
}

// half is how one direction ended.
type half struct {
	n    int64
	err  error // nil for a clean end of stream
	idle bool  // ended by the idle timeout
}

// copy copies src to dst until src's end of stream (then half-closes dst),
// an error, the idle timeout or an abort. The read deadline is re-armed
// every tick so that progress is recorded while io.Copy splices; the write
// deadline is the idle timeout, which ends a peer that stopped reading.
func (f *forwarder) copy(i int, dst, src *net.TCPConn, pending []byte) half {
	var h half
	round := f.start
	if len(pending) > 0 {
		dst.SetWriteDeadline(time.Now().Add(f.idle))
		n, err := dst.Write(pending)
		h.n += int64(n)
		if err != nil {
			h.err, h.idle = err, isTimeout(err) && !f.stopped.Load()
			return h
		}
		round = time.Now()
		f.last.Store(round.UnixNano())
	}
	// Each round moves at most copyRound bytes (a LimitedReader of a
	// *net.TCPConn still splices): progress is recorded, and the write
	// deadline re-armed, at least that often, so a peer that reads slowly
	// but steadily is not taken for one that stopped. A round starts when
	// the previous one ended (the first, when Forward began or the pending
	// bytes were written): one clock reading per round.
	lr := &f.lrs[i]
	lr.R = src
	for {
		src.SetReadDeadline(round.Add(f.tick))
		dst.SetWriteDeadline(round.Add(f.idle))
		lr.N = copyRound
		n, err := io.Copy(dst, lr)
		h.n += n
		now := time.Now()
		if n > 0 {
			f.last.Store(now.UnixNano())
		}
		switch {
		case err == nil && n == copyRound:
			// The round's limit, not the end of the stream.
		case err == nil:
			dst.CloseWrite()
			return h
		case f.stopped.Load():
			return h // the other direction ended the connection
		case isTimeout(err) && now.Sub(round) >= f.idle:
			// The write deadline: the destination took nothing for idle.
			h.err, h.idle = err, true
			return h
		case isTimeout(err):
			if now.Sub(time.Unix(0, f.last.Load())) >= f.idle {
				h.err, h.idle = err, true
				return h
			}
		default:
			h.err = err
			return h
		}
		round = now
	}
}

// abort wakes the other direction at once: both connections' deadlines
// pass now.
func (f *forwarder) abort(a, b *net.TCPConn) {
	f.stopped.Store(true)
	now := time.Now()
	a.SetDeadline(now)
	b.SetDeadline(now)
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// sockoptError is a failed setsockopt on an upstream socket.
type sockoptError struct {
	opt string
	err error
}

func (e *sockoptError) Error() string { return "setsockopt " + e.opt + ": " + e.err.Error() }
func (e *sockoptError) Unwrap() error { return e.err }
