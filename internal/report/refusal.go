package report

import (
	"bytes"
	"strings"
)

// Values of [KeyProxy].
const (
	// ProxyIgnored: the connection's payload (after any PROXY header the
	// server did read) began with a PROXY v1 or v2 signature, which the
	// server treated as data: it reports the socket's peer (or the header
	// it trusts), not the address that signature claims.
	ProxyIgnored = "ignored"
)

// KeyError is the key of a refusal line: the one line a server writes
// instead of a report when it refuses a connection before reading it, e.g.
// "error=proxy-header-required peer=10.0.1.7:41234". A refusal line has no
// required report keys; [ParseRefusal] reads it.
const KeyError = "error"

// Values of [KeyError]: why the connection was refused.
const (
	// ErrorHeaderRequired: the server wanted a PROXY header (mode required,
	// or a trusted peer in mode trusted) and the first bytes were not one.
	ErrorHeaderRequired = "proxy-header-required"
	// ErrorHeaderUntrusted: a PROXY header came from a peer outside the
	// trusted proxies (mode trusted): a spoof attempt.
	ErrorHeaderUntrusted = "proxy-header-untrusted"
	// ErrorHeaderMalformed: a PROXY header was expected and started but
	// was not valid (bad syntax, bad CRC32C, too long).
	ErrorHeaderMalformed = "proxy-header-malformed"
)

// AppendRefusal appends a refusal line, without its newline, to dst:
// error=<code> and, when peer is not empty, peer=<peer>.
func AppendRefusal(dst []byte, code, peer string) []byte {
	start := len(dst)
	dst = appendPair(dst, start, KeyError, code, true)
	return appendPair(dst, start, KeyPeer, peer, false)
}

// ParseRefusal decodes a refusal line. ok is false when line is not one
// (it does not start with "error=" or does not parse).
func ParseRefusal(line string) (r Report, ok bool) {
	if !strings.HasPrefix(line, KeyError+"=") {
		return nil, false
	}
	r, err := ParseLine(line)
	if err != nil && r == nil {
		// Malformed. (A well-formed refusal parses, then fails only the
		// check of the report keys, with r set.)
		return nil, false
	}
	return r, r[KeyError] != ""
}

// v2Signature is the 12-byte PROXY protocol v2 signature.
const v2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// HasProxySignature reports whether b starts with a complete PROXY v1
// ("PROXY ") or v2 signature.
func HasProxySignature(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PROXY ")) || bytes.HasPrefix(b, []byte(v2Signature))
}

// RefusalFor returns the error= code for an origin error kind (the labels
// of origin.Kind): "missing", "spoof", "malformed" and "crc" get one; the
// others ("empty", "timeout", "io": nobody is reading) get "".
func RefusalFor(kind string) string {
	switch kind {
	case "missing":
		return ErrorHeaderRequired
	case "spoof":
		return ErrorHeaderUntrusted
	case "malformed", "crc":
		return ErrorHeaderMalformed
	}
	return ""
}
