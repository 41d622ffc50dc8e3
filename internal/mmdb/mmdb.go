// Package mmdb builds small MaxMind DB files from a table of networks, for
// tests and the local demo. It writes the GeoIP2-City, GeoIP2-Country and
// GeoLite2-ASN schemas with github.com/maxmind/mmdbwriter, so any reader of
// those databases (geoip2-golang, libmaxminddb's mmdblookup, nginx's
// geoip2 module) reads the result as it would read MaxMind's own files.
//
// The databases are built with reserved networks allowed: the documentation
// ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32),
// RFC 1918 space and loopback may all be mapped to countries, which is how
// tests and the demo simulate clients from several countries on one machine.
// IPv4 aliasing stays on (as in MaxMind's databases), so an IPv4 network is
// also found under its IPv4-mapped (::ffff:a.b.c.d) and 6to4 forms.
//
// Entries may overlap: the more specific prefix wins whatever the order of
// the entries. Two entries for exactly the same prefix are an error.
//
// A text table format for hand-written data is read by [ParseTable]; see
// its documentation for the columns.
//
// Building is not safe for concurrent use of the same slice with writers, but
// every function here is otherwise free of shared state.
package mmdb

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Database types written into the metadata. Readers such as geoip2-golang
// choose their schema from these.
const (
	TypeCity    = "GeoIP2-City"
	TypeCountry = "GeoIP2-Country"
	TypeASN     = "GeoLite2-ASN"
)

// Entry is one network of a City or Country database. Empty strings and
// zero numbers are left out of the record, as MaxMind leaves out what it
// does not know.
type Entry struct {
	Prefix        netip.Prefix // the network; must be masked (no host bits)
	CountryISO    string       // ISO 3166-1 alpha-2, upper case, e.g. "DE"
	CountryName   string       // English name, e.g. "Germany"
	ContinentCode string       // AF, AN, AS, EU, NA, OC or SA; its English name is filled in
	RegionISO     string       // first subdivision's ISO 3166-2 code without the country, e.g. "BE"
	RegionName    string       // first subdivision's English name, e.g. "Berlin"
	City          string       // English city name
	// Lat and Lon are written as the location when either is non-zero
	// (0, 0 is taken to mean "unknown").
	Lat, Lon       float64
	AccuracyRadius uint16 // kilometres; 0 leaves it out
	TimeZone       string // IANA name, e.g. "Europe/Berlin"
	// Raw is merged over the record as written, unchecked: a key whose
	// value is a map in both is merged one level down (so
	// Raw{"location": Map{"latitude": String("x")}} replaces only the
	// latitude), any other key is replaced. It writes what a checked
	// Entry cannot: a wrong-typed field, a NaN or infinite coordinate,
	// an oversized name, for tests of what readers make of broken
	// records.
	Raw mmdbtype.Map
}

// ASNEntry is one network of an ASN database.
type ASNEntry struct {
	Prefix netip.Prefix // the network; must be masked (no host bits)
	Number uint32       // autonomous system number, > 0
	Org    string       // autonomous system organisation
}

// continentNames are the English names MaxMind uses for continent codes.
var continentNames = map[string]string{
	"AF": "Africa",
	"AN": "Antarctica",
	"AS": "Asia",
	"EU": "Europe",
	"NA": "North America",
	"OC": "Oceania",
	"SA": "South America",
}

// WriteCity writes a GeoIP2-City database holding entries to w. buildTime
// becomes the metadata build epoch (the zero time means now).
func WriteCity(w io.Writer, entries []Entry, buildTime time.Time) error {
	return writeGeo(w, entries, buildTime, TypeCity)
}

// WriteCountry writes a GeoIP2-Country database holding entries to w: the
// continent and country of each entry; region, city and location are not
// part of that schema and are dropped.
func WriteCountry(w io.Writer, entries []Entry, buildTime time.Time) error {
	return writeGeo(w, entries, buildTime, TypeCountry)
}

// WriteASN writes a GeoLite2-ASN database holding entries to w.
func WriteASN(w io.Writer, entries []ASNEntry, buildTime time.Time) error {
	tree, err := newTree(TypeASN, buildTime)
	if err != nil {
		return err
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b ASNEntry) int { return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()) })
	seen := make(map[netip.Prefix]bool, len(sorted))
	for _, e := range sorted {
		p, err := checkPrefix(e.Prefix, seen)
		if err != nil {
			return fmt.Errorf("mmdb: asn entry %v: %w", e.Prefix, err)
		}
		if e.Number == 0 {
			return fmt.Errorf("mmdb: asn entry %v: AS number 0", e.Prefix)
		}
		rec := mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(e.Number)}
		if e.Org != "" {
			rec["autonomous_system_organization"] = mmdbtype.String(e.Org)
		}
		if err := tree.Insert(ipNet(p), rec); err != nil {
			return fmt.Errorf("mmdb: inserting %v: %w", p, err)
		}
	}
	return writeTree(w, tree)
}

// WriteCityFile writes a GeoIP2-City database to path atomically: it writes
// a temporary file in the same directory and renames it over path, as
// geoipupdate does, so a reader watching path never sees a partial file.
func WriteCityFile(path string, entries []Entry, buildTime time.Time) error {
	return writeFile(path, func(w io.Writer) error { return WriteCity(w, entries, buildTime) })
}

// WriteCountryFile is [WriteCountry] into path, atomically like [WriteCityFile].
func WriteCountryFile(path string, entries []Entry, buildTime time.Time) error {
	return writeFile(path, func(w io.Writer) error { return WriteCountry(w, entries, buildTime) })
}

// WriteASNFile is [WriteASN] into path, atomically like [WriteCityFile].
func WriteASNFile(path string, entries []ASNEntry, buildTime time.Time) error {
	return writeFile(path, func(w io.Writer) error { return WriteASN(w, entries, buildTime) })
}

