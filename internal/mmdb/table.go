package mmdb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// MaxTableBytes bounds the input [ParseTable] accepts.
const MaxTableBytes = 16 << 20

// Columns lists the columns of a table, in order.
var Columns = []string{
	"prefix", "country_iso", "country_name", "continent", "region_iso", "region_name",
	"city", "lat", "lon", "accuracy_km", "time_zone", "asn", "as_org",
}

// Table is the content of a text table: the rows that carry geography
// (for [WriteCity] / [WriteCountry]) and those that carry an AS number (for
// [WriteASN]). One row may contribute to both.
type Table struct {
	City []Entry
	ASN  []ASNEntry
}

// ParseTable reads a text table of networks. The format:
//
//   - one network per line, fields separated by TAB characters, in the order
//     of [Columns]: prefix, country_iso, country_name, continent, region_iso,
//     region_name, city, lat, lon, accuracy_km, time_zone, asn, as_org;
//   - surrounding spaces of a field are ignored; an empty field means
//     unknown; trailing fields may be omitted;
//   - blank lines and lines starting with '#' are ignored;
//   - prefix is required and must be a masked CIDR (203.0.113.0/24,
//     2001:db8:1::/48); a row needs at least one other field;
//   - a row with any of country_iso .. time_zone becomes an [Entry]; a row
//     with asn (decimal, > 0) becomes an [ASNEntry] with as_org.
//
// Example (TABs shown as spaces):
//
//	# prefix        cc  country  cont region_iso region   city    lat      lon     acc tz             asn    as_org
//	203.0.113.0/24  DE  Germany  EU   BE         Berlin   Berlin  52.5200  13.4050 20  Europe/Berlin  64500  Example Carrier GmbH
//
// Errors name the line: "mmdb: table line 3: ...". Input larger than
// [MaxTableBytes] is refused. Consistency between rows (duplicate prefixes)
// is checked when the database is written.
func ParseTable(r io.Reader) (Table, error) {
	var t Table
	lr := &io.LimitedReader{R: r, N: MaxTableBytes + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(strings.TrimSpace(text), "#") {
			continue
		}
		e, a, err := parseRow(text)
		if err != nil {
			if lr.N <= 0 { // the row was cut by the size limit
				return Table{}, fmt.Errorf("mmdb: table larger than %d bytes", MaxTableBytes)
			}
			return Table{}, fmt.Errorf("mmdb: table line %d: %w", line, err)
		}
		if e != nil {
			t.City = append(t.City, *e)
		}
		if a != nil {
			t.ASN = append(t.ASN, *a)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Table{}, fmt.Errorf("mmdb: table line %d: line longer than 64 KiB", line+1)
		}
		return Table{}, fmt.Errorf("mmdb: reading table: %w", err)
	}
	if lr.N <= 0 {
		return Table{}, fmt.Errorf("mmdb: table larger than %d bytes", MaxTableBytes)
	}
	return t, nil
}

func parseRow(text string) (*Entry, *ASNEntry, error) {
	f := strings.Split(text, "\t")
	if len(f) > len(Columns) {
		return nil, nil, fmt.Errorf("%d fields, want at most %d (%s)", len(f), len(Columns), strings.Join(Columns, " "))
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	f = append(f, make([]string, len(Columns)-len(f))...)
	p, err := netip.ParsePrefix(f[0])
	if err != nil {
		return nil, nil, fmt.Errorf("prefix: %w", err)
	}
	if p != p.Masked() {
		return nil, nil, fmt.Errorf("prefix %v has host bits set (the network is %v)", p, p.Masked())
	}
	e := Entry{
		Prefix:        p,
		CountryISO:    f[1],
		CountryName:   f[2],
		ContinentCode: f[3],
		RegionISO:     f[4],
		RegionName:    f[5],
		City:          f[6],
		TimeZone:      f[10],
	}
	if e.Lat, err = parseFloat("lat", f[7]); err != nil {
		return nil, nil, err
	}
	if e.Lon, err = parseFloat("lon", f[8]); err != nil {
		return nil, nil, err
	}
	if f[9] != "" {
		n, err := strconv.ParseUint(f[9], 10, 16)
		if err != nil {
			return nil, nil, fmt.Errorf("accuracy_km %q: want 0..65535", f[9])
		}
		e.AccuracyRadius = uint16(n)
	}
	if err := e.check(); err != nil {
		return nil, nil, err
	}
	var out *Entry
	for _, v := range f[1:11] {
		if v != "" {
			out = &e
			break
		}
	}
	var a *ASNEntry
	if f[11] != "" {
		n, err := strconv.ParseUint(f[11], 10, 32)
		if err != nil || n == 0 {
			return nil, nil, fmt.Errorf("asn %q: want 1..4294967295", f[11])
		}
		a = &ASNEntry{Prefix: p, Number: uint32(n), Org: f[12]}
	} else if f[12] != "" {
		return nil, nil, errors.New("as_org without asn")
	}
	if out == nil && a == nil {
		return nil, nil, errors.New("a prefix with no data")
	}
	return out, a, nil
}

func parseFloat(name, s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s %q: not a number", name, s)
	}
	return v, nil
}
