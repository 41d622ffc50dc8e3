// Package report is the wire format of what the server saw of a client: the
// first line the app answers a netcat user, the JSON object it answers an
// HTTP client, and what nc-probe parses to prove client IP preservation.
//
// Both forms carry the same keys. The line form is key=value pairs separated
// by single spaces, in a fixed key order; a value that is empty, or holds a
// space, a double quote, an equals sign or a control character, is written
// as a Go double-quoted string. The JSON form is a flat object with the same
// keys and string values. Keys whose value is empty are left out of both
// forms, except the required keys (client, via, peer, server, conn,
// decision), which are always present.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Keys, in the order the line form writes them. Parsers must accept any
// order and ignore keys they do not know, so that keys can be added.
const (
	KeyClient       = "client"       // true client address, ip:port, IPv6 in brackets
	KeyVia          = "via"          // direct, proxy-v1, proxy-v2
	KeyPeer         = "peer"         // the immediate TCP peer, ip:port
	KeyServer       = "server"       // the address the client dialed, ip:port
	KeyConn         = "conn"         // the connection's event.id
	KeyCountry      = "country"      // ISO 3166-1 alpha-2
	KeyCity         = "city"         // city name
	KeyLat          = "lat"          // latitude, decimal degrees
	KeyLon          = "lon"          // longitude, decimal degrees
	KeyASN          = "asn"          // autonomous system number
	KeyClass        = "class"        // address class: public, private, loopback, documentation...
	KeyGeo          = "geo"          // GeoError when the client's GeoIP record did not decode; absent otherwise
	KeyJurisdiction = "jurisdiction" // the policy's jurisdiction for the country (EU...)
	KeyDecision     = "decision"     // serve, redirect, deny
	KeyRegion       = "region"       // the region that serves the client's data
	KeyRule         = "rule"         // the policy rule that matched
	KeyLang         = "lang"         // the language of the greeting
	KeyReason       = "reason"       // why the client was denied or redirected
	KeyProxy        = "proxy"        // "ignored": the payload began with a PROXY signature the server did not read
)

// Order is the key order of the line form.
var Order = []string{
	KeyClient, KeyVia, KeyPeer, KeyServer, KeyConn,
	KeyCountry, KeyCity, KeyLat, KeyLon, KeyASN, KeyClass, KeyGeo,
	KeyJurisdiction, KeyDecision, KeyRegion, KeyRule, KeyLang, KeyReason,
	KeyProxy,
}

// GeoError is the value of [KeyGeo] for a GeoIP lookup error: the
// client's record exists but did not decode, so the location keys hold
// only what could be decoded (often just the country) and the rules
// decided on the error (the default rules deny it).
const GeoError = "error"

var required = map[string]bool{
	KeyClient: true, KeyVia: true, KeyPeer: true, KeyServer: true, KeyConn: true, KeyDecision: true,
}

// Required reports whether key is always present in a report.
func Required(key string) bool { return required[key] }

// MaxLineLength bounds a report line that [ParseLine] accepts, newline
// excluded.
const MaxLineLength = 4096

// Report is a set of key/value pairs. The zero value is an empty report.
// A Report is a map and not safe for concurrent mutation.
type Report map[string]string

// Line encodes the report in the line form, without the trailing newline.
func (r Report) Line() string {
	var b strings.Builder
	b.Grow(256)
	write := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if needsQuote(v) {
			b.WriteString(strconv.Quote(v))
		} else {
			b.WriteString(v)
		}
	}
	for _, k := range Order {
		if v := r[k]; v != "" || required[k] {
			write(k, v)
		}
	}
	// Keys outside Order follow, sorted, so the output is stable.
	var extra []string
	for k, v := range r {
		if v != "" && !slices.Contains(Order, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		write(k, r[k])
	}
	return b.String()
}

// MarshalJSON encodes the report as a flat JSON object with the same keys
// as [Report.Line].
func (r Report) MarshalJSON() ([]byte, error) {
	m := make(map[string]string, len(r)+len(required))
	for k := range required {
		m[k] = ""
	}
	for k, v := range r {
		if v != "" || required[k] {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// Errors returned by [ParseLine].
var (
	ErrTooLong   = errors.New("report: line too long")
	ErrMalformed = errors.New("report: malformed line")
	ErrMissing   = errors.New("report: required key missing")
)

// ParseLine decodes a report line (with or without its trailing newline).
// It fails on a malformed pair, a line over [MaxLineLength] bytes or a
// missing required key; unknown keys are kept.
func ParseLine(line string) (Report, error) {
	line = strings.TrimRight(line, "\r\n")
	if len(line) > MaxLineLength {
		return nil, ErrTooLong
	}
	r := Report{}
	s := line
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: expected key=value at %q", ErrMalformed, clip(s))
		}
		key := s[:eq]
		if strings.ContainsAny(key, " \"\t") {
			return nil, fmt.Errorf("%w: bad key %q", ErrMalformed, clip(key))
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%w: bad quoted value for %s", ErrMalformed, key)
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		if _, dup := r[key]; dup {
			return nil, fmt.Errorf("%w: duplicate key %s", ErrMalformed, key)
		}
		r[key] = val
		if len(s) > 0 {
			if s[0] != ' ' || len(s) == 1 {
				return nil, fmt.Errorf("%w: expected a single space after %s", ErrMalformed, key)
			}
			s = s[1:]
		}
	}
	return r, r.check()
}

// ParseJSON decodes the JSON form and checks the required keys.
func ParseJSON(b []byte) (Report, error) {
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if r == nil {
		return nil, fmt.Errorf("%w: not an object", ErrMalformed)
	}
	return r, r.check()
}

func (r Report) check() error {
	for _, k := range Order {
		if required[k] {
			if _, ok := r[k]; !ok {
				return fmt.Errorf("%w: %s", ErrMissing, k)
			}
		}
	}
	return nil
}

func needsQuote(v string) bool {
	if v == "" {
		return true
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == '"' || c == '=' || c == 0x7f {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
