package report

import "strconv"

// Fields is a report with one field per key of [Order], for building a
// report line without a map: [Fields.AppendLine] writes exactly what
// [Report.Line] writes for the same keys and values, and allocates nothing
// but what dst needs. The zero value is an empty report. Fields has no
// room for keys outside Order; use a [Report] for those.
type Fields struct {
	Client, Via, Peer, Server, Conn string
	Country, City, Lat, Lon, ASN    string
	Class, Geo, Jurisdiction        string
	Decision                        string
	Region, Rule, Lang, Reason      string
	Proxy                           string
}

// values returns f's values in [Order].
func (f *Fields) values() [19]string {
	return [...]string{
		f.Client, f.Via, f.Peer, f.Server, f.Conn,
		f.Country, f.City, f.Lat, f.Lon, f.ASN, f.Class, f.Geo,
		f.Jurisdiction, f.Decision, f.Region, f.Rule, f.Lang, f.Reason,
		f.Proxy,
	}
}

// AppendLine appends f in the line form (see [Report.Line]), without a
// trailing newline, to dst and returns the extended buffer.
func (f *Fields) AppendLine(dst []byte) []byte {
	start := len(dst)
	// Required: client, via, peer, server, conn and decision (see required).
	dst = appendPair(dst, start, KeyClient, f.Client, true)
	dst = appendPair(dst, start, KeyVia, f.Via, true)
	dst = appendPair(dst, start, KeyPeer, f.Peer, true)
	dst = appendPair(dst, start, KeyServer, f.Server, true)
	dst = appendPair(dst, start, KeyConn, f.Conn, true)
	dst = appendPair(dst, start, KeyCountry, f.Country, false)
	dst = appendPair(dst, start, KeyCity, f.City, false)
	dst = appendPair(dst, start, KeyLat, f.Lat, false)
	dst = appendPair(dst, start, KeyLon, f.Lon, false)
	dst = appendPair(dst, start, KeyASN, f.ASN, false)
	dst = appendPair(dst, start, KeyClass, f.Class, false)
	dst = appendPair(dst, start, KeyGeo, f.Geo, false)
	dst = appendPair(dst, start, KeyJurisdiction, f.Jurisdiction, false)
	dst = appendPair(dst, start, KeyDecision, f.Decision, true)
	dst = appendPair(dst, start, KeyRegion, f.Region, false)
	dst = appendPair(dst, start, KeyRule, f.Rule, false)
	dst = appendPair(dst, start, KeyLang, f.Lang, false)
	dst = appendPair(dst, start, KeyReason, f.Reason, false)
	dst = appendPair(dst, start, KeyProxy, f.Proxy, false)
	return dst
}

// Report returns f as a [Report] holding its non-empty values and the
// required keys.
func (f *Fields) Report() Report {
	vals := f.values()
	r := make(Report, len(vals))
	for i, v := range vals {
		if v != "" || required[Order[i]] {
			r[Order[i]] = v
		}
	}
	return r
}

// appendPair appends key=value, preceded by a space unless it is the first
// pair since start; an empty value is skipped unless req.
func appendPair(dst []byte, start int, key, v string, req bool) []byte {
	if v == "" && !req {
		return dst
	}
	if len(dst) > start {
		dst = append(dst, ' ')
	}
	dst = append(dst, key...)
	dst = append(dst, '=')
	if needsQuote(v) {
		return strconv.AppendQuote(dst, v)
	}
	return append(dst, v...)
}