func writeGeo(w io.Writer, entries []Entry, buildTime time.Time, dbType string) error {
	tree, err := newTree(dbType, buildTime)
	if err != nil {
		return err
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int { return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()) })
	seen := make(map[netip.Prefix]bool, len(sorted))
	for _, e := range sorted {
		p, err := checkPrefix(e.Prefix, seen)
		if err != nil {
			return fmt.Errorf("mmdb: entry %v: %w", e.Prefix, err)
		}
		if err := e.check(); err != nil {
			return fmt.Errorf("mmdb: entry %v: %w", e.Prefix, err)
		}
		if err := tree.Insert(ipNet(p), e.record(dbType == TypeCity)); err != nil {
			return fmt.Errorf("mmdb: inserting %v: %w", p, err)
		}
	}
	return writeTree(w, tree)
}

func newTree(dbType string, buildTime time.Time) (*mmdbwriter.Tree, error) {
	if buildTime.IsZero() {
		buildTime = time.Now()
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		BuildEpoch:              buildTime.Unix(),
		Description:             map[string]string{"en": "originlens " + dbType + " database built by internal/mmdb"},
		Languages:               []string{"en"},
		IncludeReservedNetworks: true,
		RecordSize:              28,
	})
	if err != nil {
		return nil, fmt.Errorf("mmdb: new tree: %w", err)
	}
	return tree, nil
}

func writeTree(w io.Writer, tree *mmdbwriter.Tree) error {
	if _, err := tree.WriteTo(w); err != nil {
		return fmt.Errorf("mmdb: writing database: %w", err)
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("mmdb: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("mmdb: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mmdb: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("mmdb: %w", err)
	}
	return nil
}

// checkPrefix validates p, returns it in the form to insert (IPv4-mapped
// IPv6 prefixes become IPv4) and records it in seen to catch duplicates.
func checkPrefix(p netip.Prefix, seen map[netip.Prefix]bool) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, errors.New("invalid prefix")
	}
	if p != p.Masked() {
		return p, fmt.Errorf("prefix has host bits set (the network is %v)", p.Masked())
	}
	if a := p.Addr(); a.Is4In6() { // masked, so Bits() >= 96
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if seen[p] {
		return p, errors.New("duplicate prefix")
	}
	seen[p] = true
	return p, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 128
	if p.Addr().Is4() {
		bits = 32
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

func (e Entry) check() error {
	if e.CountryISO != "" && !isUpperAlpha(e.CountryISO, 2) {
		return fmt.Errorf("country code %q is not two upper-case letters", e.CountryISO)
	}
	if e.ContinentCode != "" {
		if _, ok := continentNames[e.ContinentCode]; !ok {
			return fmt.Errorf("unknown continent code %q (want one of AF AN AS EU NA OC SA)", e.ContinentCode)
		}
	}
	if e.Lat < -90 || e.Lat > 90 {
		return fmt.Errorf("latitude %v out of range [-90, 90]", e.Lat)
	}
	if e.Lon < -180 || e.Lon > 180 {
		return fmt.Errorf("longitude %v out of range [-180, 180]", e.Lon)
	}
	if e.RegionName != "" && e.RegionISO == "" {
		return errors.New("region name without region ISO code")
	}
	return nil
}

func isUpperAlpha(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func names(en string) mmdbtype.Map {
	return mmdbtype.Map{"en": mmdbtype.String(en)}
}

// record is the GeoIP2-City (full) or GeoIP2-Country (city false) record
// of e.
func (e Entry) record(city bool) mmdbtype.Map {
	rec := mmdbtype.Map{}
	if e.ContinentCode != "" {
		rec["continent"] = mmdbtype.Map{
			"code":  mmdbtype.String(e.ContinentCode),
			"names": names(continentNames[e.ContinentCode]),
		}
	}
	if e.CountryISO != "" || e.CountryName != "" {
		c := mmdbtype.Map{}
		if e.CountryISO != "" {
			c["iso_code"] = mmdbtype.String(e.CountryISO)
		}
		if e.CountryName != "" {
			c["names"] = names(e.CountryName)
		}
		rec["country"] = c
		rec["registered_country"] = c.Copy()
	}
	if !city {
		return e.merge(rec)
	}
	if e.RegionISO != "" {
		s := mmdbtype.Map{"iso_code": mmdbtype.String(e.RegionISO)}
		if e.RegionName != "" {
			s["names"] = names(e.RegionName)
		}
		rec["subdivisions"] = mmdbtype.Slice{s}
	}
	if e.City != "" {
		rec["city"] = mmdbtype.Map{"names": names(e.City)}
	}
	loc := mmdbtype.Map{}
	if e.Lat != 0 || e.Lon != 0 {
		loc["latitude"] = mmdbtype.Float64(e.Lat)
		loc["longitude"] = mmdbtype.Float64(e.Lon)
	}
	if e.AccuracyRadius != 0 {
		loc["accuracy_radius"] = mmdbtype.Uint16(e.AccuracyRadius)
	}
	if e.TimeZone != "" {
		loc["time_zone"] = mmdbtype.String(e.TimeZone)
	}
	if len(loc) > 0 {
		rec["location"] = loc
	}
	return e.merge(rec)
}

// merge merges e.Raw over rec (see [Entry.Raw]) and returns rec.
func (e Entry) merge(rec mmdbtype.Map) mmdbtype.Map {
	for k, v := range e.Raw {
		if rm, ok := v.(mmdbtype.Map); ok {
			if m, ok := rec[k].(mmdbtype.Map); ok {
				for mk, mv := range rm {
					m[mk] = mv
				}
				continue
			}
		}
		rec[k] = v
	}
	return rec
}
