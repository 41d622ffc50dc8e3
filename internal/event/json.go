package event

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON encoding (one object, no trailing
// newline) to dst and returns the extended buffer. The bytes are exactly
// what encoding/json.Marshal produces for the Event, field order, omitted
// fields, HTML-safe string escaping and number formats included (a test
// and a fuzz test compare the two), at a fraction of the cost: no
// reflection and no allocation beyond growing dst.
//
// A source.geo.location that is not a place ([ValidLocation] false: NaN,
// infinite or out of range) is never written: it is written as absent,
// with source.geo.location_invalid true, so that a float never fails the
// encoding nor the event's indexing. (encoding/json would fail on NaN.)
//
// It fails, like encoding/json, only on a time outside the years 0-9999
// (or with a zone offset RFC 3339 cannot express); dst is then returned as
// given, with the error.
func (e *Event) AppendJSON(dst []byte) ([]byte, error) {
	b := dst
	var err error
	b = append(b, `{"@timestamp":`...)
	if b, err = appendTime(b, e.Timestamp, "@timestamp"); err != nil {
		return dst, e.encodeErr(err)
	}
	b = append(b, `,"ecs":{"version":`...)
	b = appendString(b, e.ECS.Version)

	m := &e.Event
	b = append(b, `},"event":{"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"kind":`...)
	b = appendString(b, m.Kind)
	b = append(b, `,"category":`...)
	if m.Category == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, c := range m.Category {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, c)
		}
		b = append(b, ']')
	}
	b = append(b, `,"action":`...)
	b = appendString(b, m.Action)
	b = append(b, `,"outcome":`...)
	b = appendString(b, m.Outcome)
	if m.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, m.Reason)
	}
	b = append(b, `,"start":`...)
	if b, err = appendTime(b, m.Start, "event.start"); err != nil {
		return dst, e.encodeErr(err)
	}
	b = append(b, `,"end":`...)
	if b, err = appendTime(b, m.End, "event.end"); err != nil {
		return dst, e.encodeErr(err)
	}
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, m.Duration, 10)
	if m.Dataset != "" {
		b = append(b, `,"dataset":`...)
		b = appendString(b, m.Dataset)
	}

	s := &e.Source
	b = append(b, `},"source":{"ip":`...)
	b = appendAddr(b, s.IP)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(s.Port), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, s.Bytes, 10)
	if g := &s.Geo; *g != (Geo{}) {
		locOK := g.Location != nil && ValidLocation(g.Location.Lat, g.Location.Lon)
		locInvalid := g.LocationInvalid || g.Location != nil && !locOK
		b = append(b, `,"geo":{`...)
		n := len(b)
		b = appendOptString(b, n, "country_iso_code", g.CountryISOCode)
		b = appendOptString(b, n, "country_name", g.CountryName)
		b = appendOptString(b, n, "continent_code", g.ContinentCode)
		b = appendOptString(b, n, "region_iso_code", g.RegionISOCode)
		b = appendOptString(b, n, "region_name", g.RegionName)
		b = appendOptString(b, n, "city_name", g.CityName)
		if locOK {
			if len(b) > n {
				b = append(b, ',')
			}
			b = append(b, `"location":{"lat":`...)
			b = appendFloat(b, g.Location.Lat)
			b = append(b, `,"lon":`...)
			b = appendFloat(b, g.Location.Lon)
			b = append(b, '}')
		}
		b = appendOptString(b, n, "timezone", g.Timezone)
		b = appendOptString(b, n, "class", g.Class)
		b = appendOptString(b, n, "error", g.Error)
		if locInvalid {
			if len(b) > n {
				b = append(b, ',')
			}
			b = append(b, `"location_invalid":true`...)
		}
		b = append(b, '}')
	}
	if a := &s.AS; a.Number != 0 || a.Organization.Name != "" {
		b = append(b, `,"as":{`...)
		n := len(b)
		if a.Number != 0 {
			b = append(b, `"number":`...)
			b = strconv.AppendUint(b, uint64(a.Number), 10)
		}
		if a.Organization.Name != "" {
			if len(b) > n {
				b = append(b, ',')
			}
			b = append(b, `"organization":{"name":`...)
			b = appendString(b, a.Organization.Name)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	b = appendOptInt(b, "packets", s.Packets)

	d := &e.Destination
	b = append(b, `},"destination":{"ip":`...)
	b = appendAddr(b, d.IP)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(d.Port), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, d.Bytes, 10)
	b = appendOptInt(b, "packets", d.Packets)

	b = append(b, `},"network":{"transport":`...)
	b = appendString(b, e.Network.Transport)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Network.Type)
	if e.Network.Protocol != "" {
		b = append(b, `,"protocol":`...)
		b = appendString(b, e.Network.Protocol)
	}

	c := &e.ClientIP
	b = append(b, `},"clientip":{"via":`...)
	b = appendString(b, c.Via)
	b = append(b, `,"peer":{"ip":`...)
	b = appendAddr(b, c.Peer.IP)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(c.Peer.Port), 10)
	b = append(b, '}')
	if c.VPCEID != "" {
		b = append(b, `,"vpce_id":`...)
		b = appendString(b, c.VPCEID)
	}
	if c.LimitPrefix != (netip.Prefix{}) {
		b = append(b, `,"limit_prefix":"`...)
		b, _ = c.LimitPrefix.AppendText(b) // never fails; no character needs escaping
		b = append(b, '"')
	}
	b = append(b, '}')

	if r := &e.Residency; *r != (Residency{}) {
		b = append(b, `,"residency":{`...)
		n := len(b)
		b = appendOptString(b, n, "jurisdiction", r.Jurisdiction)
		b = appendOptString(b, n, "decision", r.Decision)
		b = appendOptString(b, n, "region", r.Region)
		b = appendOptString(b, n, "rule", r.Rule)
		b = append(b, '}')
	}
	if e.App != (App{}) {
		b = append(b, `,"app":{`...)
		b = appendOptString(b, len(b), "lang", e.App.Lang)
		b = append(b, '}')
	}
	if f := &e.Flow; *f != (Flow{}) { // omitzero: encoding/json compares with the zero value
		b = append(b, `,"flow":{"first_seen":`...)
		if b, err = appendTime(b, f.FirstSeen, "flow.first_seen"); err != nil {
			return dst, e.encodeErr(err)
		}
		b = append(b, `,"last_seen":`...)
		if b, err = appendTime(b, f.LastSeen, "flow.last_seen"); err != nil {
			return dst, e.encodeErr(err)
		}
		b = append(b, `,"end":`...)
		b = appendString(b, f.End)
		b = appendOptInt(b, "rate_limited", f.RateLimited)
		b = appendOptInt(b, "truncated", f.Truncated)
		b = append(b, '}')
	}
	if r := &e.Relay; *r != (Relay{}) {
		b = append(b, `,"relay":{"upstream":{"ip":`...)
		b = appendAddr(b, r.Upstream.IP)
		b = append(b, `,"port":`...)
		b = strconv.AppendUint(b, uint64(r.Upstream.Port), 10)
		b = append(b, `},"mode":`...)
		b = appendString(b, r.Mode)
		b = append(b, `,"end":`...)
		b = appendString(b, r.End)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendOptInt appends ,"key":n (omitempty: nothing for zero).
func appendOptInt(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, n, 10)
}

