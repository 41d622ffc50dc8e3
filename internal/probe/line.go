package probe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"unicode/utf8"

	"github.com/originlens/originlens/internal/report"
)

// ErrLineTooLong is returned by [ReadLine] for a line over its limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one line of at most max bytes (the trailing "\n" or "\r\n"
// excluded) and returns it without its newline. It never buffers more than
// max+2 bytes of a line. A stream that ends mid-line gives
// [io.ErrUnexpectedEOF], one that ends before any byte [io.EOF]; a line
// that is not valid UTF-8 or holds a NUL byte is an error too, since no
// server of this protocol sends one. It blocks until a newline, the limit,
// or an error (set a deadline on the underlying connection).
func ReadLine(r *bufio.Reader, max int) (string, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > max+2 {
			return "", fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, max)
		}
		buf = append(buf, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(buf) == 0 {
				return "", io.EOF
			}
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	buf = bytes.TrimSuffix(buf[:len(buf)-1], []byte("\r"))
	if len(buf) > max {
		return "", fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, max)
	}
	if bytes.IndexByte(buf, 0) >= 0 || !utf8.Valid(buf) {
		return "", fmt.Errorf("line is not text: %q", clip(string(buf)))
	}
	return string(buf), nil
}

// ClientAddr returns the client address a report says the server saw,
// unmapped.
func ClientAddr(r report.Report) (netip.AddrPort, error) {
	s := r[report.KeyClient]
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("report: client %q is not ip:port: %w", clip(s), err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