func (e *Event) encodeErr(err error) error {
	return fmt.Errorf("encoding event %s: %w", e.Event.ID, err)
}

// appendOptString appends "key":"v" (omitempty), preceded by a comma
// unless it is the first member written since offset first.
func appendOptString(b []byte, first int, key, v string) []byte {
	if v == "" {
		return b
	}
	if len(b) > first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

// appendTime appends t as encoding/json does (time.Time.MarshalJSON: RFC
// 3339 with nanoseconds, trailing zeros of the fraction trimmed, quoted).
// A time in UTC (zone offset 0) in the years 0-9999, every event's case,
// is written here by hand, 2026-12-03T13:35:00.123456789Z; any other goes
// through time.Time.AppendText, which also reports the errors.
func appendTime(b []byte, t time.Time, field string) ([]byte, error) {
	off := 0
	if t.Location() != time.UTC {
		_, off = t.Zone()
	}
	sec := t.Unix()
	if off != 0 || sec < minRFC3339 || sec > maxRFC3339 {
		b = append(b, '"')
		out, err := t.AppendText(b)
		if err != nil {
			return b, fmt.Errorf("%s: %w", field, err)
		}
		return append(out, '"'), nil
	}
	return appendUTC(b, uint64(sec-minRFC3339), uint32(t.Nanosecond())), nil
}

// The seconds since 1970 of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const (
	minRFC3339 = -62167219200
	maxRFC3339 = 253402300799
)

// digits2 holds "00" to "99".
const digits2 = "0001020304050607080910111213141516171819" +
	"2021222324252627282930313233343536373839" +
	"4041424344454647484950515253545556575859" +
	"6061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendUTC appends, quoted, the RFC 3339 time sec seconds after
// 0000-01-01T00:00:00Z (at most year 9999) and ns nanoseconds, as
// time.RFC3339Nano writes it: the fraction without its trailing zeros,
// none at all for a whole second.
func appendUTC(b []byte, sec uint64, ns uint32) []byte {
	// The civil date from the day number (H. Hinnant's days_to_civil) in
	// eras of 400 years, counted from 0000-03-01: days 0-59 of year 0 are
	// the end of era -1, so start one era earlier and take 400 years off.
	days := sec / 86400
	daySec := uint32(sec - days*86400)
	z := days + 146097 - 60 // days since -0400-03-01
	era := z / 146097
	doe := uint32(z - era*146097)
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day := doy - (153*mp+2)/5 + 1
	month := mp + 3
	if month > 12 {
		month -= 12
	}
	year := uint32(era)*400 + yoe - 400
	if month <= 2 {
		year++
	}
	hour, min, s := daySec/3600, daySec/60%60, daySec%60

	var buf [32]byte
	buf[0] = '"'
	hi, lo := 2*(year/100), 2*(year%100)
	buf[1], buf[2], buf[3], buf[4] = digits2[hi], digits2[hi+1], digits2[lo], digits2[lo+1]
	buf[5] = '-'
	buf[6], buf[7] = digits2[2*month], digits2[2*month+1]
	buf[8] = '-'
	buf[9], buf[10] = digits2[2*day], digits2[2*day+1]
	buf[11] = 'T'
	buf[12], buf[13] = digits2[2*hour], digits2[2*hour+1]
	buf[14] = ':'
	buf[15], buf[16] = digits2[2*min], digits2[2*min+1]
	buf[17] = ':'
	buf[18], buf[19] = digits2[2*s], digits2[2*s+1]
	n := 20
	if ns != 0 {
		buf[20] = '.'
		// Nine digits, two at a time from the right, then the zeros off.
		for i := 29; i > 22; i -= 2 {
			q := ns / 100
			r := 2 * (ns - q*100)
			buf[i-1], buf[i] = digits2[r], digits2[r+1]
			ns = q
		}
		buf[21] = byte('0' + ns)
		n = 30
		for buf[n-1] == '0' {
			n--
		}
	}
	buf[n], buf[n+1] = 'Z', '"'
	return append(b, buf[:n+2]...)
}

// appendAddr appends a's text form (empty for the zero Addr) as a JSON
// string, as encoding/json does for an encoding.TextMarshaler.
func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Zone() != "" {
		// A zone is free text: escape it.
		return appendString(b, a.String())
	}
	b = append(b, '"')
	b = a.AppendTo(b)
	return append(b, '"')
}

// appendFloat appends a finite f as encoding/json encodes a float64: the
// shortest representation, in exponent form below 1e-6 and from 1e21 on.
// (Callers check that f is finite: see [ValidLocation].)
func appendFloat(b []byte, f float64) []byte {
	// GeoIP coordinates have four decimals or fewer: write those digits
	// by hand when the decimal k/10^4 is the float (the division of two
	// exact floats is correctly rounded). Below 1e6 at most one decimal
	// with four places lies within an ulp of f, so it is also the shortest
	// that reads back as f, which strconv would write. (Zero is left to
	// strconv for its sign.)
	if a := math.Abs(f); a != 0 && a < 1e6 {
		if k := math.Round(f * 1e4); k/1e4 == f {
			n := int64(k)
			if n < 0 {
				b = append(b, '-')
				n = -n
			}
			b = strconv.AppendUint(b, uint64(n/1e4), 10)
			if frac := n % 1e4; frac != 0 {
				d := [5]byte{'.', byte('0' + frac/1000), byte('0' + frac/100%10), byte('0' + frac/10%10), byte('0' + frac%10)}
				end := 5
				for d[end-1] == '0' {
					end--
				}
				b = append(b, d[:end]...)
			}
			return b
		}
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 -> e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// plainJSON[c] is true for the bytes appendString copies unchanged: ASCII
// from 0x20 on, except '"', '\\', '<', '>' and '&'. Every other byte
// (control characters, those five, and the bytes of multi-byte UTF-8) takes
// the slow path.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\\<>&` {
		t[c] = false
	}
	return t
}()

// word returns the eight bytes of s from i on, little-endian (one load).
func word(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plainString reports whether every byte of s is plain (see plainJSON),
// reading it a word at a time: from 4 bytes on, the last word overlaps
// the one before it (or two 4-byte halves overlap).
func plainString(s string) bool {
	switch n := len(s); {
	case n >= 8:
		for i := 0; i+8 < n; i += 8 {
			if !plainWord(word(s, i)) {
				return false
			}
		}
		return plainWord(word(s, n-8))
	case n >= 4:
		return plainWord(uint64(word4(s, 0)) | uint64(word4(s, n-4))<<32)
	}
	for i := range len(s) {
		if !plainJSON[s[i]] {
			return false
		}
	}
	return true
}

// word4 returns the four bytes of s from i on, little-endian (one load).
func word4(s string, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// plainWord reports whether all eight bytes of x are plain (see plainJSON):
// no byte has its high bit set, is below 0x20, or is one of the five. A
// byte b of y = x ^ c*ones is zero where b == c, and y - ones then sets
// its high bit; the borrow it carries may set the next byte's too, but
// only next to a byte that is already not plain, so the answer for the
// word is exact. The same holds for x - 0x20*ones and the bytes below 0x20.
func plainWord(x uint64) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	t := x | (x - 0x20*ones) |
		((x ^ '"'*ones) - ones) | ((x ^ '\\'*ones) - ones) |
		((x ^ '<'*ones) - ones) | ((x ^ '>'*ones) - ones) | ((x ^ '&'*ones) - ones)
	return t&high == 0
}

// appendString appends s as a JSON string exactly as encoding/json.Marshal
// writes it: HTML-safe (<, > and & as \u00XX), control characters escaped,
// invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	if plainString(s) { // the common case: nothing to escape
		b = append(b, s...)
		return append(b, '"')
	}
	start := 0
	for i := 0; i < len(s); {
		// The common case, a run of bytes written as they are: eight at a
		// time while a word holds none that needs escaping, then one table
		// lookup per byte up to the one that does (within that word, as the
		// word test is exact) or the end.
		for i+8 <= len(s) && plainWord(word(s, i)) {
			i += 8
		}
		if i < len(s) && i+8 > len(s) && len(s) >= 8 && plainWord(word(s, len(s)-8)) {
			i = len(s) // the last word, overlapping the one before, is plain too
		}
		for i < len(s) && plainJSON[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
